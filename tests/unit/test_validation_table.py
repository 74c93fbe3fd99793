"""The validation table: trials.csv, marks files and clip checks joined per trial (no decoding)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from emoflow.validation.media import ClipCheck
from emoflow.validation.table import build_tables, read_trials_csv

HEADER = "trial_id,participant,trial,emotion,beep_s,fps,frames,duration_s,width,height\n"


def _row(trial_id: str, emotion: str = "fear", frames: str = "180") -> str:
    participant, trial = trial_id.split("_")
    return f"{trial_id},{participant},{int(trial)},{emotion},1.5,30,{frames},6.0,640,480\n"


def _fake_clip(path: Path) -> ClipCheck:
    return ClipCheck(180, None, None)


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    trials = tmp_path / "trials" / "trials.csv"
    marks = tmp_path / "marks"
    trials.parent.mkdir()
    marks.mkdir()
    trials.write_text(HEADER + _row("p001_001") + _row("p001_002", "anger", "18x")
                      + _row("p001_003") + _row("p001_004"))  # fmt: skip
    (marks / "p001_001.txt").write_text("3\t89\t43\t1\t0\t0\t0\t0\n")
    (marks / "p001_002.txt").write_text("90\t89\t43\t0\t0\t0\t0\t2\n")  # values break rules
    (marks / "p001_003.txt").write_text("3\t89\t43\t0\t0\t0\t0\n")  # 7 fields
    (marks / "p009_001.txt").write_text("3\t89\t43\t0\t0\t0\t0\t0\n")  # orphan
    return trials, marks


def test_marks_values_are_kept_for_the_suite_to_judge(inputs: tuple[Path, Path]) -> None:
    t = build_tables(*inputs, clip_check=_fake_clip).trials.set_index("trial_id")
    assert (t.loc["p001_001", "start"], t.loc["p001_001", "non_correlating"]) == (3, 1)
    assert pd.isna(t.loc["p001_001", "marks_error"])
    # Well-formed but rule-breaking values stay in the table so every broken rule is named.
    assert (t.loc["p001_002", "start"], t.loc["p001_002", "end"], t.loc["p001_002", "other"]) \
        == (90, 89, 2)  # fmt: skip
    assert pd.isna(t.loc["p001_002", "marks_error"])
    # A malformed file has no values, only its parse error (file, line and rule).
    assert "found 7" in t.loc["p001_003", "marks_error"]
    assert math.isnan(t.loc["p001_003", "start"])
    assert pd.isna(t.loc["p001_004", "marks_file"])  # no file


def test_numbers_keep_their_text_for_type_checks(inputs: tuple[Path, Path]) -> None:
    t = build_tables(*inputs, clip_check=_fake_clip).trials.set_index("trial_id")
    assert t.loc["p001_002", "frames_text"] == "18x"
    assert math.isnan(t.loc["p001_002", "frames"])
    assert t.loc["p001_001", "frames"] == 180.0
    assert list(t["row"]) == [2, 3, 4, 5]  # line numbers in trials.csv


def test_orphans_and_label_shares(inputs: tuple[Path, Path]) -> None:
    tables = build_tables(*inputs, clip_check=_fake_clip)
    orphans = tables.marks[~tables.marks["in_trials"]]
    assert list(orphans["trial_id"]) == ["p009_001"]
    p = tables.participants.set_index("participant").loc["p001"]
    assert (p["top_label"], p["trials"], p["top_share"]) == ("fear", 4, 0.75)


def test_missing_column_is_structural_and_kept_as_null(tmp_path: Path) -> None:
    path = tmp_path / "trials.csv"
    path.write_text("trial_id,participant,trial,emotion\np001_001,p001,1,fear\n")
    raw, issues = read_trials_csv(path)
    assert [i.detail for i in issues] == [f"missing column {c!r}" for c in
        ("beep_s", "fps", "frames", "duration_s", "width", "height")]  # fmt: skip
    assert raw["fps"].isna().all()


def test_unreadable_trials_csv_is_structural(tmp_path: Path) -> None:
    raw, issues = read_trials_csv(tmp_path / "nope.csv")
    assert len(raw) == 0
    assert len(issues) == 1 and issues[0].detail.startswith("unreadable")
