"""Piecewise-affine warps driven by landmarks, as dense backward maps for ``cv2.remap``."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay


@dataclass(frozen=True)
class Roi:
    """A rectangle of the canvas: ``x0 <= x < x1``, ``y0 <= y < y1``."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0


def face_roi(landmarks: np.ndarray, canvas_shape: tuple[int, int], margin: float = 1.0) -> Roi:
    """A box around the face, ``margin`` face sizes wider on each side, clipped to the canvas."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    size = hi - lo
    lo = lo - margin * size * np.array([0.6, 1.0])  # more room above: brows rise
    hi = hi + margin * size * np.array([0.6, 0.6])
    h, w = canvas_shape
    return Roi(
        max(0, int(lo[0])), max(0, int(lo[1])), min(w, int(np.ceil(hi[0]))), min(h, int(hi[1]))
    )


def anchor_points(roi: Roi, n_ring: int = 24) -> np.ndarray:
    """Fixed points that pin the warp to zero at the ROI's border."""
    cx, cy = (roi.x0 + roi.x1 - 1) / 2, (roi.y0 + roi.y1 - 1) / 2
    rx, ry = (roi.x1 - roi.x0 - 1) / 2, (roi.y1 - roi.y0 - 1) / 2
    ang = np.linspace(0, 2 * np.pi, n_ring, endpoint=False)
    ring = np.stack([cx + 0.97 * rx * np.cos(ang), cy + 0.97 * ry * np.sin(ang)], 1)
    corners = np.array(
        [[roi.x0, roi.y0], [roi.x1 - 1, roi.y0], [roi.x0, roi.y1 - 1], [roi.x1 - 1, roi.y1 - 1]],
        dtype=np.float64,
    )
    return np.concatenate([ring, corners]).astype(np.float32)


def backward_map(src: np.ndarray, dst: np.ndarray, roi: Roi) -> np.ndarray:
    """For every ROI pixel of the warped image, its source position: ``(h, w, 2)`` float32.

    ``src`` and ``dst`` are matching point sets (landmarks); the map sends each triangle of the
    destination triangulation affinely onto its source triangle. ROI border stays fixed.
    Triangles are rasterised into a label image, so the cost is one pass over the pixels.
    """
    anchors = anchor_points(roi)
    dst_all = np.concatenate([dst, anchors]).astype(np.float64)
    src_all = np.concatenate([src, anchors]).astype(np.float64)
    simplices = Delaunay(dst_all).simplices
    h, w = roi.shape
    off = np.array([roi.x0, roi.y0], np.float64)
    labels = np.full((h, w), -1, np.int32)
    affines = np.zeros((len(simplices) + 1, 2, 3), np.float64)
    affines[-1] = [[1, 0, 0], [0, 1, 0]]  # label -1: outside every triangle, stays in place
    for k, tri in enumerate(simplices):
        d, s = dst_all[tri], src_all[tri]
        (ax, ay), (bx, by) = d[1] - d[0], d[2] - d[0]
        if abs(ax * by - ay * bx) < 1e-9:
            continue  # degenerate triangle: nothing to fill
        affines[k] = cv2.getAffineTransform(d.astype(np.float32), s.astype(np.float32))
        cv2.fillConvexPoly(labels, np.round((d - off) * 16).astype(np.int32), k, cv2.LINE_8, 4)
    ys, xs = np.mgrid[roi.y0 : roi.y1, roi.x0 : roi.x1].astype(np.float64)
    a = affines[labels]  # (h, w, 2, 3)
    out = np.empty((h, w, 2), np.float32)
    out[..., 0] = a[..., 0, 0] * xs + a[..., 0, 1] * ys + a[..., 0, 2]
    out[..., 1] = a[..., 1, 0] * xs + a[..., 1, 1] * ys + a[..., 1, 2]
    return out


def identity_map(roi: Roi) -> np.ndarray:
    ys, xs = np.mgrid[roi.y0 : roi.y1, roi.x0 : roi.x1].astype(np.float32)
    return np.stack([xs, ys], -1)


def remap_roi(image: np.ndarray, mapping: np.ndarray, roi: Roi) -> np.ndarray:
    """A copy of ``image`` whose ROI is resampled at ``mapping`` (absolute source positions)."""
    out = image.copy()
    out[roi.slices] = cv2.remap(
        image, mapping[..., 0], mapping[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    return out


def warp_image(image: np.ndarray, src: np.ndarray, dst: np.ndarray, roi: Roi) -> np.ndarray:
    """Move the landmarks ``src`` of ``image`` to ``dst`` (one-shot warp)."""
    return remap_roi(image, backward_map(src, dst, roi), roi)
