"""``emoflow split``: train/val/test manifests and k folds, subject-independent by default.

Participants, not clips, are assigned to sets: a face seen in training must not be tested on.
Among many seeded random assignments with the right number of participants per set, the one
whose sets' label distributions are closest to the whole's wins (stratified as far as the
participants allow). The thesis's clip-level random split is available and warns that
identities then leak across sets.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from emoflow.config import SplitParams
from emoflow.errors import InputError
from emoflow.fsio import atomic_dir, atomic_path
from emoflow.guards import check_outputs, params_inputs
from emoflow.layout import fold_dir
from emoflow.tables import read_table, write_table

log = logging.getLogger(__name__)

SETS = ("train", "val", "test")
MANIFEST_COLUMNS = ("trial_id", "participant", "label", "file", "frames")
TRIES = 2000


def read_faces_table(path: Path) -> list[dict[str, str]]:
    """The usable clips of ``faces.csv`` (excluded clips dropped)."""
    needed = ("trial_id", "participant", "label", "file", "selected", "excluded")
    absent = "no faces table: run `emoflow faces` (or `emoflow import`) first"
    rows = [r for r in read_table(path, needed, absent) if not r["excluded"] and r["file"]]
    for r in rows:  # the manifests carry frame counts: datasets need not open every file
        r["frames"] = len(r["selected"].split())
    return rows


def _label_gap(groups: list[list[dict[str, str]]], labels: list[str], overall: np.ndarray
               ) -> float:  # fmt: skip
    """How far the groups' label distributions are from the whole's (L1, summed)."""
    gap = 0.0
    for g in groups:
        c = Counter(r["label"] for r in g)
        dist = np.array([c[lab] for lab in labels], float)
        gap += np.abs(dist / max(dist.sum(), 1) - overall).sum() if g else 2.0
    return gap


def _by_participant(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        out.setdefault(r["participant"], []).append(r)
    return out


def _best_partition(people: list[str], sizes: list[int], clips: dict[str, list[dict[str, str]]],
                    labels: list[str], overall: np.ndarray, rng: np.random.Generator
                    ) -> list[list[str]]:  # fmt: skip
    """Participants into groups of the given sizes, label distributions closest to overall."""
    best, best_gap = None, np.inf
    bounds = np.cumsum([0, *sizes])
    for _ in range(TRIES):
        perm = list(rng.permutation(people))
        groups = [perm[bounds[i] : bounds[i + 1]] for i in range(len(sizes))]
        gap = _label_gap([[r for p in g for r in clips[p]] for g in groups], labels, overall)
        if gap < best_gap - 1e-12:
            best, best_gap = groups, gap
    assert best is not None
    return [sorted(g) for g in best]


def subject_split(rows: list[dict[str, str]], params: SplitParams) -> dict[str, list[dict]]:
    """Train/val/test by participant."""
    clips = _by_participant(rows)
    people = sorted(clips)
    n = len(people)
    n_test = max(1, round(params.test * n)) if params.test > 0 else 0
    n_val = max(1, round(params.val * n)) if params.val > 0 else 0
    n_train = n - n_test - n_val
    if n_train < 1:
        shares = f"{params.train}/{params.val}/{params.test}"
        raise InputError("faces.csv", f"{n} participants cannot fill train/val/test ({shares}) "
                         "subject-independently")  # fmt: skip
    labels = sorted({r["label"] for r in rows})
    overall = np.array([sum(r["label"] == lab for r in rows) for lab in labels], float)
    overall /= overall.sum()
    groups = _best_partition(people, [n_train, n_val, n_test], clips, labels, overall,
                             np.random.default_rng(params.seed))  # fmt: skip
    return {s: [r for p in g for r in clips[p]] for s, g in zip(SETS, groups, strict=True)}


def clip_split(rows: list[dict[str, str]], params: SplitParams) -> dict[str, list[dict]]:
    """The thesis's split: clips at random, stratified by label; identities leak."""
    rng = np.random.default_rng(params.seed)
    out: dict[str, list[dict]] = {s: [] for s in SETS}
    for lab in sorted({r["label"] for r in rows}):
        group = [r for r in rows if r["label"] == lab]
        idx = rng.permutation(len(group))
        n_test, n_val = round(params.test * len(group)), round(params.val * len(group))
        for k, i in enumerate(idx):
            s = "test" if k < n_test else "val" if k < n_test + n_val else "train"
            out[s].append(group[i])
    return out


def subject_folds(rows: list[dict[str, str]], k: int, seed: int) -> list[list[dict]]:
    """k groups of participants of (near) equal size, label-balanced."""
    clips = _by_participant(rows)
    people = sorted(clips)
    if k > len(people):
        raise InputError("faces.csv", f"{k} folds need at least {k} participants, found "
                         f"{len(people)}")  # fmt: skip
    sizes = [len(people) // k + (1 if i < len(people) % k else 0) for i in range(k)]
    labels = sorted({r["label"] for r in rows})
    overall = np.array([sum(r["label"] == lab for r in rows) for lab in labels], float)
    overall /= overall.sum()
    groups = _best_partition(people, sizes, clips, labels, overall, np.random.default_rng(seed))
    return [[r for p in g for r in clips[p]] for g in groups]


def clip_folds(rows: list[dict[str, str]], k: int, seed: int) -> list[list[dict]]:
    rng = np.random.default_rng(seed)
    folds: list[list[dict]] = [[] for _ in range(k)]
    for lab in sorted({r["label"] for r in rows}):
        group = [r for r in rows if r["label"] == lab]
        for j, i in enumerate(rng.permutation(len(group))):
            folds[j % k].append(group[i])
    return folds


def _train_val(rows: list[dict], params: SplitParams) -> dict[str, list[dict]]:
    """Participants of ``rows`` into train and val (by the val share of train + val)."""
    if params.mode == "clip":
        sub = clip_split(rows, params.model_copy(update={"test": 0.0}))
        return {"train": sub["train"], "val": sub["val"]}
    people = sorted({r["participant"] for r in rows})
    share = params.val / max(params.train + params.val, 1e-9)
    n_val = max(1, round(share * len(people))) if params.val > 0 else 0
    if len(people) - n_val < 1:
        raise InputError("faces.csv", f"a fold leaves {len(people)} participants for train and "
                         "val: use fewer folds")  # fmt: skip
    chosen = set(np.random.default_rng(params.seed).permutation(people)[:n_val])
    return {"train": [r for r in rows if r["participant"] not in chosen],
            "val": [r for r in rows if r["participant"] in chosen]}  # fmt: skip


def _write_manifest(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table(path, MANIFEST_COLUMNS, sorted(rows, key=lambda r: r["trial_id"]))


def _describe(sets: dict[str, list[dict]]) -> dict:
    return {s: {"clips": len(v), "participants": sorted({r["participant"] for r in v}),
                "labels": dict(sorted(Counter(r["label"] for r in v).items()))}
            for s, v in sets.items()}  # fmt: skip


def plan_splits(rows: list[dict], params: SplitParams
                ) -> tuple[dict[str, list[dict]], list[dict[str, list[dict]]]]:  # fmt: skip
    """The train/val/test sets and (``params.folds`` ≥ 2) each fold's sets; writes nothing.

    An InputError when the participants cannot fill them: ``emoflow import`` calls it on the
    clips it found, before any face work.
    """
    sets = clip_split(rows, params) if params.mode == "clip" else subject_split(rows, params)
    folds: list[dict[str, list[dict]]] = []
    if params.folds >= 2:
        groups = (subject_folds(rows, params.folds, params.seed) if params.mode == "subject"
                  else clip_folds(rows, params.folds, params.seed))  # fmt: skip
        for i in range(params.folds):
            rest = [r for j, g in enumerate(groups) if j != i for r in g]
            folds.append({**_train_val(rest, params), "test": groups[i]})
    return sets, folds


Sets = dict[str, list[dict]]
Plan = Callable[[list[dict], SplitParams], tuple[Sets, list[Sets]]]


def make_splits(faces_csv: Path, out_dir: Path, params: SplitParams, plan: Plan | None = None
                ) -> None:  # fmt: skip
    """Write ``train/val/test.csv`` (+ ``folds/fold_<i>/``) and ``summary.json``, atomically.

    Fold ``i`` tests on group ``i``; of the other participants, a ``val / (train + val)`` share
    (at least one) validates and the rest trains. ``plan`` replaces :func:`plan_splits` where
    the sets come from elsewhere (a dataset's own folds, ``emoflow import --folds-from``).
    """
    check_outputs({"faces": faces_csv, **params_inputs(params)}, {"out": out_dir})
    rows = read_faces_table(faces_csv)
    if not rows:
        raise InputError(faces_csv, "no usable clips (all excluded?)")
    if params.mode == "clip":
        log.warning("split: clip-level random split: the same participants appear in train, val "
                    "and test, so results overstate performance on new people")  # fmt: skip
    sets, folds = (plan or plan_splits)(rows, params)
    summary: dict = {"mode": params.mode, "seed": params.seed, "sets": _describe(sets)}
    with atomic_dir(out_dir) as tmp:
        for s, v in sets.items():
            _write_manifest(tmp / f"{s}.csv", v)
        if folds:
            summary["folds"] = []
            for i, fold in enumerate(folds):
                for s, v in fold.items():
                    _write_manifest(fold_dir(tmp, i) / f"{s}.csv", v)
                summary["folds"].append(_describe(fold))
        with atomic_path(tmp / "summary.json") as t:
            t.write_text(json.dumps(summary, indent=1))
    desc = summary["sets"]
    log.info("split (%s): train %d clips / %d participants, val %d / %d, test %d / %d%s; "
             "wrote %s", params.mode,
             *(x for s in SETS for x in (desc[s]["clips"], len(desc[s]["participants"]))),
             f", {len(folds)} folds" if folds else "", out_dir)  # fmt: skip
