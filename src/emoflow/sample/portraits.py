"""Participants of the sample: identities derived from real photographs that ship in packages.

Two portraits are available offline (skimage's astronaut, matplotlib's Grace Hopper). New,
distinct-looking identities come from landmark-aligned face morphs between them, mirroring,
face-geometry changes (jaw, eyes, nose, mouth), skin-tone shifts, camera distance and room.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import cv2
import numpy as np

from emoflow.faces.dlib_models import hog_detector, shape_predictor_68, shape_to_array
from emoflow.sample.expressions import close_mouth_displacement, displacement
from emoflow.sample.warp import face_roi, warp_image

# iBUG 68-point mirror permutation: index i of a flipped face is landmark MIRROR[i].
MIRROR = np.array(
    [*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
     45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
     54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)  # fmt: skip


@dataclass(frozen=True)
class Photo:
    image: np.ndarray  # BGR uint8
    landmarks: np.ndarray  # (68, 2)


def detect_landmarks(bgr: np.ndarray) -> np.ndarray:
    """68 landmarks of the largest face dlib's HOG detector finds."""
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    dets = hog_detector()(rgb, 1)
    if not dets:
        raise RuntimeError("no face found in source photo")
    box = max(dets, key=lambda r: r.area())
    return shape_to_array(shape_predictor_68()(rgb, box))


@cache
def source_photo(name: str) -> Photo:
    """A real portrait shipped inside an installed package, with its landmarks."""
    if name == "astronaut":
        import skimage.data

        img = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    elif name == "hopper":
        from matplotlib import cbook

        img = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    else:
        raise KeyError(name)
    lm = detect_landmarks(img)
    if name == "astronaut":
        # Her portrait smiles with open lips: close and relax the mouth for a neutral base.
        iod = _iod(lm)
        relax = displacement(
            [((48, 54), -0.05, 0.05), ((60, 64), -0.04, 0.04), ((49, 53), 0.0, 0.03)], iod
        )
        target = lm + relax + close_mouth_displacement(lm + relax)
        img = warp_image(img, lm, target, face_roi(lm, img.shape[:2], 0.5))
        lm = target
    return Photo(img, lm.astype(np.float32))


SOURCES = ("astronaut", "hopper")


@dataclass(frozen=True)
class Identity:
    """How one participant's face is derived from the source photos."""

    base: str
    partner: str | None = None
    morph: float = 0.0  # share of the partner's face shape and appearance
    mirror: bool = False
    iod: float = 84.0  # inter-ocular distance in pixels (camera distance)
    eye_x: float = 0.5  # eye midpoint, as a share of the frame width / height
    eye_y: float = 0.40
    jaw: float = 1.0  # face width
    eyes: float = 1.0  # eye size
    nose: float = 0.0  # nose length change, IOD units
    mouth: float = 1.0  # mouth width
    tone: tuple[float, float, float] = (1.0, 0.0, 0.0)  # L scale, a shift, b shift (Lab)
    room: int = 0  # background seed
    expressiveness: float = 1.0
    wall: tuple[int, int, int] = field(default=(180, 185, 190))


# Eight hand-picked recipes give clearly different people; more participants draw at random.
RECIPES: tuple[Identity, ...] = (
    Identity("astronaut", iod=86, wall=(178, 186, 196)),
    Identity("hopper", iod=82, wall=(150, 160, 150), expressiveness=0.9),
    Identity("astronaut", "hopper", 0.45, mirror=True, iod=80, jaw=1.08, tone=(0.82, 6, 14),
             wall=(200, 190, 170), eye_x=0.46),
    Identity("hopper", "astronaut", 0.5, iod=88, eyes=1.08, nose=-0.04, tone=(1.05, -2, -6),
             wall=(120, 130, 145), eye_x=0.54),
    Identity("astronaut", None, 0.0, mirror=True, iod=90, jaw=0.93, mouth=1.08, nose=0.05,
             tone=(0.62, 9, 20), wall=(170, 200, 210), expressiveness=1.1),
    Identity("hopper", "astronaut", 0.25, mirror=True, iod=78, jaw=1.1, eyes=0.94,
             tone=(0.9, 4, 10), wall=(205, 205, 200)),
    Identity("astronaut", "hopper", 0.7, iod=84, jaw=0.96, eyes=1.1, mouth=0.94,
             tone=(1.08, -3, -4), wall=(140, 150, 170), eye_x=0.53, expressiveness=1.15),
    Identity("hopper", None, 0.0, mirror=True, iod=86, jaw=0.92, nose=-0.06, mouth=1.1,
             tone=(0.72, 7, 16), wall=(185, 175, 160), eye_y=0.42),
)  # fmt: skip


def identity_for(index: int, rng: np.random.Generator) -> Identity:
    """The recipe of participant ``index`` (0-based); past the fixed eight, a random one."""
    if index < len(RECIPES):
        return RECIPES[index]
    base, partner = rng.permutation(SOURCES)
    return Identity(
        base=str(base),
        partner=str(partner) if rng.random() < 0.7 else None,
        morph=float(rng.uniform(0.2, 0.7)),
        mirror=bool(rng.random() < 0.5),
        iod=float(rng.uniform(76, 92)),
        eye_x=float(rng.uniform(0.45, 0.55)),
        eye_y=float(rng.uniform(0.37, 0.43)),
        jaw=float(rng.uniform(0.9, 1.1)),
        eyes=float(rng.uniform(0.92, 1.1)),
        nose=float(rng.uniform(-0.06, 0.06)),
        mouth=float(rng.uniform(0.92, 1.1)),
        tone=(float(rng.uniform(0.6, 1.1)), float(rng.uniform(-3, 9)), float(rng.uniform(-6, 20))),
        room=int(rng.integers(1 << 30)),
        expressiveness=float(rng.uniform(0.85, 1.15)),
        wall=tuple(int(v) for v in rng.integers(110, 215, 3)),  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Portrait:
    """A participant's neutral face in the camera frame."""

    image: np.ndarray  # (H, W, 3) BGR uint8
    landmarks: np.ndarray  # (68, 2)
    skin: tuple[int, int, int]  # mean BGR of the cheeks, for hands

    @property
    def iod(self) -> float:
        return _iod(self.landmarks)


def _iod(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0)))


def _aligned(photo: Photo, ident: Identity, size: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """The photo scaled, rotated and moved so its eyes sit where the identity wants them."""
    img, lm = photo.image, photo.landmarks
    if ident.mirror:
        img = img[:, ::-1].copy()
        lm = lm.copy()
        lm[:, 0] = img.shape[1] - 1 - lm[:, 0]
        lm = lm[MIRROR]
    w, h = size
    left, right = lm[36:42].mean(0), lm[42:48].mean(0)
    target_l = np.array([ident.eye_x * w - ident.iod / 2, ident.eye_y * h])
    target_r = target_l + [ident.iod, 0.0]
    m, _ = cv2.estimateAffinePartial2D(np.stack([left, right]), np.stack([target_l, target_r]))
    warped = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpAffine(np.full(img.shape[:2], 255, np.uint8), m, (w, h), borderValue=0)
    lm_out = (np.c_[lm, np.ones(len(lm))] @ m.T).astype(np.float32)
    return warped, mask, lm_out


def _face_mask(lm: np.ndarray, shape: tuple[int, int], feather: float) -> np.ndarray:
    """Soft mask of the face: jaw line closed over the raised brows."""
    brows = lm[17:27].copy()
    brows[:, 1] -= 0.25 * _iod(lm)
    hull = cv2.convexHull(np.concatenate([lm[0:17], brows]).astype(np.int32))
    mask = np.zeros(shape, np.float32)
    cv2.fillConvexPoly(mask, hull, 1.0)
    k = int(feather) | 1
    return cv2.GaussianBlur(mask, (k, k), 0)


def _match_colour(src: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give ``src`` the Lab mean and spread of ``ref`` inside ``mask``."""
    sel = mask > 0.5
    s = cv2.cvtColor(src, cv2.COLOR_BGR2LAB).astype(np.float32)
    r = cv2.cvtColor(ref, cv2.COLOR_BGR2LAB).astype(np.float32)
    ms, ss = s[sel].mean(0), s[sel].std(0) + 1e-3
    mr, sr = r[sel].mean(0), r[sel].std(0) + 1e-3
    out = (s - ms) / ss * sr + mr
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)


def _shape_target(lm: np.ndarray, ident: Identity) -> np.ndarray:
    """Landmarks moved by the identity's face-geometry changes."""
    out = lm.copy()
    cx = lm[27:31, 0].mean()
    jaw = list(range(0, 17))
    out[jaw, 0] = cx + (lm[jaw, 0] - cx) * ident.jaw
    for eye in (range(36, 42), range(42, 48)):
        e = list(eye)
        c = lm[e].mean(0)
        out[e] = c + (lm[e] - c) * ident.eyes
    iod = _iod(lm)
    out[30:36, 1] += ident.nose * iod
    mouth = list(range(48, 68))
    mc = lm[mouth, 0].mean()
    out[mouth, 0] = mc + (lm[mouth, 0] - mc) * ident.mouth
    out[mouth, 1] += 0.5 * ident.nose * iod
    return out


def _room(ident: Identity, size: tuple[int, int]) -> np.ndarray:
    """A plain lab wall: the identity's colour, a soft light falloff, a door frame and a poster."""
    w, h = size
    rng = np.random.default_rng(ident.room)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(-0.2, 0.3) * h
    fall = 1.0 - 0.35 * np.hypot(xs - cx, ys - cy) / np.hypot(w, h)
    room = np.array(ident.wall, np.float32)[None, None] * fall[..., None]
    x0 = int(rng.uniform(0.02, 0.25) * w)
    cv2.rectangle(room, (x0, int(0.05 * h)), (x0 + int(0.18 * w), h), (70, 80, 95), -1)
    px = int(rng.uniform(0.65, 0.85) * w)
    cv2.rectangle(room, (px, int(0.1 * h)), (px + 70, int(0.1 * h) + 95),
                  tuple(float(v) for v in rng.integers(60, 230, 3)), -1)  # fmt: skip
    room += rng.normal(0, 2.0, room.shape).astype(np.float32)
    return np.clip(cv2.GaussianBlur(room, (0, 0), 2.0), 0, 255).astype(np.uint8)


def _apply_tone(img: np.ndarray, lm: np.ndarray, tone: tuple[float, float, float]) -> np.ndarray:
    """Shift the skin's colour (face, neck, ears), leaving hair, eyes, clothes and room."""
    if tone == (1.0, 0.0, 0.0):
        return img
    h, w = img.shape[:2]
    iod = _iod(lm)
    region = _face_mask(lm, (h, w), feather=1)
    neck = np.array(
        [lm[4], lm[12], lm[12] + [0, 1.6 * iod], lm[4] + [0, 1.6 * iod]], np.int32
    )
    cv2.fillConvexPoly(region, neck, 1.0)
    region = cv2.dilate(region, np.ones((int(0.3 * iod) | 1,) * 2, np.uint8))
    ycc = cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb)
    skin = ((ycc[..., 1] > 133) & (ycc[..., 1] < 180) & (ycc[..., 2] > 77) & (ycc[..., 2] < 135))
    weight = cv2.GaussianBlur(region * skin.astype(np.float32), (0, 0), 0.08 * iod)[..., None]
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB).astype(np.float32)
    shifted = lab.copy()
    shifted[..., 0] *= tone[0]
    shifted[..., 1] += tone[1]
    shifted[..., 2] += tone[2]
    lab = lab * (1 - weight) + shifted * weight
    return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)


def build_portrait(ident: Identity, size: tuple[int, int]) -> Portrait:
    """Render the identity's neutral face into a ``size = (width, height)`` camera frame."""
    w, h = size
    base_img, base_mask, base_lm = _aligned(source_photo(ident.base), ident, size)
    target = base_lm
    partner = None
    if ident.partner and ident.morph > 0:
        partner = _aligned(source_photo(ident.partner), ident, size)
        target = (1 - ident.morph) * base_lm + ident.morph * partner[2]
    target = _shape_target(target, ident)
    roi = face_roi(np.concatenate([base_lm, target]), (h, w), 0.6)
    face = warp_image(base_img, base_lm, target, roi)
    if partner is not None:
        p_img, _, p_lm = partner
        p_face = warp_image(p_img, p_lm, target, roi)
        inner = _face_mask(target, (h, w), feather=0.3 * ident.iod)
        p_face = _match_colour(p_face, face, inner)
        a = (ident.morph * inner)[..., None]
        face = (face * (1 - a) + p_face * a).astype(np.uint8)
    face = _apply_tone(face, target, ident.tone)
    # The photo sits in front of the lab wall; its edges fade into the wall.
    mask = cv2.GaussianBlur(cv2.erode(base_mask, np.ones((15, 15), np.uint8)), (31, 31), 0)
    m = (mask.astype(np.float32) / 255.0)[..., None]
    image = (face * m + _room(ident, size) * (1 - m)).astype(np.uint8)
    cheeks = np.concatenate([target[[2, 3, 31]], target[[14, 13, 35]]]).mean(0).astype(int)
    patch = image[cheeks[1] - 4 : cheeks[1] + 5, cheeks[0] - 20 : cheeks[0] + 21].reshape(-1, 3)
    skin = tuple(int(v) for v in np.median(patch, 0))
    return Portrait(image, target.astype(np.float32), skin)  # type: ignore[arg-type]
