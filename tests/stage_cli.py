"""The installed ``emoflow`` command, run in the test's process, and its one-line errors."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from emoflow.cli import run
from emoflow.media.video import MediaWriter

FPS, W, H = 10, 64, 48
TRIAL = "p001_001"
TRIAL_ROW = {"trial_id": TRIAL, "participant": "p001", "trial": 1, "emotion": "anger",
             "beep_s": "0.5000", "fps": FPS, "frames": 8, "duration_s": "0.8000", "width": W,
             "height": H}  # fmt: skip


def emoflow(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
            ) -> tuple[int, str]:  # fmt: skip
    """Exit code and stderr of ``emoflow <args>`` through its entry point (``emoflow.cli:run``)."""
    monkeypatch.setattr(sys, "argv", ["emoflow", *args])
    capsys.readouterr()
    try:
        run()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *words: str) -> str:
    """Exit 2, no traceback, one ``error:`` line (the last), holding every one of ``words``."""
    assert code == 2, err
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


def write_clip(path: Path, frames: int = 8, audio: bool = True) -> None:
    """A real H.264 (+ AAC) file: grey frames that no face detector boxes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with MediaWriter(path, FPS, W, H, 16000 if audio else None) as w:
        for i in range(frames):
            w.write_frame(np.full((H, W, 3), 40 + 10 * i, np.uint8))
            if audio:
                w.write_audio(np.zeros(16000 // FPS, np.float32))


def write_csv(path: Path, columns: list[str] | tuple[str, ...], rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), restval="")
        w.writeheader()
        w.writerows(rows)
    return path
