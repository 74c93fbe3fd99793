"""Which clips the labelling tool opens, and the progress it shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from emoflow.errors import InputError
from emoflow.ingest.marks import Marks, write_marks
from emoflow.labelling.queue import load_trials, pending, progress

HEADER = "trial_id,participant,trial,emotion,beep_s,fps,frames,duration_s,width,height\n"


def touch_clips(folder: Path, *ids: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for trial_id in ids:
        (folder / f"{trial_id}.mp4").write_bytes(b"")  # the queue never decodes


def test_folder_gives_sorted_mp4s_with_participant_from_the_stem(tmp_path: Path) -> None:
    touch_clips(tmp_path, "p002_000", "p001_001", "p001_000")
    (tmp_path / "notes.txt").write_text("not a clip")
    trials = load_trials(tmp_path)
    assert [t.trial_id for t in trials] == ["p001_000", "p001_001", "p002_000"]
    assert [t.participant for t in trials] == ["p001", "p001", "p002"]
    assert all(t.emotion is None for t in trials)
    assert trials[0].clip == tmp_path / "p001_000.mp4"


def test_csv_gives_rows_in_order_with_expected_emotion(tmp_path: Path) -> None:
    touch_clips(tmp_path, "p001_000", "p001_001")
    csv = tmp_path / "trials.csv"
    csv.write_text(
        HEADER
        + "p001_001,p001,1,fear,12.5,30,180,6.0,640,480\n"
        + "p001_000,p001,0,happiness,3.1,30,180,6.0,640,480\n"
    )
    trials = load_trials(csv)
    assert [(t.trial_id, t.emotion) for t in trials] == [
        ("p001_001", "fear"),
        ("p001_000", "happiness"),
    ]
    assert trials[1].clip == tmp_path / "p001_000.mp4"


@pytest.mark.parametrize(
    ("body", "where", "rule"),
    [
        ("trial_id,participant\np001_000,p001\n", "header", "missing column(s) emotion"),
        (HEADER + ",p001,0,fear,1,30,180,6,640,480\n", "row 2", "trial_id is empty"),
        (HEADER + "p009_000,p009,0,fear,1,30,180,6,640,480\n", "row 2", "does not exist"),
        (
            HEADER + "p001_000,p001,0,fear,1,30,180,6,640,480\n" * 2,
            "row 3",
            "appears twice",
        ),
        (HEADER, None, "no trials listed"),
    ],
)
def test_bad_csv_names_file_row_and_rule(
    tmp_path: Path, body: str, where: str | None, rule: str
) -> None:
    touch_clips(tmp_path, "p001_000")
    csv = tmp_path / "trials.csv"
    csv.write_text(body)
    with pytest.raises(InputError) as err:
        load_trials(csv)
    assert err.value.path == csv and err.value.where == where and rule in err.value.rule


def test_missing_source_and_empty_folder_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        load_trials(tmp_path / "nope")
    with pytest.raises(InputError, match=r"no \*\.mp4 clips"):
        load_trials(tmp_path)


def test_queue_skips_marked_clips_unless_redo_and_counts_progress(tmp_path: Path) -> None:
    touch_clips(tmp_path / "trials", "p001_000", "p001_001", "p001_002")
    trials = load_trials(tmp_path / "trials")
    marks = tmp_path / "marks"
    assert progress(trials, marks) == (0, 3)
    write_marks(marks / "p001_001.txt", Marks(1, 5, 3))
    assert [t.trial_id for t in pending(trials, marks)] == ["p001_000", "p001_002"]
    assert len(pending(trials, marks, redo=True)) == 3
    assert progress(trials, marks) == (1, 3)
