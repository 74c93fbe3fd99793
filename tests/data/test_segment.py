"""``emoflow segment`` on the sample: onsets against the ground truth, clips, mismatches."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from emoflow.config import SegmentParams
from emoflow.errors import InputError
from emoflow.ingest.protocol import read_protocol
from emoflow.ingest.segment import (
    TRIALS_COLUMNS,
    SegmentError,
    find_session_beeps,
    find_sessions,
    segment_sessions,
)
from emoflow.media.video import iter_frames, probe


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_every_onset_is_within_one_frame_of_the_truth(small_sample: Path, small_trials: Path
                                                      ) -> None:  # fmt: skip
    truth = {r["trial_id"]: r for r in _rows(small_sample / "sample_truth" / "trials.csv")}
    rows = _rows(small_trials / "trials.csv")
    assert list(rows[0]) == list(TRIALS_COLUMNS)
    assert [r["trial_id"] for r in rows] == list(truth)
    for r in rows:
        t = truth[r["trial_id"]]
        assert abs(float(r["beep_s"]) - float(t["onset_s"])) <= 1 / float(r["fps"])
        assert r["emotion"] == t["protocol_emotion"]
        assert (r["frames"], r["duration_s"], r["width"], r["height"]) == ("180", "6.0000", "640",
                                                                            "480")  # fmt: skip


def test_clips_start_on_the_beep_frame_and_keep_their_audio(small_sample: Path,
                                                           small_trials: Path) -> None:  # fmt: skip
    truth = _rows(small_sample / "sample_truth" / "trials.csv")[:3]  # p001's first trials
    session = list(iter_frames(small_sample / "raw" / "sessions" / "p001.mp4"))
    for t in truth:
        clip = small_trials / f"{t['trial_id']}.mp4"
        info = probe(clip)
        assert info.has_audio and info.fps == 30
        first = next(iter_frames(clip)).astype(np.float32)
        onset = int(t["onset_frame"])
        diffs = [np.abs(first - session[onset + k]).mean() for k in range(-2, 3)]
        assert int(np.argmin(diffs)) == 2, diffs  # the very frame, not a neighbour


def _write_protocol(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _with_extra_trial(small_sample: Path, tmp_path: Path) -> Path:
    rows = _rows(small_sample / "raw" / "protocol.csv")
    rows.append({"participant": "p002", "trial": "8", "emotion": "anger", "stimulus": "x.mp4"})
    return _write_protocol(tmp_path / "protocol.csv", rows)


def test_mismatch_fails_by_default_and_writes_nothing(small_sample: Path, tmp_path: Path) -> None:
    protocol = _with_extra_trial(small_sample, tmp_path)
    out = tmp_path / "trials"
    with pytest.raises(SegmentError, match=r"p002 .*7 trigger beeps detected, protocol lists 8"
                       ) as err:  # fmt: skip
        segment_sessions(small_sample / "raw" / "sessions", protocol, out, SegmentParams())
    assert not out.exists()
    # The extra row is named, not blamed on a missing beep at an ordinary gap.
    assert f"most likely the protocol has extra rows (p002 trial 8 at row 23 of {protocol})" in (
        str(err.value))
    assert "beep is probably missing" not in str(err.value)


def test_mismatch_can_skip_the_participant(small_sample: Path, tmp_path: Path) -> None:
    protocol = _with_extra_trial(small_sample, tmp_path)
    out = tmp_path / "trials"
    rows = segment_sessions(small_sample / "raw" / "sessions", protocol, out,
                            SegmentParams(on_mismatch="skip"))  # fmt: skip
    assert {r["participant"] for r in rows} == {"p001", "p003"}
    assert not list(out.glob("p002_*.mp4"))
    skipped = _rows(out / "skipped.csv")
    assert [s["participant"] for s in skipped] == ["p002"]


def test_missing_session_video_is_a_mismatch(small_sample: Path, tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    for p in ("p001", "p003"):
        shutil.copy(small_sample / "raw" / "sessions" / f"{p}.mp4", sessions)
    with pytest.raises(SegmentError, match=r"p002: 7 trials in .* but no .*p002\.mp4"):
        segment_sessions(sessions, small_sample / "raw" / "protocol.csv", tmp_path / "o",
                         SegmentParams(workers=1))  # fmt: skip


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("participant,emotion\np001,anger\n", "row 1: missing columns ['trial']"),
        ("participant,trial,emotion\np001,one,anger\n", "row 2: trial must be an integer"),
        ("participant,trial,emotion\np001,1,anger\np001,1,fear\n", "row 3: trial 1 of p001 listed"),
    ],
)
def test_bad_protocol_names_the_row(small_sample: Path, tmp_path: Path, text: str, rule: str
                                    ) -> None:  # fmt: skip
    protocol = tmp_path / "protocol.csv"
    protocol.write_text(text)
    with pytest.raises(InputError, match=re.escape(rule)):
        segment_sessions(small_sample / "raw" / "sessions", protocol, tmp_path / "o",
                         SegmentParams())  # fmt: skip


def remux(src: Path, dst: Path, fmt: str, options: dict[str, str] | None = None) -> None:
    """Copy the streams of ``src`` into another container, no re-encoding."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w", format=fmt, options=options or {}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams
                   if s.type in ("video", "audio")}  # fmt: skip
        for packet in i.demux():
            if packet.dts is None or packet.stream.index not in streams:
                continue
            packet.stream = streams[packet.stream.index]
            o.mux(packet)


def cut_short_mp4(src: Path, dst: Path, seconds: float) -> None:
    """A ``+faststart`` MP4 (index at the front) that lost its end: it still opens."""
    full = dst.with_name("full.mp4")
    remux(src, full, "mp4", {"movflags": "+faststart"})
    data = full.read_bytes()
    dst.write_bytes(data[: round(len(data) * seconds / probe(full).duration_s)])
    full.unlink()


def _protocol_of(small_sample: Path, tmp_path: Path, participants: set[str]) -> Path:
    rows = [r for r in _rows(small_sample / "raw" / "protocol.csv")
            if r["participant"] in participants]  # fmt: skip
    return _write_protocol(tmp_path / "protocol.csv", rows)


def test_a_session_cut_short_is_named_not_a_missing_beep(small_sample: Path, tmp_path: Path
                                                        ) -> None:  # fmt: skip
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    cut_short_mp4(small_sample / "raw" / "sessions" / "p001.mp4", sessions / "p001.mp4", 37.0)
    protocol = _protocol_of(small_sample, tmp_path, {"p001"})
    with pytest.raises(SegmentError) as err:
        segment_sessions(sessions, protocol, tmp_path / "out", SegmentParams(workers=1))
    text = str(err.value)
    assert re.search(r"5 trigger beeps detected, protocol lists 7 trials; most likely the "
                     r"recording is cut short: its audio decodes to 3\d\.\d s of the 62\.2 s",
                     text), text  # fmt: skip
    assert f"p001 trials 6, 7 at rows 7, 8 of {protocol}" in text
    assert "beep is probably missing" not in text
    assert not (tmp_path / "out").exists()


def test_sessions_are_found_in_any_case_and_common_containers(
        small_sample: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    truth = {r["trial_id"]: r for r in _rows(small_sample / "sample_truth" / "trials.csv")}
    last = max(float(t["onset_s"]) for t in truth.values() if t["participant"] == "p001")
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    # p001: a camera's upper-case .MP4, cut short inside its last trial; p002: Matroska.
    cut_short_mp4(small_sample / "raw" / "sessions" / "p001.mp4", sessions / "p001.MP4", last + 3)
    remux(small_sample / "raw" / "sessions" / "p002.mp4", sessions / "p002.Mkv", "matroska")
    (sessions / "notes.txt").write_text("not a recording")
    assert find_sessions(sessions) == {"p001": sessions / "p001.MP4", "p002": sessions / "p002.Mkv"}
    protocol = _protocol_of(small_sample, tmp_path, {"p001", "p002"})
    mkv = find_session_beeps(sessions / "p002.Mkv", read_protocol(protocol)["p002"],
                             SegmentParams(), protocol)  # fmt: skip
    assert mkv.skipped is None
    onsets = [float(t["onset_s"]) for t in truth.values() if t["participant"] == "p002"]
    np.testing.assert_allclose([b.onset_s for b in mkv.beeps], onsets, atol=1 / 30)
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):  # cutting p001 is enough for the rest: one session
        rows = segment_sessions(sessions, _protocol_of(small_sample, tmp_path, {"p001"}), out,
                                SegmentParams(workers=1))  # fmt: skip
    assert [r["trial_id"] for r in rows] == [t for t in truth if t.startswith("p001")]
    for r in rows:
        assert abs(float(r["beep_s"]) - float(truth[r["trial_id"]]["onset_s"])) <= 1 / 30
    frames = {r["trial_id"]: r["frames"] for r in rows}
    assert 30 < frames["p001_007"] < 180 and frames["p001_006"] == 180
    assert len(list(iter_frames(out / "p001_007.mp4"))) == frames["p001_007"]
    short = [m for m in caplog.messages if "p001_007" in m]
    assert len(short) == 1 and "the file is cut short" in short[0], caplog.messages


def test_a_missing_sessions_folder_is_named(small_sample: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="the sessions folder does not exist") as err:
        segment_sessions(tmp_path / "nope", small_sample / "raw" / "protocol.csv",
                         tmp_path / "out", SegmentParams())  # fmt: skip
    assert "disagree" not in str(err.value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no session recordings in the folder"):
        segment_sessions(tmp_path / "empty", small_sample / "raw" / "protocol.csv",
                         tmp_path / "out", SegmentParams())  # fmt: skip
