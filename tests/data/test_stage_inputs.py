"""Bad rows and files that used to crash ``trim``, ``faces`` and ``import``: one line, exit 2,
naming the file, the row and the rule; no output written."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from stage_cli import TRIAL, TRIAL_ROW, assert_one_line_error, emoflow, write_clip, write_csv

from emoflow.faces.stage import CLIP_COLUMNS
from emoflow.ingest.marks import FLAG_NAMES
from emoflow.ingest.segment import TRIALS_COLUMNS

MARKS = {"start": 1, "end": 6, "peak": 3, **dict.fromkeys(FLAG_NAMES, 0)}


def _audio_only(path: Path) -> Path:
    """A real MP4 holding one AAC stream and no video."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as c:
        stream = c.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")  # fmt: skip
        frame.sample_rate = 16000
        for packet in (*stream.encode(frame), *stream.encode(None)):
            c.mux(packet)
    return path


@pytest.fixture
def params(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"faces": {"workers": 1}}))
    return path


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        ({"start": "x"}, ["row 2", "field start must be an integer", "'x'"]),
        ({"start": "--4"}, ["row 2", "field start must be an integer", "'--4'"]),
        ({"peak": "4²"}, ["row 2", "field peak must be an integer"]),
        ({"start": 5, "end": 3, "peak": 4}, ["row 2", "start <= peak <= end"]),
        ({"peak": 7}, ["row 2", "start <= peak <= end", "peak=7"]),
        ({"other": 2}, ["row 2", "flag other must be 0 or 1, got 2"]),
        ({"start": -1, "peak": 1}, ["row 2", "start must be >= 0, got -1"]),
        ({"emotion": ""}, ["row 2", "emotion must be a plain name"]),
        ({"start": 20, "peak": 21, "end": 25}, [f"{TRIAL}.mp4", "has 8 frames, marks end at "
                                                "frame 25"]),
    ],
)  # fmt: skip
def test_trim_checks_valid_trials_by_the_marks_rules(
    edit: dict, words: list[str], tmp_path: Path, params: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    write_clip(tmp_path / "trials" / f"{TRIAL}.mp4")  # 8 frames
    valid = write_csv(tmp_path / "valid_trials.csv", [*TRIALS_COLUMNS, *MARKS],
                      [TRIAL_ROW | MARKS | edit])  # fmt: skip
    out = tmp_path / "clips"
    code, err = emoflow(monkeypatch, capsys, "trim", "--valid", str(valid), "--trials",
                        str(tmp_path / "trials"), "--out", str(out), "-p", str(params))
    line = assert_one_line_error(code, err, *words)
    if "row 2" in words:
        assert str(valid) in line
    assert not out.exists()


def _clips_table(root: Path, peak: object, video: Path | None = None) -> Path:
    row = {"trial_id": TRIAL, "participant": "p001", "label": "anger", "peak": peak}
    if video is None:
        write_clip(root / "anger" / f"{TRIAL}.mp4", audio=False)
    return write_csv(root / "clips.csv", [*CLIP_COLUMNS, *(["path"] if video else [])],
                     [row | ({"path": str(video)} if video else {})])  # fmt: skip


@pytest.mark.parametrize("peak", ["4²", "x", "-1", "1.5"])
def test_faces_refuses_a_bad_peak_before_any_work(
    peak: str, tmp_path: Path, params: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    clips = _clips_table(tmp_path / "clips", peak)
    out = tmp_path / "faces"
    code, err = emoflow(monkeypatch, capsys, "faces", "--clips", str(clips), "--out", str(out),
                        "-p", str(params))  # fmt: skip
    assert_one_line_error(code, err, f"{clips}:row 2", "peak must be empty or a frame index",
                          repr(peak))  # fmt: skip
    assert not out.exists()


def test_faces_names_an_audio_only_clip(tmp_path: Path, params: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    audio = _audio_only(tmp_path / "audio.mp4")
    clips = _clips_table(tmp_path / "clips", 2, video=audio)
    out = tmp_path / "faces"
    code, err = emoflow(monkeypatch, capsys, "faces", "--clips", str(clips), "--out", str(out),
                        "-p", str(params))  # fmt: skip
    assert_one_line_error(code, err, f"{audio}: no video stream")
    assert not out.exists()


def test_import_names_an_audio_only_clip(tmp_path: Path, params: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    audio = _audio_only(tmp_path / "dataset" / "happy" / "s1_a.mp4")
    out = tmp_path / "imported"
    code, err = emoflow(monkeypatch, capsys, "import", str(tmp_path / "dataset"), "--out",
                        str(out), "--subject-regex", r"^(s\d+)_", "-p", str(params))
    assert_one_line_error(code, err, f"{audio}: no video stream")
    assert not out.exists()
