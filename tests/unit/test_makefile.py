"""The Makefile's way to run DVC stages from a fresh shell: the venv's `emoflow` on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def _make(*args: str) -> str:
    # A fresh shell: the venv is not activated, so `emoflow` is not on PATH.
    env = {"HOME": os.environ.get("HOME", "/tmp"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), *args], env=env,
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_exp_runs_a_dvc_experiment_with_the_given_params() -> None:
    args = "-S sample.participants=10 -S trim.exclude_flags='[heavy_occlusion]'"
    assert f".venv/bin/dvc exp run {args}" in _make("-n", "exp", f"ARGS={args}")


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "emoflow").exists(), reason="no .venv")
def test_stage_commands_under_make_find_the_venvs_emoflow() -> None:
    """dvc.yaml's stages call plain `emoflow` (exit 127 outside an activated venv before)."""
    out = _make("--eval", "where-emoflow: ; @command -v emoflow", "where-emoflow")
    assert Path(out.strip()) == ROOT / ".venv" / "bin" / "emoflow"
