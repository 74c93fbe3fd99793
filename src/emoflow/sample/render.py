"""Rendering a planned session into an MP4: the animated face, the room, the camera."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emoflow.config import SampleParams
from emoflow.media.video import MediaWriter
from emoflow.sample.audio import session_audio
from emoflow.sample.expressions import (
    MOVES,
    SHOWS_TEETH,
    SPEAK,
    blink_displacement,
    displacement,
    expression_displacement,
)
from emoflow.sample.occluders import Occluder, make_occluder
from emoflow.sample.plan import SessionPlan, TrialPlan
from emoflow.sample.portraits import Portrait
from emoflow.sample.warp import Roi, backward_map, face_roi, identity_map

BLINK_FRAMES = np.array([0.35, 0.8, 1.0, 0.7, 0.3], np.float32)


@dataclass
class Motion:
    """A participant's movement at one frame: face deformation, head pose, light."""

    emotion: str | None = None
    expression: float = 0.0
    blink: float = 0.0
    speak: float = 0.0
    occluder: Occluder | None = None
    occluder_shift: float = 0.0  # pixels below its resting place (sliding in or out)
    pose: np.ndarray | None = None  # 2x3 affine of the head in the frame


class FaceRig:
    """Precomputed deformation fields of one portrait; turns a Motion into a face image."""

    def __init__(self, portrait: Portrait, expressiveness: float = 1.0) -> None:
        self.portrait = portrait
        lm = portrait.landmarks
        h, w = portrait.image.shape[:2]
        iod = portrait.iod
        self.roi: Roi = face_roi(lm, (h, w), 0.9)
        grid = identity_map(self.roi)
        self.grid = grid
        self.moves: dict[str, np.ndarray] = {
            e: expression_displacement(e, iod, expressiveness) for e in MOVES if e != "neutral"
        }
        self.moves["blink"] = blink_displacement(lm)
        self.moves["speak"] = displacement(SPEAK, iod)
        self.fields = {k: backward_map(lm, lm + d, self.roi) - grid for k, d in self.moves.items()}
        self.shades = {e: _wrinkles(e, lm + d, self.roi) for e, d in self.moves.items()}

    def face(self, m: Motion) -> np.ndarray:
        weights = [(m.emotion, m.expression), ("blink", m.blink), ("speak", m.speak)]
        active = [(k, a) for k, a in weights if k in self.fields and a > 1e-3]
        img = self.portrait.image.copy()
        if not active:
            return img
        mapping = self.grid.copy()
        for k, a in active:
            mapping += a * self.fields[k]
        roi = cv2.remap(
            self.portrait.image, mapping[..., 0], mapping[..., 1], cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        )  # fmt: skip
        lm = self.portrait.landmarks.copy()
        for k, a in active:
            lm += a * self.moves[k]
        roi = _mouth(roi, lm, self.portrait.landmarks, self.roi, m.emotion in SHOWS_TEETH)
        if m.emotion in self.shades and self.shades[m.emotion] is not None:
            shade = 1.0 - m.expression * self.shades[m.emotion]
            roi = np.clip(roi * shade[..., None], 0, 255).astype(np.uint8)
        img[self.roi.slices] = roi
        return img


def _wrinkles(emotion: str, lm: np.ndarray, roi: Roi) -> np.ndarray | None:
    """Darkening of the skin folds an expression makes (at full intensity), in the ROI."""
    iod = float(np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0)))
    lines: list[tuple[np.ndarray, np.ndarray]] = []
    if emotion == "anger":  # vertical glabella lines
        for i, j in ((21, 31), (22, 35)):
            top = lm[i] + [0.0, -0.05 * iod]
            lines.append((top, top + 0.3 * (lm[j] - lm[i]) * [0.1, 1.0]))
    elif emotion == "disgust":  # nose-bridge wrinkles and deep nasolabial folds
        for k in range(3):
            y = lm[27, 1] + (0.08 + 0.1 * k) * iod
            half = 0.18 * iod
            lines.append((np.array([lm[27, 0] - half, y]), np.array([lm[27, 0] + half, y])))
        lines += [(lm[31] + [-0.1 * iod, 0], lm[48] + [-0.05 * iod, 0]),
                  (lm[35] + [0.1 * iod, 0], lm[54] + [0.05 * iod, 0])]  # fmt: skip
    elif emotion == "happiness":  # nasolabial folds, crow's feet
        for nose, corner, sgn in ((31, 48, -1), (35, 54, 1)):
            lines.append((lm[nose] + [sgn * 0.15 * iod, -0.05 * iod],
                          lm[corner] + [sgn * 0.12 * iod, 0.1 * iod]))  # fmt: skip
        for eye, sgn in ((36, -1), (45, 1)):
            for dy in (-0.08, 0.0, 0.08):
                p = lm[eye] + [sgn * 0.1 * iod, dy * iod]
                lines.append((p, p + [sgn * 0.15 * iod, dy * 0.8 * iod]))
    elif emotion in ("surprise", "fear"):  # horizontal forehead lines
        top = lm[17:27, 1].min()
        span = (0.35, 0.55, 0.75) if emotion == "surprise" else (0.35, 0.55)
        for dy in span:
            y = top - dy * iod
            lines.append((np.array([lm[19, 0], y]), np.array([lm[24, 0], y])))
    elif emotion == "sadness":  # oblique lines above the inner brows
        for i, sgn in ((21, -1), (22, 1)):
            p = lm[i] + [0.0, -0.2 * iod]
            lines.append((p, p + [sgn * 0.3 * iod, -0.1 * iod]))
    if not lines:
        return None
    h, w = roi.shape
    shade = np.zeros((h, w), np.float32)
    off = np.array([roi.x0, roi.y0], np.float64)
    for a, b in lines:
        cv2.line(shade, tuple(np.int32(a - off)), tuple(np.int32(b - off)), 0.22,
                 max(1, int(0.04 * iod)), cv2.LINE_AA)  # fmt: skip
    return cv2.GaussianBlur(shade, (0, 0), 0.025 * iod + 0.5)


def _mouth(roi_img: np.ndarray, lm: np.ndarray, lm0: np.ndarray, roi: Roi, teeth: bool
           ) -> np.ndarray:  # fmt: skip
    """Paint the mouth cavity (and upper teeth) where the inner lips have parted."""
    gap = (lm[66, 1] - lm[62, 1]) - (lm0[66, 1] - lm0[62, 1])
    if gap < 1.5:
        return roi_img
    inner = (lm[60:68] - [roi.x0, roi.y0]).astype(np.float32)
    # Work on the mouth's box only: the rest of the face is untouched.
    x0, y0 = np.maximum(0, np.floor(inner.min(0)).astype(int) - 3)
    x1, y1 = np.ceil(inner.max(0)).astype(int) + 4
    box = roi_img[y0:y1, x0:x1]
    h, w = box.shape[:2]
    inner -= [x0, y0]
    mask = np.zeros((h, w), np.float32)
    cv2.fillPoly(mask, [np.int32(np.round(inner))], 1.0, cv2.LINE_AA)
    layer = np.empty((h, w, 3), np.float32)
    layer[:] = (38, 30, 62)  # dark red-brown of the mouth cavity
    if teeth:
        upper = inner[[0, 1, 2, 3, 4]]
        depth = min(0.45 * gap, 0.14 * np.ptp(inner[:, 0]))
        band = np.concatenate([upper, upper[::-1] + [0, depth]])
        tmask = np.zeros((h, w), np.float32)
        cv2.fillPoly(tmask, [np.int32(np.round(band))], 1.0, cv2.LINE_AA)
        tmask = cv2.GaussianBlur(tmask, (3, 3), 0)[..., None]
        layer = layer * (1 - tmask) + np.array((200, 214, 226), np.float32) * tmask
    a = np.minimum(1.0, gap / 6.0) * cv2.GaussianBlur(mask, (3, 3), 0)[..., None]
    out = roi_img.copy()
    out[y0:y1, x0:x1] = (box * (1 - a) + layer * a).astype(np.uint8)
    return out


def _smooth_noise(n: int, rng: np.random.Generator, periods: tuple[float, ...], fps: int
                  ) -> np.ndarray:  # fmt: skip
    """Sum of sines with random phases: slow, natural-looking drift in [-1, 1]."""
    t = np.arange(n) / fps
    out = np.zeros(n)
    for p in periods:
        out += np.sin(2 * np.pi * t / (p * rng.uniform(0.8, 1.25)) + rng.uniform(0, 2 * np.pi))
    return (out / len(periods)).astype(np.float32)


class Camera:
    """Head motion, lighting drift and sensor noise of one session."""

    def __init__(self, n: int, fps: int, size: tuple[int, int], centre: np.ndarray,
                 rng: np.random.Generator) -> None:  # fmt: skip
        self.rot = 1.8 * _smooth_noise(n, rng, (7.0, 3.1, 1.7), fps)
        self.tx = 6.0 * _smooth_noise(n, rng, (9.0, 4.3, 2.2), fps)
        self.ty = 3.5 * _smooth_noise(n, rng, (6.0, 2.9), fps)
        self.scale = 1.0 + 0.012 * _smooth_noise(n, rng, (11.0, 5.0), fps)
        self.gain = 1.0 + 0.07 * _smooth_noise(n, rng, (37.0, 13.0), fps)
        self.slope = 0.08 * _smooth_noise(n, rng, (53.0, 23.0), fps)
        self.warmth = 0.03 * _smooth_noise(n, rng, (71.0,), fps)
        self.centre = centre
        w, h = size
        self.x = np.linspace(-0.5, 0.5, w, dtype=np.float32)
        self.noise = [rng.normal(0, 2.8, (h, w, 3)).astype(np.float32) for _ in range(12)]
        self.rng = rng

    def pose(self, i: int, extra_rot: float = 0.0, extra_shift: float = 0.0) -> np.ndarray:
        m = cv2.getRotationMatrix2D(
            (float(self.centre[0]), float(self.centre[1])),
            float(self.rot[i] + extra_rot), float(self.scale[i]),
        )  # fmt: skip
        m[0, 2] += self.tx[i] + extra_shift
        m[1, 2] += self.ty[i] + 0.3 * abs(extra_shift)
        return m

    def expose(self, img: np.ndarray, i: int) -> np.ndarray:
        col = self.gain[i] * (1.0 + self.slope[i] * self.x)  # per column
        chan = np.array([1 + self.warmth[i], 1.0, 1 - self.warmth[i]], np.float32)
        mult = col[None, :, None] * chan[None, None, :]
        out = img.astype(np.float32) * mult + self.noise[int(self.rng.integers(len(self.noise)))]
        return np.clip(out, 0, 255).astype(np.uint8)


def _trial_events(trial: TrialPlan, window: int, rng: np.random.Generator) -> dict:
    """Per-trial frame ranges of the limb movement and the look-away ('other')."""
    ev: dict = {}
    if trial.flags["abnormal_limb"]:
        a = int(rng.integers(0, window // 2))
        ev["limb"] = (a, a + int(rng.integers(window // 4, window // 2)))
    if trial.flags["other"]:
        a = int(rng.integers(0, window // 2))
        length = int(rng.integers(window // 6, window // 3))
        ev["away"] = (a, a + length, float(rng.choice([-1, 1])))
    return ev


def _ramp(i: int, a: int, b: int, edge: int) -> float:
    """1 inside [a, b], ramping over ``edge`` frames at both ends, 0 outside."""
    if i < a - edge or i > b + edge:
        return 0.0
    if i < a:
        return (i - (a - edge)) / edge
    if i > b:
        return ((b + edge) - i) / edge
    return 1.0


def render_session(
    plan: SessionPlan, portrait: Portrait, expressiveness: float, params: SampleParams,
    path: Path,
) -> dict[str, float]:  # fmt: skip
    """Write the session video to ``path``; return measured occluder coverage per trial id."""
    rng = np.random.default_rng([params.seed, plan.index, 2])
    fps = params.fps
    size = (params.width, params.height)
    rig = FaceRig(portrait, expressiveness)
    lm = portrait.landmarks
    camera = Camera(plan.n_frames, fps, size, lm[27:36].mean(0), rng)
    shape = portrait.image.shape[:2]
    window = plan.trial_frames
    per_frame: list[Motion] = [Motion() for _ in range(plan.n_frames)]
    coverages: dict[str, float] = {}
    slide = round(0.3 * fps)
    for trial in plan.trials:
        curve = trial.curve(window)
        occ = None
        if trial.occluder:
            occ = make_occluder(
                lm, shape, trial.occluder_target, trial.occluder, portrait.skin, rng
            )
            coverages[trial.trial_id] = occ.coverage
        ev = _trial_events(trial, window, rng)
        limb = make_occluder(lm, shape, 0.0, "limb", portrait.skin, rng) if "limb" in ev else None
        # The hand or object stays up while the expression plays (a labeller's occlusion).
        marks = trial.marks(window)
        occ_a = max(slide, marks.start - round(0.3 * fps))
        occ_b = min(window - slide, marks.end + round(0.3 * fps))
        for k in range(window):
            i = trial.onset_frame + k
            if i >= plan.n_frames:
                break
            m = per_frame[i]
            m.emotion, m.expression = trial.rendered_emotion, float(curve[k])
            if occ is not None:
                r = _ramp(k, occ_a, occ_b, slide)
                if r > 0:
                    m.occluder, m.occluder_shift = occ, (1 - r) * 0.6 * params.height
            if limb is not None and m.occluder is None:
                a, b = ev["limb"]
                r = _ramp(k, a, b, slide)
                if r > 0:
                    wobble = 0.08 * portrait.iod * np.sin(2 * np.pi * k / (0.5 * fps))
                    m.occluder, m.occluder_shift = limb, (1 - r) * 0.5 * params.height + wobble
            if "away" in ev:
                a, b, sgn = ev["away"]
                r = _ramp(k, a, b, round(0.25 * fps))
                if r > 0:
                    m.pose = camera.pose(i, sgn * 9.0 * r, sgn * 0.45 * portrait.iod * r)
    for f0, f1 in plan.speech:
        for i in range(f0, min(f1, plan.n_frames)):
            syllable = np.sin(2 * np.pi * (i - f0) / (0.22 * fps))
            per_frame[i].speak = float(0.4 + 0.4 * syllable)
    for b in plan.blinks:
        for j, v in enumerate(BLINK_FRAMES):
            if b + j < plan.n_frames:
                per_frame[b + j].blink = float(v)
    audio = session_audio(plan, params)
    per = params.sample_rate / fps
    w, h = size
    with MediaWriter(path, fps, w, h, params.sample_rate, params.crf) as writer:
        for i, m in enumerate(per_frame):
            img = rig.face(m)
            if m.occluder is not None:
                img = _composite(img, m.occluder, m.occluder_shift)
            pose = m.pose if m.pose is not None else camera.pose(i)
            img = cv2.warpAffine(img, pose, size, flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT101)  # fmt: skip
            writer.write_frame(camera.expose(img, i))
            writer.write_audio(audio[round(i * per) : round((i + 1) * per)])
    return coverages


def _composite(img: np.ndarray, occ: Occluder, shift: float) -> np.ndarray:
    """Lay the occluder over the image, ``shift`` pixels lower than its resting place."""
    alpha, colour = occ.alpha, occ.colour
    if shift > 0.5:
        m = np.float32([[1, 0, 0], [0, 1, shift]])
        h, w = alpha.shape
        alpha = cv2.warpAffine(alpha, m, (w, h))
        colour = cv2.warpAffine(colour, m, (w, h))
    a = alpha[..., None]
    return (img * (1 - a) + colour * a).astype(np.uint8)
