"""Draw the clip's frame with an info panel below it (the face stays uncovered)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from emoflow.labelling.keys import FLAG_KEYS, HELP
from emoflow.labelling.state import MARK_ORDER, Labeller

MIN_WIDTH = 640
LINE_H = 20
BAR_H = 14
FONT = cv2.FONT_HERSHEY_SIMPLEX
SCALE = 0.45
WHITE = (255, 255, 255)
GREY = (170, 170, 170)
RED = (60, 60, 255)
GREEN = (90, 220, 90)
YELLOW = (0, 220, 255)
MARK_COLOURS = {"start": GREEN, "end": RED, "peak": YELLOW}


@dataclass(frozen=True)
class Header:
    """What the panel shows about the clip and the queue, besides the labeller's state."""

    trial_id: str
    participant: str
    emotion: str | None
    fps: float
    position: int  # 1-based place of this clip in the queue
    queued: int
    marked: int  # clips with a marks file, of ``total``
    total: int
    hint: str = ""  # a review queue's clip: what the model (and feedback) said


def _text_lines(labeller: Labeller, header: Header) -> list[tuple[str, tuple[int, int, int]]]:
    f, n = labeller.frame, labeller.frame_count
    marks = "  ".join(
        f"{name} {'-' if labeller.marks[name] is None else labeller.marks[name]}"
        for name in MARK_ORDER
    )
    nxt = labeller.next_mark
    flags = ", ".join(f"{name} ({FLAG_KEYS[name]})" for name in labeller.active_flags) or "none"
    state = "unsaved changes" if labeller.dirty else ("saved" if labeller.saved else "not saved")
    review = []
    if labeller.classes:
        keys = "  ".join(f"{i} {c}" for i, c in enumerate(labeller.classes, start=1))
        review = [(f"class: {labeller.label or '-'}  |  {header.hint}", YELLOW),
                  (f"keys: {keys}", GREY)]  # fmt: skip
    return [
        (
            f"{header.trial_id}  participant {header.participant}  expected "
            f"{header.emotion or 'unknown'}  |  clip {header.position}/{header.queued}  "
            f"marked {header.marked} of {header.total}",
            WHITE,
        ),
        (
            f"frame {f}/{n - 1} ({n} frames)  t {f / header.fps:5.2f} s / "
            f"{n / header.fps:.2f} s  |  {state}",
            WHITE,
        ),
        (f"{marks}  |  next S: {nxt or 'all set'}", WHITE),
        (f"flags: {flags}", YELLOW if labeller.active_flags else WHITE),
        *review,
        (labeller.message, RED if labeller.error else GREEN),
        *((line.format(jump=labeller.jump), GREY) for line in HELP),
    ]


def _timeline(width: int, labeller: Labeller) -> np.ndarray:
    bar = np.full((BAR_H, width, 3), 35, np.uint8)
    last = max(labeller.frame_count - 1, 1)

    def x(frame: int) -> int:
        return round(frame * (width - 1) / last)

    start, end = labeller.marks["start"], labeller.marks["end"]
    if start is not None:
        bar[:, x(start) : x(end if end is not None else labeller.frame) + 1] = (110, 110, 110)
    for name in MARK_ORDER:
        value = labeller.marks[name]
        if value is not None:
            bar[:, max(x(value) - 1, 0) : x(value) + 2] = MARK_COLOURS[name]
    bar[BAR_H // 2 :, max(x(labeller.frame) - 1, 0) : x(labeller.frame) + 2] = WHITE
    return bar


def render(frame: np.ndarray, labeller: Labeller, header: Header) -> np.ndarray:
    """A new image: the frame (not modified), a timeline of the marks and the text panel."""
    h, w = frame.shape[:2]
    width = max(w, MIN_WIDTH)
    lines = _text_lines(labeller, header)
    panel_h = BAR_H + LINE_H * len(lines) + 8
    canvas = np.zeros((h + panel_h, width, 3), np.uint8)
    canvas[:h, :w] = frame
    canvas[h : h + BAR_H] = _timeline(width, labeller)
    y = h + BAR_H + LINE_H
    for text, colour in lines:
        cv2.putText(canvas, text, (6, y - 5), FONT, SCALE, colour, 1, cv2.LINE_AA)
        y += LINE_H
    return canvas
