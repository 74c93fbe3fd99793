"""dlib's face descriptor ResNet-29, re-implemented in PyTorch from dlib's own file, against dlib
itself on real face photographs."""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np
import pytest
import torch

from emoflow.errors import InputError
from emoflow.faces import dlib_models
from emoflow.models.dlib_format import read_dlib_net
from emoflow.models.dlib_resnet import (
    CHIP_PADDING,
    CHIP_SIZE,
    DlibResNet29,
    dlib_input,
    dlib_resnet29,
    load_weights,
    pad_add,
)


def _photos() -> list[np.ndarray]:
    import matplotlib
    import skimage.data
    from PIL import Image

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return [skimage.data.astronaut(), np.asarray(Image.open(hopper).convert("RGB"))]


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    """150-px chips cut as dlib cuts them for its descriptor (5-point landmarks, padding 0.25)."""
    out = []
    for img in _photos():
        boxes = dlib_models.hog_detector()(img, 0)
        assert len(boxes) == 1
        shape = dlib_models.shape_predictor_5()(img, boxes[0])
        out.append(dlib.get_face_chip(img, shape, CHIP_SIZE, CHIP_PADDING))
    return np.stack(out)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> DlibResNet29:
    return dlib_resnet29(cache_dir=tmp_path_factory.mktemp("weights"))


def test_matches_dlib_on_real_faces(model: DlibResNet29, chips: np.ndarray) -> None:
    reference = np.stack([np.asarray(dlib_models.face_descriptor().compute_face_descriptor(c))
                          for c in chips])  # fmt: skip
    with torch.no_grad():
        ours = model(dlib_input(chips)).numpy()
    assert ours.shape == (2, 128)
    assert np.abs(ours - reference).max() <= 1e-4
    # Two different people: the descriptors are far apart by dlib's own 0.6 threshold.
    assert np.linalg.norm(ours[0] - ours[1]) > 0.6


def test_features_are_the_pooled_layer_before_the_embedding(model: DlibResNet29,
                                                            chips: np.ndarray) -> None:
    with torch.no_grad():
        feats = model.features(dlib_input(chips))
        assert feats.shape == (2, 256)
        assert torch.allclose(model.fc(feats), model(dlib_input(chips)))
    assert bool((feats >= 0).all())  # after a ReLU and an average


def test_residual_sum_zero_pads_top_left() -> None:
    a = torch.ones(1, 4, 3, 3)
    b = torch.full((1, 2, 4, 4), 2.0)
    s = pad_add(a, b)
    assert s.shape == (1, 4, 4, 4)
    assert torch.equal(s[:, :2, :3, :3], torch.full((1, 2, 3, 3), 3.0))
    assert torch.equal(s[:, 2:, :3, :3], torch.ones(1, 2, 3, 3))  # channels only a has
    assert torch.equal(s[:, :2, 3, :], torch.full((1, 2, 4), 2.0))  # the row only b has
    assert float(s[:, 2:, 3, :].abs().sum()) == 0.0


def test_conversion_is_cached_by_the_files_hash(tmp_path: Path) -> None:
    first = load_weights(cache_dir=tmp_path)
    cached = list(tmp_path.glob("dlib_resnet29-*.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    second = load_weights(cache_dir=tmp_path)
    assert cached[0].stat().st_mtime_ns == stamp  # read back, not converted again
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    # Deterministic: a fresh conversion gives the same tensors.
    again = load_weights(cache_dir=tmp_path / "other")
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_converting_or_reading_back_leaves_the_callers_rng_alone(tmp_path: Path) -> None:
    """A model built after loading the weights starts the same on a cold cache as on a warm
    one (a cold conversion once shifted FAN's heads' init: 0.720 against 0.880 on the sample)."""
    draws = []
    for _ in ("cold", "warm"):
        torch.manual_seed(0)
        load_weights(cache_dir=tmp_path)
        draws.append(torch.rand(4))
    torch.manual_seed(0)
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0], torch.rand(4))


def test_file_layers_are_read_in_order() -> None:
    net = read_dlib_net(dlib_models.face_descriptor_file())
    assert net.input_size == (150, 150)
    kinds = [layer.kind for layer in net.layers]
    assert kinds == [kind for kind, _ in DlibResNet29().dlib_layers()]
    assert sum(k == "con_4" for k in kinds) == 29  # the name: 29 convolutions (+ the fc)
    assert net.layers[0].tensors["weight"].shape == (32, 3, 7, 7)


@pytest.mark.parametrize("damage", ["truncated", "other_model", "garbage"])
def test_a_wrong_file_is_refused_by_name(tmp_path: Path, damage: str) -> None:
    source = dlib_models.face_descriptor_file().read_bytes()
    bad = tmp_path / f"{damage}.dat"
    if damage == "truncated":
        bad.write_bytes(source[: len(source) // 2])
    elif damage == "other_model":
        bad.write_bytes((dlib_models.face_descriptor_file().parent
                         / "shape_predictor_5_face_landmarks.dat").read_bytes())  # fmt: skip
    else:
        bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(InputError) as info:
        load_weights(bad, cache_dir=tmp_path / "cache")
    assert str(bad) in str(info.value)
    assert not list((tmp_path / "cache").glob("*.pt"))  # nothing half-written
