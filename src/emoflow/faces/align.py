"""Landmarks and aligned face chips with dlib's ``get_face_chip`` semantics.

A chip puts the eyes level and at the same place in every chip; ``padding`` enlarges the face
box (0.25 = 25 %), ``size`` is the chip's side.
"""

from __future__ import annotations

import dlib
import numpy as np

from emoflow.faces.detect import Box
from emoflow.faces.dlib_models import shape_predictor_5, shape_predictor_68, shape_to_array


def predictor(points: int) -> dlib.shape_predictor:
    return shape_predictor_68() if points == 68 else shape_predictor_5()


def landmarks(rgb: np.ndarray, box: Box, points: int = 68) -> dlib.full_object_detection:
    return predictor(points)(rgb, box.to_dlib())


def chip(rgb: np.ndarray, shape: dlib.full_object_detection, size: int = 224,
         padding: float = 0.25) -> np.ndarray:  # fmt: skip
    """The aligned face: rotated upright, scaled to ``size``², box enlarged by ``padding``."""
    # dlib takes only C-contiguous arrays (a cropped or padded-row frame is a TypeError).
    return dlib.get_face_chip(np.ascontiguousarray(rgb), shape, size=size, padding=padding)


def landmark_box(points: np.ndarray) -> Box:
    lo, hi = points.min(0), points.max(0)
    return Box(float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def box_from_landmarks(points: np.ndarray, relation: tuple[float, float, float, float]) -> Box:
    """A detector-like box from landmarks, by the box/landmark relation of the last detection.

    The shape predictor is trained on detector boxes, so tracked frames must feed it boxes of
    the same kind, not the landmarks' own bounding box.
    """
    lb = landmark_box(points)
    w, h = lb.right - lb.left, lb.bottom - lb.top
    dl, dt, dr, db = relation
    return Box(lb.left + dl * w, lb.top + dt * h, lb.right + dr * w, lb.bottom + db * h)


def box_relation(box: Box, points: np.ndarray) -> tuple[float, float, float, float]:
    """How a detector box sits around its landmarks, in landmark-box units (see above)."""
    lb = landmark_box(points)
    w, h = max(lb.right - lb.left, 1.0), max(lb.bottom - lb.top, 1.0)
    return ((box.left - lb.left) / w, (box.top - lb.top) / h, (box.right - lb.right) / w,
            (box.bottom - lb.bottom) / h)  # fmt: skip


def shape_points(shape: dlib.full_object_detection) -> np.ndarray:
    return shape_to_array(shape)
