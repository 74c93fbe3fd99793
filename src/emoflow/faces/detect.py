"""Face detection with dlib: HOG first, then HOG on a contrast-enhanced frame, then the CNN.

The fallback order follows the official FAN alignment code; detection may run on a downscaled
frame (boxes are scaled back), which is where most of the time of a naive loop goes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import dlib
import numpy as np

from emoflow.faces.dlib_models import cnn_detector, hog_detector

DETECTORS = ("hog", "hog_clahe", "cnn")


@dataclass(frozen=True)
class Box:
    left: float
    top: float
    right: float
    bottom: float

    @property
    def area(self) -> float:
        return max(0.0, self.right - self.left) * max(0.0, self.bottom - self.top)

    def iou(self, other: Box) -> float:
        w = min(self.right, other.right) - max(self.left, other.left)
        h = min(self.bottom, other.bottom) - max(self.top, other.top)
        inter = max(0.0, w) * max(0.0, h)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def scaled(self, s: float) -> Box:
        return Box(self.left * s, self.top * s, self.right * s, self.bottom * s)

    def to_dlib(self) -> dlib.rectangle:
        return dlib.rectangle(round(self.left), round(self.top), round(self.right),
                              round(self.bottom))  # fmt: skip

    @staticmethod
    def from_dlib(r: dlib.rectangle) -> Box:
        return Box(r.left(), r.top(), r.right(), r.bottom())


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float
    detector: str
    faces: int = 1  # how many faces the detector saw in the frame (``pick`` chose one)


_CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))


def enhance(rgb: np.ndarray) -> np.ndarray:
    """Contrast-limited histogram equalisation of the luminance (for dark or flat frames)."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    lab[..., 0] = _CLAHE.apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


# dlib's detectors are not safe to call from two threads at once (its docs); the faces loop and
# the thread that detects ahead of it (``faces.ahead``) share the process's HOG detector.
_HOG_LOCK = threading.Lock()


def downscaled(rgb: np.ndarray, scale: float) -> np.ndarray:
    """The frame detection runs on."""
    if scale >= 1.0:
        return rgb
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def hog_candidates(rgb: np.ndarray, scale: float = 1.0, upsample: int = 0
                   ) -> list[tuple[Box, float]]:  # fmt: skip
    """HOG's faces in ``rgb`` downscaled by ``scale``, in the downscaled frame's pixels."""
    return _candidates(downscaled(rgb, scale), "hog", upsample)


def _candidates(rgb: np.ndarray, detector: str, upsample: int) -> list[tuple[Box, float]]:
    if detector == "cnn":
        return [(Box.from_dlib(d.rect), float(d.confidence))
                for d in cnn_detector()(rgb, upsample)]  # fmt: skip
    img = enhance(rgb) if detector == "hog_clahe" else rgb
    with _HOG_LOCK:
        rects, scores, _ = hog_detector().run(img, upsample, 0.0)
    return [(Box.from_dlib(r), float(s)) for r, s in zip(rects, scores, strict=True)]


def pick(cands: list[tuple[Box, float]], previous: Box | None) -> tuple[Box, float]:
    """The face consistent with the previous frames; without history, the largest, surest one."""
    if previous is not None:
        best = max(cands, key=lambda c: c[0].iou(previous))
        if best[0].iou(previous) > 0.3:
            return best
    return max(cands, key=lambda c: c[0].area * (1.0 + max(c[1], 0.0)))


def detect(
    rgb: np.ndarray,
    scale: float = 1.0,
    upsample: int = 0,
    clahe: bool = True,
    cnn: bool = True,
    previous: Box | None = None,
    ran: list[str] | None = None,
    hog: list[tuple[Box, float]] | None = None,
) -> Detection | None:
    """Detect one face in an RGB frame through the fallback chain; ``None`` when all fail.

    The names of the detectors that ran are appended to ``ran`` (the caller's budget). ``hog``:
    HOG's candidates on this frame when they were found ahead (``hog_candidates``).
    """
    small: np.ndarray | None = None
    prev_small = previous.scaled(scale) if previous is not None else None
    chain = ["hog"] + (["hog_clahe"] if clahe else []) + (["cnn"] if cnn else [])
    for name in chain:
        if ran is not None:
            ran.append(name)
        if name == "hog" and hog is not None:
            cands = hog
        else:
            small = downscaled(rgb, scale) if small is None else small
            cands = _candidates(small, name, upsample)
        if cands:
            box, score = pick(cands, prev_small)
            return Detection(box.scaled(1.0 / scale), score, name, len(cands))
    return None
