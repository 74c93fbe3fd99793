"""``emoflow validate`` over real clips, real marks files and real broken inputs."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from emoflow.cli import app
from emoflow.config import EMOTIONS, Params, ValidateParams
from emoflow.ingest.marks import FIELD_NAMES, FLAG_NAMES
from emoflow.media.video import MediaWriter
from emoflow.validation.gate import GateError, validate
from emoflow.validation.table import TRIALS_COLUMNS

FPS, FRAMES, W, H, SR = 30, 180, 640, 480, 48000
GOOD_MARKS = "10\t150\t80\t0\t0\t0\t0\t0\n"


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One valid 6 s trial clip (640×480, 30 fps, AAC audio) of a real photograph."""
    from skimage.data import astronaut

    rgb = astronaut()[:H, :W]  # 512×512 photograph, cropped to the clip's height
    frame = np.zeros((H, W, 3), np.uint8)
    frame[:, : rgb.shape[1]] = rgb[:, :, ::-1]  # RGB → BGR
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    t = np.arange(SR // FPS) / SR
    with MediaWriter(path, FPS, W, H, sample_rate=SR) as w:
        for i in range(FRAMES):
            # Moving content so the encoder writes real P-frames, not one frame repeated.
            w.write_frame(np.roll(frame, 2 * i, axis=1))
            w.write_audio(0.1 * np.sin(2 * np.pi * 440 * (t + i / FPS)))
    return path


def _trial_rows(participants: int = 2, per: int = 7) -> list[dict[str, str]]:
    return [
        {
            "trial_id": f"p{p:03d}_{t:03d}",
            "participant": f"p{p:03d}",
            "trial": str(t),
            "emotion": EMOTIONS[(t - 1) % len(EMOTIONS)],
            "beep_s": f"{10 + 9.5 * t:.3f}",
            "fps": str(FPS),
            "frames": str(FRAMES),
            "duration_s": "6.0",
            "width": str(W),
            "height": str(H),
        }
        for p in range(1, participants + 1)
        for t in range(1, per + 1)
    ]


def write_set(root: Path, clip: Path, rows: list[dict[str, str]]) -> tuple[Path, Path]:
    """trials.csv with one copied clip per row, and one good marks file per row."""
    trials_dir, marks_dir = root / "interim" / "trials", root / "marks"
    trials_dir.mkdir(parents=True)
    marks_dir.mkdir(parents=True)
    with (trials_dir / "trials.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        shutil.copyfile(clip, trials_dir / f"{row['trial_id']}.mp4")
        (marks_dir / f"{row['trial_id']}.txt").write_text(GOOD_MARKS)
    return trials_dir / "trials.csv", marks_dir


# trial → (what is wrong, the expectation that must name it, the file it must blame)
BROKEN = {
    "p001_001": ("truncated mp4", "expect_column_values_to_be_null(video_error)", "clip"),
    "p001_002": ("text named .mp4", "expect_column_values_to_be_null(video_error)", "clip"),
    "p001_003": ("start > end", "expect_column_pair_values_a_to_be_greater_than_b(end, start)",
                 "marks"),
    "p001_004": ("non-integer", "expect_column_values_to_be_null(marks_error)", "marks"),
    "p001_005": ("peak after end", "expect_column_pair_values_a_to_be_greater_than_b(end, peak)",
                 "marks"),
    "p001_006": ("7 fields", "expect_column_values_to_be_null(marks_error)", "marks"),
    "p001_007": ("no marks file", "expect_column_values_to_not_be_null(marks_file)", "marks"),
    "p002_001": ("unknown emotion", "expect_column_values_to_be_in_set(emotion)", "trials"),
    "p002_002": ("fps out of range", "expect_column_values_to_be_between(fps)", "trials"),
}  # fmt: skip


def break_set(root: Path, clip: Path) -> tuple[Path, Path]:
    rows = _trial_rows()
    by_id = {r["trial_id"]: r for r in rows}
    by_id["p002_001"]["emotion"] = "contempt"
    by_id["p002_002"]["fps"] = "12"
    trials_csv, marks = write_set(root, clip, rows)
    clips = trials_csv.parent
    data = clip.read_bytes()
    (clips / "p001_001.mp4").write_bytes(data[: len(data) // 2])
    (clips / "p001_002.mp4").write_bytes(b"this is not a video\n" * 100)
    (marks / "p001_003.txt").write_text("100\t90\t95\t0\t0\t0\t0\t0\n")
    (marks / "p001_004.txt").write_text("10\t150\t8.5\t0\t0\t0\t0\t0\n")
    (marks / "p001_005.txt").write_text("10\t150\t170\t0\t0\t0\t0\t0\n")
    (marks / "p001_006.txt").write_text("10\t150\t80\t0\t0\t0\t0\n")
    (marks / "p001_007.txt").unlink()
    return trials_csv, marks


def _params(**validate: float) -> Params:
    return Params(validate=ValidateParams(**validate))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory: pytest.TempPathFactory, clip: Path) -> Path:
    """The broken set validated with a tolerant gate, so that valid_trials.csv is written."""
    root = tmp_path_factory.mktemp("broken")
    trials_csv, marks = break_set(root, clip)
    validate(_params(max_failed_share=0.8), trials_csv, marks, root / "report", root / "out")
    return root


def test_every_broken_input_is_named_and_nothing_else_is_lost(broken_run: Path) -> None:
    summary = json.loads((broken_run / "report" / "summary.json").read_text())
    quarantine = _read_csv(broken_run / "out" / "quarantine.csv")
    valid = _read_csv(broken_run / "out" / "valid_trials.csv")

    assert summary["verdict"] == "pass"
    assert summary["trials_read"] == 14
    assert summary["quarantined"] == len(BROKEN)
    assert summary["passed"] == 14 - len(BROKEN)
    assert set(summary["quarantined_trials"]) == set(BROKEN)
    assert {r["trial_id"] for r in quarantine} == set(BROKEN)
    for trial_id, (what, expectation, blame) in BROKEN.items():
        assert expectation in summary["quarantined_trials"][trial_id], what
        key = (trial_id, expectation)
        rows = [r for r in quarantine if (r["trial_id"], r["expectation"]) == key]
        assert rows, what
        assert summary["failures_by_expectation"][expectation] >= 1
        file = rows[0]["file"]
        if blame == "clip":
            assert file.endswith(f"trials/{trial_id}.mp4"), what
        elif blame == "marks":
            assert file.endswith(f"marks/{trial_id}.txt"), what
        else:
            assert file.endswith("trials.csv"), what

    assert [r["trial_id"] for r in valid] == [f"p002_{t:03d}" for t in range(3, 8)]
    assert list(valid[0]) == [*TRIALS_COLUMNS, *FIELD_NAMES]
    assert valid[0]["start"] == "10" and valid[0]["end"] == "150" and valid[0]["peak"] == "80"
    assert all(valid[0][f] == "0" for f in FLAG_NAMES)
    assert valid[0]["beep_s"] == "38.500"  # trials.csv values are passed on as written


def test_failure_details_say_what_is_wrong(broken_run: Path) -> None:
    detail = {(r["trial_id"], r["expectation"]): r["detail"]
              for r in _read_csv(broken_run / "out" / "quarantine.csv")}  # fmt: skip
    assert "expected 8 tab-separated fields" in detail[("p001_006", BROKEN["p001_006"][1])]
    assert "field peak must be an integer" in detail[("p001_004", BROKEN["p001_004"][1])]
    assert "start=100 > end=90" in detail[("p001_003", BROKEN["p001_003"][1])]
    assert "'contempt'" in detail[("p002_001", BROKEN["p002_001"][1])]
    assert "fps=12 outside [24, 61]" in detail[("p002_002", BROKEN["p002_002"][1])]
    assert "cannot open" in detail[("p001_002", BROKEN["p001_002"][1])]
    # A file that is not a video is one failure, not also "no audio".
    assert [k for k in detail if k[0] == "p001_002"] == [("p001_002", BROKEN["p001_002"][1])]


def test_data_docs_site_is_written(broken_run: Path) -> None:
    report = broken_run / "report"
    index = (report / "index.html").read_text()
    assert "trials" in index and "participants" in index and "marks_files" in index
    pages = list((report / "validations").rglob("*.html"))
    assert len(pages) == 3
    assert any("expect_column_values_to_be_in_set" in p.read_text() or "contempt" in p.read_text()
               for p in pages)  # fmt: skip


def test_gate_fails_with_exit_code_2_but_still_reports(tmp_path: Path, clip: Path) -> None:
    trials_csv, marks = break_set(tmp_path, clip)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "valid_trials.csv").write_text("stale from an earlier run\n")
    cmd = [sys.executable, "-m", "emoflow.cli", "validate", "--trials", str(trials_csv),
           "--marks", str(marks), "--report", str(tmp_path / "report"),
           "--out", str(tmp_path / "out"), "--params", str(tmp_path / "params.yaml")]  # fmt: skip
    (tmp_path / "params.yaml").write_text("validate:\n  max_failed_share: 0.1\n")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: validation gate failed: 9/14 trials quarantined"), last
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["verdict"] == "fail" and summary["quarantined"] == 9
    assert (tmp_path / "report" / "index.html").is_file()
    assert len(_read_csv(tmp_path / "out" / "quarantine.csv")) >= 9
    # Later stages must never read a half-validated (or stale) set.
    assert not (tmp_path / "out" / "valid_trials.csv").exists()


def test_clean_set_passes_via_cli(tmp_path: Path, clip: Path) -> None:
    rows = _trial_rows(participants=1)
    trials_csv, marks = write_set(tmp_path, clip, rows)
    (tmp_path / "params.yaml").write_text("{}\n")  # every section at its default
    result = CliRunner().invoke(app, [
        "validate", "--trials", str(trials_csv), "--marks", str(marks),
        "--report", str(tmp_path / "report"), "--out", str(tmp_path / "out"),
        "--params", str(tmp_path / "params.yaml"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["verdict"] == "pass"
    assert summary["passed"] == 7 and summary["quarantined"] == 0
    assert summary["structural_errors"] == 0 and summary["warnings"] == []
    assert _read_csv(tmp_path / "out" / "quarantine.csv") == []
    assert len(_read_csv(tmp_path / "out" / "valid_trials.csv")) == 7


def test_structural_errors_fail_the_gate(tmp_path: Path, clip: Path) -> None:
    rows = _trial_rows(participants=1, per=3)
    rows.append(dict(rows[0]))  # a duplicated trial id
    trials_csv, marks = write_set(tmp_path, clip, rows)
    (marks / "p009_001.txt").write_text(GOOD_MARKS)  # an orphan marks file
    with pytest.raises(GateError, match="2 structural errors > max_structural_errors 0"):
        validate(_params(), trials_csv, marks, tmp_path / "report", tmp_path / "out")
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    rules = {s["expectation"]: s for s in summary["structural"]}
    assert rules["expect_column_values_to_be_unique(trial_id)"]["trial_id"] == "p001_001"
    orphan = rules["expect_column_values_to_be_in_set(in_trials)"]
    assert orphan["file"].endswith("marks/p009_001.txt")
    # Both rows of the duplicated id are quarantined; the other two trials are not.
    assert summary["quarantined_trials"] == {
        "p001_001": ["expect_column_values_to_be_unique(trial_id)"] * 2
    }


def test_missing_column_and_label_skew(tmp_path: Path, clip: Path) -> None:
    rows = _trial_rows(participants=1, per=3)
    for r in rows:
        r["emotion"] = "fear"  # one label takes all of p001's trials: a warning only
        del r["height"]
    trials_csv, marks = write_set(tmp_path, clip, rows)
    with pytest.raises(GateError, match="structural errors"):
        validate(_params(), trials_csv, marks, tmp_path / "report", tmp_path / "out")
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["structural"][0]["detail"] == "missing column 'height'"
    assert summary["warnings"] == [
        "participant p001: fear takes 100% of 3 trials (max_label_share 50%)"
    ]
    counts = summary["failures_by_expectation"]
    assert counts["expect_column_values_to_not_be_null(height_text)"] == 3


def test_unreadable_trials_csv_still_writes_the_report(tmp_path: Path) -> None:
    (tmp_path / "marks").mkdir()
    with pytest.raises(GateError, match="no trials to validate; 1 structural errors"):
        validate(_params(), tmp_path / "missing.csv", tmp_path / "marks",
                 tmp_path / "report", tmp_path / "out")  # fmt: skip
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["structural"][0]["expectation"] == "trials.csv readable"
    assert _read_csv(tmp_path / "out" / "quarantine.csv")[0]["file"].endswith("missing.csv")
