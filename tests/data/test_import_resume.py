"""A large import: resumable after a crash (a real SIGKILL, and a bad file met halfway), and
flat in memory with a progress bar at 10,000 clips (slow; ``bench/import_scale.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from import_scale import make_dataset, run_import

from emoflow.config import load_params
from emoflow.datasets.importer import ImportOptions, import_dataset
from emoflow.datasets.resume import JOURNAL, work_dir
from emoflow.errors import InputError


def _journal(out: Path) -> list[dict]:
    path = work_dir(out) / JOURNAL
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _stamp(files: list[Path]) -> dict[str, tuple[int, int]]:
    """Which file each one is (inode) and when it was written: a redone clip changes both."""
    return {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in files}


def _wait_for(predicate, proc: subprocess.Popen, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll for an event the import makes (files it writes), not for a length of time."""
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the import ended ({proc.returncode}) before {what}")
        time.sleep(0.01)


@pytest.mark.slow  # two imports started cold, with worker processes: ~35 s on 2 busy cores
def test_killed_import_resumes_without_redoing_clips(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path / "data", 400, subjects=8)
    out = tmp_path / "out"
    params = manifest.with_name("params.yaml")
    params.write_text("faces: {size: 32, min_face_frames: 1, workers: 2}\n")
    cmd = [sys.executable, "-m", "emoflow.cli", "import", "--manifest", str(manifest), "--out",
           str(out), "--cropped", "--params", str(params)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # Its own session: the kill takes the forkserver and the workers too, as a crash would.
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: len(_journal(out)) >= 60, proc, "60 clips were done")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = _journal(out)
    assert 60 <= len(done) < 400 and not out.exists()
    kept = [work_dir(out) / r["file"] for r in done]
    before = _stamp(kept)
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"resuming: {len(done)} clips done in {work_dir(out)}" in run.stderr
    assert f"| {len(done)}/400 [" in run.stderr  # the bar starts where the killed run stopped
    assert _stamp([out / r["file"] for r in done]) == before  # not one finished clip redone
    lines = (out / "faces.csv").read_text().splitlines()
    assert len(lines) == 401 and len({line.split(",")[0] for line in lines[1:]}) == 400
    assert not work_dir(out).exists() and not (out / JOURNAL).exists()


def test_import_stopped_by_a_bad_file_resumes_once_fixed(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    manifest = make_dataset(tmp_path / "data", 30, subjects=3)
    bad = manifest.parent / "img" / "000" / "000020.png"
    good = bad.read_bytes()
    bad.write_bytes(b"not a png")
    out = tmp_path / "out"
    yaml = manifest.with_name("params.yaml")
    yaml.write_text("faces: {size: 32, min_face_frames: 1, workers: 1}\n")
    with pytest.raises(InputError, match=r"000020\.png: cannot read as an image"):
        import_dataset(None, out, load_params(yaml), ImportOptions(cropped=True),
                       manifest=manifest)  # fmt: skip
    done = _journal(out)
    assert len(done) == 20 and not out.exists()
    before = _stamp([work_dir(out) / r["file"] for r in done])
    bad.write_bytes(good)
    rows = import_dataset(None, out, load_params(yaml), ImportOptions(cropped=True),
                          manifest=manifest)  # fmt: skip
    assert len(rows) == 30 and rows[:20] == done
    assert _stamp([out / r["file"] for r in done]) == before
    # Other options make other face files: a changed run starts afresh, never mixes the two.
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError):
        import_dataset(None, out, load_params(yaml), ImportOptions(cropped=True, grayscale=True),
                       manifest=manifest)  # fmt: skip
    assert len(_journal(out)) == 20
    bad.write_bytes(good)
    with caplog.at_level("INFO"):
        rows = import_dataset(None, out, load_params(yaml), ImportOptions(cropped=True),
                              manifest=manifest)  # fmt: skip
    assert any("another import's clips (other clips or options): starting afresh" in m
               for m in caplog.messages) and not any("resuming" in m for m in caplog.messages)
    assert len(rows) == 30 and not work_dir(out).exists()


@pytest.mark.slow
def test_ten_thousand_clips_flat_memory_with_progress(tmp_path: Path) -> None:
    runs = []
    for n in (1000, 10000):
        manifest = make_dataset(tmp_path / f"d{n}", n)
        runs.append(run_import(manifest, tmp_path / f"out{n}", workers=2))
    small, large = runs
    assert (small.clips, large.clips) == (1000, 10000)
    assert "10000/10000" in large.last_progress
    # The import process holds ~1 KB of bookkeeping per clip (its list of clips), no frames.
    assert large.peak_rss_mb - small.peak_rss_mb < 0.05 * small.peak_rss_mb, runs
