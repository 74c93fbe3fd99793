"""``emoflow predict`` as users run it: several real video files in one call, good and bad."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import skimage.data

from emoflow.config import load_params
from emoflow.faces.footage import write_clip
from emoflow.training.trainer import train_model


@pytest.fixture(scope="module")
def model_dir(tiny_faces: Path, tiny_params: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Path:  # fmt: skip
    out = tmp_path_factory.mktemp("predict_model") / "deep_emotion"
    data = tiny_faces
    train_model("deep_emotion", load_params(tiny_params), data / "faces", data / "splits", out)
    return out


def face_frames(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """The astronaut's face (a real photograph) drifting sideways, at ``size`` (w, h)."""
    img = cv2.resize(skimage.data.astronaut()[0:300, 80:480], size)
    return [np.roll(img, 2 * i, axis=1) for i in range(n)]


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 48000), np.float32), format="fltp",
                                           layout="mono")  # fmt: skip
        frame.sample_rate, frame.pts, frame.time_base = 48000, 0, Fraction(1, 48000)
        c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return path


def _predict(model: Path, files: list[Path], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emoflow.cli", "predict", *map(str, files),
                           "--model-dir", str(model), *extra],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip


def test_good_and_bad_files_in_one_call(model_dir: Path, tmp_path: Path) -> None:
    good = [write_clip(tmp_path / "face_640.mp4", face_frames(12, (640, 480))),
            write_clip(tmp_path / "face_960.mp4", face_frames(20, (960, 720)), fps=25)]
    blank = write_clip(tmp_path / "wall.mp4", [np.full((480, 640, 3), 128, np.uint8)] * 6)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    audio = write_audio_only(tmp_path / "voice.m4a")
    files = [good[0], text, blank, empty, audio, good[1]]
    out = _predict(model_dir, files, "--json")
    assert out.returncode == 2, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(f) for f in files]  # one line per file, in order
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 4
    for bad, why in ((text, "cannot open as a media file"), (empty, "cannot open"),
                     (audio, "no video stream"),
                     (blank, "no usable face in .*: face in 0 of 6 frames")):  # fmt: skip
        row = rows[files.index(bad)]
        assert row["error"].startswith(str(bad)) or str(bad) in row["error"]
        assert any(str(bad) in e for e in errors)
        assert re.search(why, row["error"]), row["error"]
    classes = load_model_classes(model_dir)
    for f, n, fps, scale in ((good[0], 12, 30, 1.0), (good[1], 20, 25, 1.5)):
        r = rows[files.index(f)]
        assert r["label"] in classes and r["frames_decoded"] == n and r["faces_found"] == n
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-4
        assert r["model"]["backend"] == "torch"  # nothing exported: auto falls back
        for fr in r["frames"]:
            assert fr["time_s"] == pytest.approx(fr["index"] / fps, abs=1e-6)
            x0, _, x1, _ = fr["box"]
            # The face spans x ≈ 155–300 at 640 px wide: the box follows the video's scale.
            assert 120 * scale < x0 < 200 * scale and 260 * scale < x1 < 360 * scale


def load_model_classes(model_dir: Path) -> list[str]:
    import torch

    return torch.load(model_dir / "model.pt", weights_only=False)["classes"]


def test_plain_lines_and_exit_zero_when_all_succeed(model_dir: Path, tmp_path: Path) -> None:
    v = write_clip(tmp_path / "a.mp4", face_frames(8, (640, 480)))
    out = _predict(model_dir, [v])
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    assert line.startswith(f"{v}: ") and "(face in 8 of 8 frames, 8 used;" in line
