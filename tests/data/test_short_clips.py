"""A clip that ends before its table (or container) says is reported, not decoded in silence."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import pytest
import skimage.data
from test_segment import cut_short_mp4

from emoflow.config import FacesParams, load_params
from emoflow.datasets.importer import ImportOptions, import_dataset
from emoflow.faces.stage import extract_faces
from emoflow.media.video import MediaWriter, iter_frames, probe


def _face_clip(path: Path, n: int) -> None:
    face = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    path.parent.mkdir(parents=True, exist_ok=True)
    with MediaWriter(path, fps=10, width=512, height=512, sample_rate=None) as w:
        for k in range(n):
            w.write_frame(cv2.convertScaleAbs(face, alpha=0.9 + 0.01 * k))


def test_faces_warns_when_a_clip_is_shorter_than_clips_csv(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    clips = tmp_path / "clips"
    _face_clip(clips / "happiness" / "p1_001.mp4", 12)  # the table says 24: the file lost half
    _face_clip(clips / "happiness" / "p2_001.mp4", 12)
    with (clips / "clips.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial_id", "participant", "label", "frames", "peak"])
        w.writerow(["p1_001", "p1", "happiness", "24", "20"])
        w.writerow(["p2_001", "p2", "happiness", "12", "6"])
    with caplog.at_level("INFO"):
        rows = extract_faces(clips / "clips.csv", tmp_path / "faces",
                             FacesParams(workers=1, cnn_fallback=False, detect_scale=1.0))
    assert [(r["frames_decoded"], r["excluded"]) for r in rows] == [(12, ""), (12, "")]
    short = [m for m in caplog.messages if "decodes to" in m]
    assert len(short) == 1, caplog.messages
    assert f"{clips / 'happiness' / 'p1_001.mp4'} decodes to 12 frames but clips.csv lists 24" \
        in short[0] and "its peak (frame 20) is past that end" in short[0]  # fmt: skip
    assert any("1 clips shorter than clips.csv lists" in m for m in caplog.messages)


def test_import_warns_when_a_video_decodes_short_of_its_container(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    whole = tmp_path / "whole.mp4"
    _face_clip(whole, 30)
    video = tmp_path / "raw" / "surprise" / "s1_take.mp4"
    video.parent.mkdir(parents=True)
    cut_short_mp4(whole, video, 1.5)  # 3 s declared, about half of it left
    decoded = len(list(iter_frames(video)))
    assert probe(video).frames == 30 and 5 < decoded < 25
    params = tmp_path / "params.yaml"
    params.write_text("faces: {cnn_fallback: false, detect_scale: 1.0, workers: 1}\n")
    with caplog.at_level("WARNING"):
        rows = import_dataset(tmp_path / "raw", tmp_path / "out", load_params(params),
                              ImportOptions(r"^(s\d+)_"))  # fmt: skip
    assert rows[0]["frames_decoded"] == decoded and not rows[0]["excluded"]
    short = [m for m in caplog.messages if "decodes to" in m]
    assert len(short) == 1 and f"{video} decodes to {decoded} frames but its container lists " \
        "30" in short[0], caplog.messages  # fmt: skip
