"""Decoding trial clips, drawing the panel, and how a clip's saved marks are loaded."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from skimage import data

from emoflow.errors import EmoflowError, InputError
from emoflow.ingest.marks import Marks, write_marks
from emoflow.labelling.app import labeller_for, mark_trials
from emoflow.labelling.clip import load_clip
from emoflow.labelling.overlay import MIN_WIDTH, Header, render
from emoflow.labelling.state import Labeller


def write_clip(
    path: Path, frames: int = 12, size: tuple[int, int] = (96, 64), fps: int = 25
) -> None:
    """A real H.264 clip of the astronaut photo with the frame index drawn on each frame."""
    base = cv2.resize(data.astronaut(), size)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            img = base.copy()
            cv2.putText(img, str(i), (4, size[1] - 6), cv2.FONT_HERSHEY_PLAIN, 1, (255, 0, 0), 2)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "p001_000.mp4"
    write_clip(path)
    return path


def test_load_clip_decodes_every_frame_in_bgr(clip_path: Path) -> None:
    clip = load_clip(clip_path)
    assert clip.frame_count == 12 and clip.fps == pytest.approx(25)
    assert clip.frames[0].shape == (64, 96, 3) and clip.frames[0].dtype == np.uint8
    # astronaut's suit is white, the background left of her is blue-grey: BGR order is kept
    expected = cv2.cvtColor(cv2.resize(data.astronaut(), (96, 64)), cv2.COLOR_RGB2BGR)
    assert np.abs(clip.frames[0].astype(int) - expected).mean() < 12
    assert not np.array_equal(clip.frames[0], clip.frames[11])  # the drawn counter differs


def test_load_clip_rejects_a_non_video(tmp_path: Path) -> None:
    bad = tmp_path / "p001_000.mp4"
    bad.write_text("not a video")
    with pytest.raises(InputError, match="cannot decode"):
        load_clip(bad)


def header() -> Header:
    return Header("p001_000", "p001", "fear", 25.0, 1, 3, 0, 3)


def test_render_adds_a_panel_and_leaves_the_frame_untouched(clip_path: Path) -> None:
    frame = load_clip(clip_path).frames[3]
    before = frame.copy()
    lab = Labeller(12, lambda m: None)
    plain = render(frame, lab, header())
    assert np.array_equal(frame, before)
    assert plain.shape[1] == MIN_WIDTH and plain.shape[0] > frame.shape[0] + 100
    assert np.array_equal(plain[:64, :96], frame)
    for key in "sdds":  # start 0, end 2: the timeline and the text change
        lab.press(ord(key))
    marked = render(frame, lab, header())
    assert not np.array_equal(plain[64:], marked[64:])


def test_labeller_for_loads_saved_marks(clip_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "p001_000.txt"
    write_marks(path, Marks(1, 8, 4, heavy_occlusion=1))
    lab = labeller_for(load_clip(clip_path), path)
    assert lab.saved == Marks(1, 8, 4, heavy_occlusion=1) and not lab.dirty


def test_labeller_for_ignores_invalid_saved_marks_with_a_message(
    clip_path: Path, tmp_path: Path
) -> None:
    path = tmp_path / "p001_000.txt"
    path.write_text("1\t20\t4\t0\t0\t0\t0\t0\n")  # end beyond the 12 frames of the clip
    lab = labeller_for(load_clip(clip_path), path)
    assert lab.saved is None and lab.error and "E replaces them" in lab.message
    for key in "sddsse":
        lab.press(ord(key))
    assert path.read_text() == "0\t2\t2\t0\t0\t0\t0\t0\n"


def test_nothing_to_mark_needs_no_window(clip_path: Path, tmp_path: Path) -> None:
    write_marks(tmp_path / "p001_000.txt", Marks(1, 8, 4))
    mark_trials(clip_path.parent, tmp_path)  # returns without opening a window


@pytest.mark.skipif(
    not re.search(r"GUI:\s+NONE", cv2.getBuildInformation()), reason="this OpenCV has a GUI"
)
def test_headless_opencv_fails_with_a_hint(clip_path: Path, tmp_path: Path) -> None:
    with pytest.raises(EmoflowError, match="make label-env"):
        mark_trials(clip_path.parent, tmp_path)


def test_importing_the_tool_does_not_load_pyav_before_opencv() -> None:
    # PyAV loaded before cv2's GUI build makes the Qt window hang (see clip.load_clip)
    code = "import sys, emoflow.labelling.app; assert 'av' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
