"""``parallel_map``: a failing job closes the progress bar before its error reaches the user."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("workers", [1, 2])
def test_the_cli_error_line_starts_its_own_line(tmp_path: Path, workers: int) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["segment"]["workers"] = workers
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    for p in ("p001", "p002"):
        (sessions / f"{p}.mp4").write_bytes(b"not a video")
    protocol = tmp_path / "protocol.csv"
    protocol.write_text("participant,trial,emotion\np001,1,anger\np002,1,fear\n")
    r = subprocess.run(
        [sys.executable, "-m", "emoflow.cli", "segment", "-p", str(tmp_path / "params.yaml"),
         "--sessions", str(sessions), "--protocol", str(protocol), "--out",
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "%|" in r.stderr  # a progress bar was shown
    lines = r.stderr.split("\n")  # not splitlines(): the bar redraws itself after a "\r"
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1 and errors[0].startswith("error: "), r.stderr
    assert "p001.mp4" in errors[0] and "cannot open as a media file" in errors[0]
    assert not (tmp_path / "out").exists()


def test_a_stage_loop_error_also_starts_its_own_line(tmp_path: Path) -> None:
    """trim's own bar (not parallel_map's): the CLI closes any bar an error interrupted."""
    from emoflow.ingest.marks import FLAG_NAMES

    valid = tmp_path / "valid_trials.csv"
    header = ["trial_id", "participant", "emotion", "start", "end", "peak", *FLAG_NAMES]
    rows = [["p001_001", "p001", "anger", "0", "9", "5", *["0"] * len(FLAG_NAMES)]]
    valid.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    (tmp_path / "trials").mkdir()
    (tmp_path / "trials" / "p001_001.mp4").write_bytes(b"not a video")
    r = subprocess.run(
        [sys.executable, "-m", "emoflow.cli", "trim", "-p", str(ROOT / "params.yaml"),
         "--valid", str(valid), "--trials",
         str(tmp_path / "trials"), "--out", str(tmp_path / "clips")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in r.stderr.split("\n") if "error:" in ln]
    assert len(errors) == 1 and errors[0].startswith("error: "), r.stderr
    assert "p001_001.mp4" in errors[0]
