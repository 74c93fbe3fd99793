"""The OpenCV window: show the current frame and panel, turn key presses into labeller events.

Needs OpenCV's GUI build (``make label-env``); the headless build in the main venv fails at
:func:`open_window` with a one-line hint instead of a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import cv2

from emoflow.errors import EmoflowError
from emoflow.labelling.clip import Clip
from emoflow.labelling.overlay import Header, render
from emoflow.labelling.state import Labeller, Outcome

log = logging.getLogger(__name__)

WINDOW = "emoflow mark"
# Short enough that a held key (auto-repeat) keeps stepping smoothly, long enough to idle cheaply.
WAIT_MS = 15
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts")


def open_window(name: str = WINDOW) -> None:
    if "av" in sys.modules:  # see emoflow.labelling.clip.load_clip
        log.warning("PyAV was imported before OpenCV's GUI: the window may hang")
    # Qt looks for fonts inside the wheel, which ships none, and warns again and again; it draws
    # none of our text (OpenCV renders that itself), so any system font folder quiets it.
    fonts = next((d for d in FONT_DIRS if Path(d).is_dir()), None)
    if fonts:
        os.environ.setdefault("QT_QPA_FONTDIR", fonts)
    try:
        cv2.namedWindow(name, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
    except cv2.error as exc:
        raise EmoflowError(
            "this OpenCV has no GUI (the headless build the services use); run `make label-env` "
            "and use .venv-label/bin/emoflow mark (see docs/labelling.md)"
        ) from exc


def close_window(name: str = WINDOW) -> None:
    try:
        cv2.destroyWindow(name)
    except cv2.error:  # already closed by the user
        return
    cv2.waitKey(1)  # let the GUI thread process the close


def _closed(name: str) -> bool:
    try:
        return cv2.getWindowProperty(name, cv2.WND_PROP_VISIBLE) < 1
    except cv2.error:  # some backends raise once the window is gone
        return True


def run_clip(
    clip: Clip, labeller: Labeller, header: Callable[[], Header], name: str = WINDOW
) -> Outcome:
    """Show ``clip`` until the labeller quits it, stops, or the window is closed (= stop)."""
    shown: tuple[str, bool] | None = None
    cv2.imshow(name, render(clip.frames[labeller.frame], labeller, header()))
    while True:
        key = cv2.waitKeyEx(WAIT_MS)
        if _closed(name):
            log.info("window closed: stopping")
            return Outcome.STOP
        if key == -1:
            continue
        outcome = labeller.press(key)
        if labeller.message and (labeller.message, labeller.error) != shown:
            shown = (labeller.message, labeller.error)
            log.log(logging.WARNING if labeller.error else logging.INFO, "%s", labeller.message)
        if outcome is not Outcome.CONTINUE:
            return outcome
        cv2.imshow(name, render(clip.frames[labeller.frame], labeller, header()))
