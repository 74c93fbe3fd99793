"""MediaPipe's 478 landmarks as FAN's expression features (``train.fan.expression``): normalised
so a face's place and size in the chip drop out, on real photographs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from emoflow.config import load_params
from emoflow.faces import dlib_models
from emoflow.faces.align import chip as face_chip
from emoflow.models import build_fan

pytest.importorskip("mediapipe")
from emoflow.faces import blendshapes as bs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    """A 224-px chip as the faces stage cuts it (68-point landmarks, padding 0.25)."""
    import matplotlib
    from PIL import Image

    img = np.asarray(Image.open(Path(matplotlib.get_data_path()) / "sample_data"
                                / "grace_hopper.jpg").convert("RGB"))  # fmt: skip
    box = dlib_models.hog_detector()(img, 0)[0]
    return face_chip(img, dlib_models.shape_predictor_68()(img, box), 224, 0.25)


def test_normalisation_drops_place_and_size_keeps_shape() -> None:
    rng = np.random.default_rng(0)
    lm = rng.random((2, bs.NUM_LANDMARKS, 3)).astype(np.float32)
    moved = lm * 0.5 + np.array([0.2, 0.1, 0.0], np.float32)  # the face smaller, elsewhere
    a, b = bs.normalise_landmarks(lm), bs.normalise_landmarks(moved)
    assert a.shape == (2, bs.NUM_LANDMARKS * 3)
    np.testing.assert_allclose(a, b, atol=1e-5)
    pts = a[0].reshape(-1, 3)
    np.testing.assert_allclose(pts.mean(0), 0, atol=1e-5)
    i, j = bs.EYE_CORNERS
    assert abs(np.linalg.norm(pts[i, :2] - pts[j, :2]) - 1) < 1e-5
    other = lm.copy()
    other[:, 0, 1] += 0.3  # one point moves: the shape changed
    assert np.abs(bs.normalise_landmarks(other) - a).max() > 0.1


def test_landmark_features_of_a_real_face(hopper: np.ndarray) -> None:
    lm, missed = bs.extractor().expression([hopper], "landmarks")
    both, _ = bs.extractor().expression([hopper], "both")
    scores, _ = bs.extractor().blendshapes([hopper])
    assert missed == 0 and lm.shape == (1, bs.EXPRESSION_DIMS["landmarks"]) == (1, 1434)
    np.testing.assert_allclose(both[0, :52], scores[0])
    np.testing.assert_allclose(both[0, 52:], lm[0])
    pts = lm[0].reshape(-1, 3)
    i, j = bs.EYE_CORNERS
    assert abs(np.linalg.norm(pts[i, :2] - pts[j, :2]) - 1) < 1e-4
    # the subject's right eye corner (33) is on the image's left
    assert pts[i, 0] < 0 < pts[j, 0]
    # the same face, half the size in a bigger chip: (nearly) the same features
    small = np.zeros_like(hopper)
    small[56:168, 56:168] = hopper[::2, ::2]
    lm_small, missed = bs.extractor().expression([small], "landmarks")
    assert missed == 0
    assert np.abs(lm_small - lm).mean() < 0.05 * np.abs(lm).mean()


def test_no_face_gives_zero_landmark_features(hopper: np.ndarray) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    out, missed = bs.extractor().expression([noise, hopper], "both")
    assert missed == 1 and out[0].sum() == 0 and np.abs(out[1]).sum() > 0
    with pytest.raises(ValueError, match="unknown expression"):
        bs.extractor().expression([hopper], "mesh")


def test_fan_takes_landmark_features() -> None:
    fan = build_fan(3, features="blendshapes", expression="landmarks").eval()
    assert fan.trunk is None and fan.feature_dim == 1434
    assert fan(torch.rand(2, 4, 1434)).shape == (2, 3)
    fused = build_fan(3, backbone="dlib_resnet29", features="fused", expression="both")
    assert fused.feature_dim == 256 + 1486 and fused.expression_dim == 1486


def test_appearance_ignores_the_expression_setting(tmp_path: Path) -> None:
    """`features: appearance` alone turns MediaPipe off, whatever `expression` says (the
    default is both): no expression input, nothing about it in model.pt."""
    from emoflow.training.tasks import FanTask

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["fan"].update(features="appearance", expression="landmarks")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    task = FanTask(load_params(path).train.fan, 0)
    model = task.build(3)
    assert model.expression_dim == 0 and model.feature_dim == model.trunk_dim
    assert "expression" not in task.model_config() and "expression" not in task.backbone_info()
