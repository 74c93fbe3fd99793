"""The real labelling window under Xvfb, driven with real key events (xdotool).

Runs in the GUI venv (``make label-env``: OpenCV's GUI build); skipped with the reason when that
venv, Xvfb or xdotool is missing, and failed instead under CI, which installs them (.ci/run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import pytest
from skimage import data

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[2]
LABEL_PYTHON = Path(os.environ.get("EMOFLOW_LABEL_PYTHON", ROOT / ".venv-label" / "bin" / "python"))
TITLE = "^emoflow mark$"
KEY_DELAY_MS = 150  # OpenCV's Qt loop keeps only the last key between two waitKey polls


def _missing() -> str | None:
    if not LABEL_PYTHON.exists():
        return f"no GUI venv at {LABEL_PYTHON} (make label-env)"
    for tool in ("Xvfb", "xdotool"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install xvfb xdotool libgl1)"
    return None


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the GUI test: {reason}")
        pytest.skip(reason)
    read_fd, write_fd = os.pipe()
    # -displayfd: Xvfb picks a free display number and writes it to the pipe once ready
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        xvfb.kill()
        pytest.fail("Xvfb did not start")
    try:
        yield f":{number}"
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)


def write_clip(path: Path, frames: int = 40, size: tuple[int, int] = (320, 240)) -> None:
    base = cv2.resize(data.astronaut(), size)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            img = base.copy()
            cv2.putText(img, f"{i}", (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 0), 3)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())


class MarkSession:
    """One ``emoflow mark`` process in the GUI venv, with its window found on ``display``."""

    def __init__(self, display: str, args: list[str], cwd: Path) -> None:
        self.env = {**os.environ, "DISPLAY": display, "PYTHONPATH": str(ROOT / "src")}
        self.log = cwd / f"mark-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen(
            [str(LABEL_PYTHON), "-m", "emoflow.cli", "mark", *args],
            cwd=cwd,
            env=self.env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )
        self.window = self._find_window()

    def _xdotool(self, *args: str, timeout: float = 10) -> str:
        out = subprocess.run(
            ["xdotool", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        return out.stdout.strip()

    def _find_window(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"emoflow mark exited early:\n{self.output()}")
            ids = self._xdotool("search", "--onlyvisible", "--name", TITLE).split()
            if ids:
                self._xdotool("windowfocus", "--sync", ids[0])
                time.sleep(0.5)  # the first frame is drawn after the window maps
                return ids[0]
            time.sleep(0.2)
        self.proc.kill()
        pytest.fail(f"no window titled {TITLE}:\n{self.output()}")

    def keys(self, *names: str) -> None:
        """Real key events (XTEST) to the focused window, in order."""
        self._xdotool("key", "--delay", str(KEY_DELAY_MS), *names, timeout=60)

    def wait(self, timeout: float = 30) -> str:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"emoflow mark did not exit:\n{self.output()}")
        output = self.output()
        assert rc == 0, output
        return output

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    folder = tmp_path / "trials"
    folder.mkdir()
    for trial_id in ("p001_000", "p001_001"):
        write_clip(folder / f"{trial_id}.mp4")
    return folder


def test_mark_a_clip_with_real_keys_then_reopen_it(
    display: str, clips: Path, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    done = marks / "p001_001.txt"
    done.write_text("2\t30\t9\t0\t0\t1\t0\t0\n")
    args = [str(clips), "--marks-dir", str(marks)]

    # first run: the marked clip is skipped; save is refused until start, end, peak are set
    session = MarkSession(display, args, tmp_path)
    session.keys("e")
    session.keys(*["d"] * 5, "s", "f", "s", *["a"] * 5, "s")  # start 5, end 15, peak 10
    session.keys("g", "u", "u", "e", "q")  # non_correlating on, low_occlusion on and off
    out = session.wait()
    assert (marks / "p001_000.txt").read_text() == "5\t15\t10\t1\t0\t0\t0\t0\n"
    assert "1 of 2 clips marked; opening 1" in out
    assert "not saved: mark start, end, peak first" in out
    assert "2 of 2 clips marked" in out
    assert done.read_text() == "2\t30\t9\t0\t0\t1\t0\t0\n"

    # second run with --all: saved marks are loaded; unsaved changes survive no quit
    session = MarkSession(display, [*args, "--all"], tmp_path)
    session.keys("x", "e", "q")  # p001_000: add "other" and save
    session.keys("w", "Escape", "Escape")  # p001_001: reset, then leave without saving
    out = session.wait()
    assert (marks / "p001_000.txt").read_text() == "5\t15\t10\t1\t0\t0\t0\t1\n"
    assert done.read_text() == "2\t30\t9\t0\t0\t1\t0\t0\n"
    assert "unsaved changes: Esc again leaves without saving" in out
    assert sorted(p.name for p in marks.iterdir()) == ["p001_000.txt", "p001_001.txt"]
