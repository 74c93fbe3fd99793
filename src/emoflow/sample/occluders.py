"""Things that cover a face in a real recording: a hand (with fingers and thumb) or an object."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def face_box(lm: np.ndarray) -> tuple[int, int, int, int]:
    """``x0, y0, x1, y1`` of the face: jaw sides, chin, and the forehead just above the brows."""
    iod = float(np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0)))
    x0, x1 = lm[0:17, 0].min(), lm[0:17, 0].max()
    y0, y1 = lm[17:27, 1].min() - 0.25 * iod, lm[0:17, 1].max()
    return int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))


def coverage(mask: np.ndarray, lm: np.ndarray) -> float:
    """Share of the face box that ``mask`` (values in [0, 1]) covers."""
    x0, y0, x1, y1 = face_box(lm)
    h, w = mask.shape
    box = mask[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    area = max(1, (y1 - y0) * (x1 - x0))
    return float((box > 0.5).sum()) / area


def _capsule(mask: np.ndarray, p0: np.ndarray, p1: np.ndarray, width: float) -> None:
    cv2.line(mask, tuple(np.int32(p0)), tuple(np.int32(p1)), 1.0, max(1, int(width)), cv2.LINE_AA)
    for p in (p0, p1):
        cv2.circle(mask, tuple(np.int32(p)), max(1, int(width / 2)), 1.0, -1, cv2.LINE_AA)


def hand_mask(shape: tuple[int, int], base: np.ndarray, size: float, angle: float) -> np.ndarray:
    """A hand seen from its back, fingers up: palm, four fingers, thumb. ``base`` = wrist."""
    mask = np.zeros(shape, np.float32)
    rot = np.deg2rad(angle)
    up = np.array([np.sin(rot), -np.cos(rot)])
    side = np.array([np.cos(rot), np.sin(rot)])
    palm_c = base + up * 0.55 * size
    cv2.ellipse(mask, tuple(np.int32(palm_c)), (int(0.45 * size), int(0.55 * size)),
                angle, 0, 360, 1.0, -1, cv2.LINE_AA)  # fmt: skip
    for i, (length, spread) in enumerate(((0.75, -9), (0.85, -3), (0.8, 3), (0.62, 9))):
        offset = (i - 1.5) * 0.22 * size
        root = palm_c + up * 0.42 * size + side * offset
        d = np.deg2rad(angle + spread)
        tip = root + np.array([np.sin(d), -np.cos(d)]) * length * size
        _capsule(mask, root, tip, 0.2 * size)
    thumb_root = palm_c - side * 0.35 * size
    d = np.deg2rad(angle - 50)
    _capsule(mask, thumb_root, thumb_root + np.array([np.sin(d), -np.cos(d)]) * 0.6 * size,
             0.24 * size)  # fmt: skip
    # the forearm leaves the frame downwards
    _capsule(mask, base, base - up * 3.0 * size, 0.8 * size)
    return cv2.GaussianBlur(mask, (3, 3), 0)


def object_mask(shape: tuple[int, int], base: np.ndarray, size: float, angle: float) -> np.ndarray:
    """A book or clipboard held up in front of the face."""
    mask = np.zeros(shape, np.float32)
    rect = ((float(base[0]), float(base[1] - 1.0 * size)), (1.6 * size, 2.0 * size), angle)
    cv2.fillConvexPoly(mask, np.int32(cv2.boxPoints(rect)), 1.0, cv2.LINE_AA)
    return cv2.GaussianBlur(mask, (3, 3), 0)


@dataclass(frozen=True)
class Occluder:
    """A rendered occluder in face coordinates: alpha mask and colour layer of one canvas."""

    alpha: np.ndarray  # (H, W) float32
    colour: np.ndarray  # (H, W, 3) float32 BGR
    coverage: float


def _colour_layer(alpha: np.ndarray, colour: tuple[int, int, int], rng: np.random.Generator
                  ) -> np.ndarray:  # fmt: skip
    h, w = alpha.shape
    ys = np.linspace(0.85, 1.12, h, dtype=np.float32)[:, None, None]
    tex = cv2.GaussianBlur(rng.normal(0, 6, (h, w)).astype(np.float32), (0, 0), 1.5)[..., None]
    # edge darkening gives the occluder volume
    edge = cv2.GaussianBlur(alpha, (0, 0), 4.0)[..., None]
    return np.array(colour, np.float32)[None, None] * ys * (0.8 + 0.2 * edge) + tex


def make_occluder(
    lm: np.ndarray,
    shape: tuple[int, int],
    target: float,
    kind: str,
    skin: tuple[int, int, int],
    rng: np.random.Generator,
) -> Occluder:
    """An occluder covering close to ``target`` of the face box, coming up from below.

    ``kind`` is "hand" (over mouth and nose), "object" (held in front of the face) or
    "limb" (a hand at the side of the head: abnormal limb behaviour, little coverage).
    """
    iod = float(np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0)))
    x0, _, x1, y1 = face_box(lm)
    cx = (x0 + x1) / 2 + rng.uniform(-0.15, 0.15) * (x1 - x0)
    if kind == "limb":
        sgn = rng.choice([-1.0, 1.0])
        base = np.array([(x0 if sgn < 0 else x1) + sgn * 0.55 * iod, y1 + 0.3 * iod])
        alpha = hand_mask(shape, base, 1.3 * iod, -sgn * 12.0)
        colour = tuple(int(c) for c in np.clip(np.array(skin) * rng.uniform(0.9, 1.05), 0, 255))
        return Occluder(alpha, _colour_layer(alpha, colour, rng), coverage(alpha, lm))  # type: ignore[arg-type]
    size = iod * (1.5 if kind == "hand" else 1.3)  # a hand is about as long as a face
    angle = rng.uniform(-15, 15)
    draw = hand_mask if kind == "hand" else object_mask
    # Raise the occluder from below the chin until it covers the target share (monotone);
    # a face too wide for it gets a bigger one.
    for grow in (1.0, 1.2, 1.45, 1.75):
        lo, hi = y1 - 1.0 * iod, y1 + 3.5 * iod
        for _ in range(14):
            mid = (lo + hi) / 2
            if coverage(draw(shape, np.array([cx, mid]), size * grow, angle), lm) < target:
                hi = mid
            else:
                lo = mid
        alpha = draw(shape, np.array([cx, lo]), size * grow, angle)
        if coverage(alpha, lm) >= target:
            break
    if kind == "hand":
        colour = tuple(int(c) for c in np.clip(np.array(skin) * rng.uniform(0.9, 1.05), 0, 255))
    else:
        colour = tuple(int(v) for v in rng.integers(30, 140, 3))
    return Occluder(alpha, _colour_layer(alpha, colour, rng), coverage(alpha, lm))  # type: ignore[arg-type]
