"""The linear probe: the floor FAN's heads must beat on the features they attend over.

Issue 19's rule: a clip model trained on frozen features that does not beat a logistic
regression on the same features is not done. ``emoflow probe`` measures that floor with the
features FAN's params name (``train.fan``: backbone, image size, ``features``), read from the same
cache training fills (``training/features.py``), on the same split or the same folds:

- every stored frame of a train clip is a sample, and its mirror image too when training flips
  (``train.fan.augment.flip`` > 0); features standardised on train;
- a multinomial logistic regression per frame; a clip's probabilities are its frames' mean;
- the inverse regularisation ``C`` is chosen on val by ``train.select_on`` (ties: the stronger
  regularisation), as training chooses its epoch; test is read once, at the end.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emoflow.config import Params
from emoflow.datasets.clips import ClipRef, read_manifest
from emoflow.errors import InputError
from emoflow.training.features import CachedFeatures, JoinedFeatures
from emoflow.training.metrics import classification_report, summarise_folds
from emoflow.training.tasks import FanTask
from emoflow.training.trainer import load_data

log = logging.getLogger(__name__)

C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)  # ascending: the first best is the most regularised
MAX_ITER = 5000


@dataclass
class Frames:
    """Per-frame features ``x`` (N, d), their clip's label ``y`` and clip index ``clip``."""

    x: np.ndarray
    y: np.ndarray
    clip: np.ndarray


def fan_features(params: Params, source: Path = Path("params.yaml")
                 ) -> CachedFeatures | JoinedFeatures:  # fmt: skip
    """The cached features FAN's params (read from ``source``) train on; refuses a trainable
    backbone (no fixed features to probe)."""
    task = FanTask(params.train.fan, params.train.seed)
    if not task.cfg.cached_features:
        raise InputError(source, "train.fan has no frozen features to probe (backbone "
                         f"{task.cfg.backbone}, backbone_lr_scale {task.cfg.backbone_lr_scale}, "
                         f"features {task.cfg.features})", "train.fan")  # fmt: skip
    with torch.random.fork_rng(devices=[]):  # building the unused heads draws their init
        model = task.build(len(params.classes) or 7)
    task.prepare(model, torch.device("cpu"))
    assert task.features is not None
    return task.features


def frames_of(refs: list[ClipRef], features: CachedFeatures | JoinedFeatures,
              mirrors: bool) -> Frames:  # fmt: skip
    xs, ys, clips = [], [], []
    for i, ref in enumerate(refs):
        f = features.get(ref.path).numpy()  # (T, 2, d): each frame and its mirror
        views = f.reshape(-1, f.shape[-1]) if mirrors else f[:, 0]
        xs.append(views)
        ys.append(np.full(len(views), ref.label))
        clips.append(np.full(len(views), i))
    return Frames(np.concatenate(xs), np.concatenate(ys), np.concatenate(clips))


def clip_probabilities(model: Any, frames: Frames, n_clips: int, n_classes: int) -> np.ndarray:
    """Each clip's mean frame probabilities over all ``n_classes`` (a class absent from train
    gets 0)."""
    per_frame = np.zeros((len(frames.x), n_classes))
    per_frame[:, model.classes_] = model.predict_proba(frames.x)
    sums = np.zeros((n_clips, n_classes))
    np.add.at(sums, frames.clip, per_frame)
    return sums / np.bincount(frames.clip, minlength=n_clips)[:, None]


Features = CachedFeatures | JoinedFeatures


def probe_split(params: Params, faces_dir: Path, split_dir: Path,
                features: Features | None = None) -> dict[str, Any]:  # fmt: skip
    """Fit on ``split_dir``'s train clips, choose C on val, report on test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    features = features or fan_features(params)
    data = load_data(params.classes, faces_dir, split_dir)
    test = read_manifest(split_dir / "test.csv", faces_dir, data.classes)
    if not test:
        raise InputError(split_dir / "test.csv", "no test clips: nothing to probe")
    k = len(data.classes)
    train = frames_of(data.train, features, mirrors=params.train.fan.augment.flip > 0)
    val = frames_of(data.val, features, mirrors=False)
    held = frames_of(test, features, mirrors=False)
    scaler = StandardScaler().fit(train.x)
    for part in (train, val, held):
        part.x = scaler.transform(part.x)
    metric = params.train.select_on.removeprefix("val_")
    chosen, best, by_c = None, -1.0, {}
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=MAX_ITER).fit(train.x, train.y)
        pred = clip_probabilities(model, val, len(data.val), k).argmax(1)
        score = classification_report([r.label for r in data.val], pred, data.classes)[metric]
        by_c[str(c)] = score
        if score > best:
            chosen, best = model, score
    assert chosen is not None
    pred = clip_probabilities(chosen, held, len(test), k).argmax(1)
    report = classification_report([r.label for r in test], pred, data.classes)
    return {"test": report, "C": float(chosen.C), f"val_{metric}": best, f"val_{metric}_by_C": by_c,
            "train_frames": len(train.x), "feature_dim": int(train.x.shape[1]),
            "features": features.dir.name if isinstance(features, CachedFeatures) else
            [p.dir.name for p in features.parts],
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def probe_folds(params: Params, faces_dir: Path, fold_dirs: list[Path],
                features: Features | None = None) -> dict[str, Any]:  # fmt: skip
    """:func:`probe_split` on each fold; mean ± std as ``emoflow crossval`` reports it."""
    features = features or fan_features(params)  # one cache: each file's features once
    folds = []
    for i, d in enumerate(fold_dirs):
        folds.append(probe_split(params, faces_dir, d, features))
        t = folds[-1]["test"]
        log.info("probe: fold %d: test WAR %.3f UAR %.3f (C %g)", i, t["war"], t["uar"],
                 folds[-1]["C"])  # fmt: skip
    return {**summarise_folds([f["test"] for f in folds]), "per_fold": folds}
