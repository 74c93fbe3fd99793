"""``emoflow trim`` over validated trials: cuts, labels, flag policy, bad marks."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from emoflow.config import TrimParams
from emoflow.errors import InputError
from emoflow.ingest.marks import FLAG_NAMES, read_marks
from emoflow.ingest.trim import CLIPS_COLUMNS, trim_trials
from emoflow.media.video import iter_frames, probe


def _write_valid(small_sample: Path, small_trials: Path, path: Path, edit=None) -> list[dict]:
    """valid_trials.csv as the gate writes it: trials.csv columns + the marks."""
    with (small_trials / "trials.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        m = read_marks(small_sample / "marks" / f"{r['trial_id']}.txt")
        r.update(start=m.start, end=m.end, peak=m.peak, **m.flags)
    if edit:
        edit(rows)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def test_trim_cuts_to_marks_and_applies_the_flag_policy(small_sample: Path, small_trials: Path,
                                                        tmp_path: Path) -> None:  # fmt: skip
    valid = tmp_path / "valid_trials.csv"
    rows = _write_valid(small_sample, small_trials, valid)
    out = tmp_path / "clips"
    clips = trim_trials(valid, small_trials, out, TrimParams())
    excluded = [r for r in rows if any(str(r[f]) == "1" for f in TrimParams().exclude_flags)]
    assert excluded, "the small sample flags some trials"
    assert len(clips) == len(rows) - len(excluded)
    with (out / "clips.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(CLIPS_COLUMNS)
    kept_low = [c for c in table if c["low_occlusion"] == "1"]
    assert all(c["non_correlating"] == c["heavy_occlusion"] == c["other"] == "0" for c in table)
    assert kept_low or not any(str(r["low_occlusion"]) == "1" for r in rows if r not in excluded)
    by_id = {r["trial_id"]: r for r in rows}
    for c in table[:6]:
        r = by_id[c["trial_id"]]
        path = out / c["label"] / f"{c['trial_id']}.mp4"
        assert c["label"] == r["emotion"]
        n = sum(1 for _ in iter_frames(path))
        assert n == int(c["frames"]) == int(r["end"]) - int(r["start"]) + 1
        assert int(c["peak"]) == int(r["peak"]) - int(r["start"])
        assert probe(path).fps == 30
    assert {p.name for p in out.iterdir()} <= {"clips.csv", *{c["label"] for c in table}}


def test_marks_past_the_clip_fail_and_leave_no_output(small_sample: Path, small_trials: Path,
                                                      tmp_path: Path) -> None:  # fmt: skip
    def too_long(rows: list[dict]) -> None:
        rows[0].update(end=400, non_correlating=0, heavy_occlusion=0, other=0)

    valid = tmp_path / "valid_trials.csv"
    _write_valid(small_sample, small_trials, valid, too_long)
    out = tmp_path / "clips"
    with pytest.raises(InputError, match="marks end at frame 400"):
        trim_trials(valid, small_trials, out, TrimParams())
    assert not out.exists()


def test_unknown_flag_in_policy_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="unknown flags"):
        TrimParams(exclude_flags=("sneeze",))
    assert set(TrimParams().exclude_flags) <= set(FLAG_NAMES)
