"""Deep-Emotion: layer layout, STN identity start, N(0, 0.05) init, regularised loss, dropout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from emoflow.models import DeepEmotion, build_deep_emotion

C = 7


@pytest.fixture
def model() -> DeepEmotion:
    torch.manual_seed(0)
    return build_deep_emotion(C)


def test_paper_layout_for_48x48_grayscale(model: DeepEmotion) -> None:
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(10, (3, 3))] * 4
    pair = ["Conv2d", "Conv2d", "MaxPool2d", "ReLU"]
    assert [type(m).__name__ for m in model.features] == pair * 2
    assert model.fc1.in_features == 10 * 9 * 9
    loc = [m for m in model.stn.localisation if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in loc] == [(8, (7, 7)), (10, (5, 5))]
    assert model.stn.regressor[0].in_features == 10 * 8 * 8
    assert model.stn.regressor[0].out_features == 32
    assert model.stn.regressor[-1].out_features == 6


def test_output_shape_and_other_input_sizes(model: DeepEmotion) -> None:
    assert model(torch.randn(4, 1, 48, 48)).shape == (4, C)
    rgb = build_deep_emotion(3, input_size=64, channels=3)
    assert rgb(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"expects images \(N, 1, 48, 48\)"):
        model(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match="too small"):
        build_deep_emotion(C, input_size=16)


def test_stn_starts_at_identity(model: DeepEmotion) -> None:
    x = torch.rand(3, 1, 48, 48)
    theta = model.stn.theta(x)
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(3, 2, 3)
    assert torch.equal(theta, identity)
    assert torch.allclose(model.stn(x), x, atol=1e-5)


def test_init_is_normal_0_05_with_zero_biases(model: DeepEmotion) -> None:
    w = model.fc1.weight  # 810 × 50 = 40 500 draws: the std estimate is good to ~2e-4
    assert abs(w.std().item() - 0.05) < 0.002
    assert abs(w.mean().item()) < 0.002
    convs = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, nn.Conv2d)])
    assert abs(convs.std().item() - 0.05) < 0.005
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear) and m is not model.stn.regressor[-1]:
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    last = model.stn.regressor[-1]
    assert torch.equal(last.weight, torch.zeros_like(last.weight))
    assert last.bias.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def test_regularisation_and_loss(model: DeepEmotion) -> None:
    manual = sum(float((p.detach() ** 2).sum()) for p in (model.fc1.weight, model.fc2.weight))
    assert model.regularisation().item() == pytest.approx(manual, rel=1e-5)
    logits, target = torch.randn(4, C), torch.tensor([0, 1, 2, 6])
    ce = F.cross_entropy(logits, target)
    assert model.loss(logits, target, lam=0.0).item() == pytest.approx(ce.item())
    assert model.loss(logits, target, lam=0.01).item() == pytest.approx(
        ce.item() + 0.01 * manual, rel=1e-5
    )


def test_dropout_only_in_training(model: DeepEmotion) -> None:
    x = torch.randn(4, 1, 48, 48)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    first = model(x)
    torch.manual_seed(2)
    assert not torch.allclose(first, model(x))


def test_gradients_reach_stn_and_regularised_layers(model: DeepEmotion) -> None:
    x, target = torch.rand(4, 1, 48, 48), torch.tensor([0, 1, 2, 3])
    model.loss(model(x), target, lam=1e-3).backward()
    for p in (model.fc1.weight, model.fc2.weight, model.features[0].weight,
              model.stn.regressor[-1].weight):  # fmt: skip
        assert p.grad is not None
        assert p.grad.abs().sum() > 0
    # The zero last layer blocks gradient into the localisation net until it has moved.
    assert model.stn.localisation[0].weight.grad is not None
    assert model.stn.localisation[0].weight.grad.abs().sum() == 0


def test_stn_grid_is_pytorchs_affine_grid_and_sampling(model: DeepEmotion) -> None:
    """The MatMul grid (what TensorRT can parse) against F.affine_grid / F.grid_sample, for
    learnt-looking (non-identity) transforms; model files keep their keys."""
    torch.manual_seed(1)
    nn.init.normal_(model.stn.regressor[-1].weight, 0.0, 0.05)
    x = torch.randn(6, 1, 48, 48)
    theta = model.stn.theta(x)
    assert (theta - torch.tensor([1.0, 0, 0, 0, 1, 0]).view(2, 3)).abs().max() > 0.05
    want_grid = F.affine_grid(theta, [6, 1, 48, 48], align_corners=False)
    assert torch.allclose(model.stn.grid(theta), want_grid, atol=1e-6)
    want = F.grid_sample(x, want_grid, align_corners=False)
    # float32 rounding of the grid (~1e-7) times the noise image's steep pixel steps
    assert (model.stn(x) - want).abs().max() < 1e-4
    rgb = build_deep_emotion(3, input_size=64, channels=3)
    t = torch.randn(2, 2, 3)
    assert torch.allclose(rgb.stn.grid(t), F.affine_grid(t, [2, 3, 64, 64], align_corners=False),
                          atol=1e-6)  # fmt: skip
    assert not any("base_grid" in k for k in model.state_dict())
