"""``emoflow predict`` on the real sample generator's trial clips: three participants at full
size, and clips cut from them (shorter, downscaled to 320×240, two trials joined at 25 fps),
through a tiny FAN model exported to ONNX, on the torch and the ONNX Runtime backend."""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from emoflow.artifact import MODEL_FILE, load_state
from emoflow.config import load_params
from emoflow.media.video import MediaWriter, iter_frames
from emoflow.release.export import export_model
from emoflow.training.trainer import train_model

pytestmark = pytest.mark.slow  # two predict processes over six clips: faces on ~1100 frames


@dataclass(frozen=True)
class Clip:
    path: Path
    frames: int
    fps: float
    width: int
    height: int


@pytest.fixture(scope="module")
def fan_dir(tiny_faces: Path, tiny_params: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Path:  # fmt: skip
    """FAN trained on the tiny faces and exported (export checks parity with PyTorch)."""
    out = tmp_path_factory.mktemp("predict_sample") / "fan"
    faces, splits = tiny_faces / "faces", tiny_faces / "splits"
    train_model("fan", load_params(tiny_params), faces, splits, out)
    export_model(out, faces, splits)
    return out


def _write(path: Path, bgr: Iterable[np.ndarray], fps: int, size: tuple[int, int] | None = None
           ) -> int:  # fmt: skip
    """Encode frames with the project's writer (resized to ``size`` = (w, h) if given)."""
    frames = [f if size is None else cv2.resize(f, size, interpolation=cv2.INTER_AREA)
              for f in bgr]  # fmt: skip
    h, w = frames[0].shape[:2]
    with MediaWriter(path, fps, w, h) as mw:
        for f in frames:
            mw.write_frame(f)
    return len(frames)


@pytest.fixture(scope="module")
def clips(small_trials: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    """Each participant's first trial as segmented, plus a 1.5 s cut of p001's, p002's at
    320×240, and p003's first two trials joined at 25 fps (14.4 s)."""
    with (small_trials / "trials.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    parts = sorted({r["participant"] for r in rows})
    assert len(parts) == 3
    out: dict[str, Clip] = {}
    for r in rows:
        if r["participant"] not in out:  # each participant's first trial
            out[r["participant"]] = Clip(small_trials / f"{r['trial_id']}.mp4",
                                         int(r["frames"]), float(r["fps"]),
                                         int(r["width"]), int(r["height"]))  # fmt: skip
    p1, p2, p3 = (out[p] for p in parts)
    second = next(small_trials / f"{r['trial_id']}.mp4" for r in rows
                  if r["participant"] == parts[2] and r["trial_id"] != p3.path.stem)  # fmt: skip
    tmp = tmp_path_factory.mktemp("derived")
    n = _write(tmp / "short.mp4", itertools.islice(iter_frames(p1.path), 40, 85), 30)
    out["short"] = Clip(tmp / "short.mp4", n, 30.0, p1.width, p1.height)
    n = _write(tmp / "small.mp4", iter_frames(p2.path), 30, (320, 240))
    out["small"] = Clip(tmp / "small.mp4", n, 30.0, 320, 240)
    n = _write(tmp / "long.mp4", itertools.chain(iter_frames(p3.path), iter_frames(second)), 25)
    out["long"] = Clip(tmp / "long.mp4", n, 25.0, p3.width, p3.height)
    assert out["short"].frames == 45 and out["small"].frames == p2.frames
    assert out["long"].frames == 2 * p3.frames
    return out


def _predict_both(model: Path, files: list[Path], tmp: Path) -> dict[str, list[dict]]:
    """``emoflow predict --json`` on the torch and the onnx backend, both processes at once
    (their output goes to files: a full pipe would stall one while the other is read)."""
    procs = {}
    for b in ("torch", "onnx"):
        with (tmp / f"{b}.out").open("w") as out, (tmp / f"{b}.err").open("w") as err:
            procs[b] = subprocess.Popen([sys.executable, "-m", "emoflow.cli", "predict",
                                         *map(str, files), "--model-dir", str(model),
                                         "--backend", b, "--json"],
                                        stdout=out, stderr=err)  # fmt: skip
    out = {}
    for b, p in procs.items():
        assert p.wait(timeout=900) == 0, (tmp / f"{b}.err").read_text()[-2000:]
        out[b] = [json.loads(line) for line in (tmp / f"{b}.out").read_text().splitlines()]
        assert [r["file"] for r in out[b]] == [str(f) for f in files]
    return out


def test_predict_on_generated_clips(fan_dir: Path, clips: dict[str, Clip], tmp_path: Path
                                    ) -> None:  # fmt: skip
    meta = load_state(fan_dir / MODEL_FILE)
    classes, per_clip = meta["classes"], meta["preprocessing"]["frames"]
    names = list(clips)
    results = _predict_both(fan_dir, [c.path for c in clips.values()], tmp_path)
    for backend, rows in results.items():
        for name, r in zip(names, rows, strict=True):
            c, what = clips[name], (backend, name)
            assert r["model"]["backend"] == backend
            assert r["label"] in classes and set(r["probabilities"]) == set(classes), what
            assert abs(sum(r["probabilities"].values()) - 1) < 1e-5, what
            assert r["confidence"] == max(r["probabilities"].values()), what
            assert r["frames_decoded"] == c.frames and 0 < r["faces_found"] <= c.frames, what
            indices = [f["index"] for f in r["frames"]]
            assert indices == sorted(set(indices)), what
            assert 0 <= indices[0] and indices[-1] < c.frames, what  # noqa: SIM300
            assert len(indices) == min(per_clip, r["faces_found"]), what
            assert abs(sum(f["weight"] for f in r["frames"]) - 1) < 1e-5, what
            for f in r["frames"]:
                assert f["time_s"] == pytest.approx(f["index"] / c.fps, abs=1e-9), what
                x0, y0, x1, y1 = f["box"]
                assert 0 <= x0 < x1 <= c.width and 0 <= y0 < y1 <= c.height, (what, f)
            t = r["timings_ms"]
            assert min(t["decode"], t["faces"], t["model"]) > 0, what
    for name, a, b in zip(names, results["torch"], results["onnx"], strict=True):
        # The same faces (the faces stage is deterministic) through the two runtimes.
        assert [f["index"] for f in a["frames"]] == [f["index"] for f in b["frames"]], name
        assert a["label"] == b["label"], name
        assert max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in classes) < 1e-4
    # The 320×240 copy's boxes are in its own pixels: half the full size's scale, same place.
    p2 = sorted(k for k in clips if k.startswith("p"))[1]
    full, small = (results["onnx"][names.index(k)] for k in (p2, "small"))
    fx0, fy0, fx1, fy1 = np.median([f["box"] for f in full["frames"]], axis=0)
    sx0, sy0, sx1, sy1 = np.median([f["box"] for f in small["frames"]], axis=0)
    assert fx0 < (sx0 + sx1) < fx1 and fy0 < (sy0 + sy1) < fy1  # centre × 2 inside the box
    assert sx1 - sx0 < 0.75 * (fx1 - fx0)
