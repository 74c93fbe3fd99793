"""Footage without faces, and cuts to it, from images that ship with scikit-image (offline).

Real camera clips hold more than faces: a cut to black, the sky, the room. These builders make
such frames for the tests and ``bench/faces.py``: photographs panned slowly across the frame
(``coffee``, ``rocket``, ``chelsea``), a sky-like gradient, black.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from emoflow.media.video import MediaWriter

SCENES = ("coffee", "rocket", "sky", "black", "chelsea")


def sky(size: tuple[int, int]) -> np.ndarray:
    """A clear sky: a vertical blue gradient, brighter towards the horizon (RGB, ``size`` w×h)."""
    w, h = size
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    top, horizon = np.float32([70, 120, 200]), np.float32([190, 215, 240])
    return np.broadcast_to(top + (horizon - top) * t, (h, w, 3)).astype(np.uint8)


def scene(name: str, size: tuple[int, int]) -> np.ndarray:
    """One still of ``SCENES`` at ``size`` (w, h), RGB uint8."""
    if name == "sky":
        return sky(size)
    if name == "black":
        return np.zeros((size[1], size[0], 3), np.uint8)
    return cv2.resize(getattr(skimage.data, name)(), size, interpolation=cv2.INTER_AREA)


def pan(image: np.ndarray, n: int, step: float = 2.0) -> Iterator[np.ndarray]:
    """``n`` frames of ``image`` moving ``step`` px a frame to the right (a slow camera pan)."""
    h, w = image.shape[:2]
    for i in range(n):
        m = np.float32([[1, 0, step * i], [0, 1, 0]])
        yield cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def faceless(n: int, size: tuple[int, int] = (640, 480), first: int = 0) -> list[np.ndarray]:
    """``n`` frames without a face: each scene of ``SCENES`` in turn (from the ``first``),
    panned, cut to the next."""
    per = -(-n // len(SCENES))
    k = first % len(SCENES)
    order = SCENES[k:] + SCENES[:k]
    frames = [f for name in order for f in pan(scene(name, size), per)]
    return frames[:n]


def cut_away(face_frames: list[np.ndarray], black: int = 3,
             sky_frames: int = 12) -> list[np.ndarray]:  # fmt: skip
    """``face_frames``, then a cut to ``black`` black frames, then a cut to the sky."""
    size = (face_frames[0].shape[1], face_frames[0].shape[0])
    return [*face_frames, *[scene("black", size)] * black,
            *pan(scene("sky", size), sky_frames)]  # fmt: skip


def write_clip(path: Path, rgb_frames: list[np.ndarray], fps: int = 30) -> Path:
    """Encode RGB frames into an H.264 MP4, as the sample's clips are."""
    h, w = rgb_frames[0].shape[:2]
    with MediaWriter(path, fps, w, h) as out:
        for f in rgb_frames:
            out.write_frame(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return path
