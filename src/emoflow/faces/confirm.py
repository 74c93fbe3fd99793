"""Cheap checks that a tracked face box still holds the face it was detected on.

Landmark tracking always returns a shape, even on a black frame or the sky after a cut, so a
tracked box is kept only when (1) no scene cut separates the frame from the previous one (mean
absolute difference of tiny grayscale thumbnails) and (2) the box's grayscale patch still
correlates with the patch of the last detection (zero-mean normalised cross-correlation, which
ignores brightness and contrast changes). Both cost well under a millisecond a frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from emoflow.faces.detect import Box

THUMB = (32, 24)  # frame thumbnail for the cut test (w, h)
PATCH = 24  # side of the face patch for the appearance test
_FLAT = 0.5  # a patch with less spread (grey levels) than this has no structure: no face


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """A tiny grayscale version of the whole frame (float32, grey levels)."""
    # Grey first: area-averaging one channel costs a third of three (0.6 → 0.2 ms a 640×480
    # frame here); the two orders differ by at most one grey level a thumbnail pixel.
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)


def cut_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey-level difference of two thumbnails (0–255)."""
    return float(np.abs(a - b).mean())


def face_patch(rgb: np.ndarray, box: Box) -> np.ndarray:
    """The box's content as a ``PATCH``² grayscale float32 patch (empty if off the frame)."""
    h, w = rgb.shape[:2]
    x0, y0 = max(0, round(box.left)), max(0, round(box.top))
    x1, y1 = min(w, round(box.right)), min(h, round(box.bottom))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((0, 0), np.float32)
    crop = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    return cv2.resize(crop, (PATCH, PATCH), interpolation=cv2.INTER_AREA).astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Zero-mean normalised cross-correlation of two patches, in [-1, 1]; 0 for a flat one."""
    if a.shape != b.shape or a.size == 0:
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    if a.std() < _FLAT or b.std() < _FLAT:
        return 0.0
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))
