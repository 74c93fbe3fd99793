"""FAN: shapes, attention weights, masking, dropout modes, backbone loading, gradients."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from emoflow.errors import InputError
from emoflow.models import FAN, FANOutput, build_fan, build_model
from emoflow.models.backbone import load_trunk_weights

C = 5
SIDE = 64


def frames(b: int, t: int, side: int = SIDE, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, t, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def fan() -> FAN:
    torch.manual_seed(0)
    return build_fan(C).eval()


def test_logits_and_weights_shapes(fan: FAN) -> None:
    x = frames(2, 4)
    logits = fan(x)
    assert isinstance(logits, torch.Tensor)
    assert logits.shape == (2, C)
    out = fan(x, return_weights=True)
    assert isinstance(out, FANOutput)
    assert torch.equal(out.logits, logits)
    assert out.alpha.shape == (2, 4)
    assert out.beta is not None and out.beta.shape == (2, 4)
    for w in (out.alpha, out.beta):
        assert bool(((w > 0) & (w < 1)).all())
    assert torch.allclose(out.frame_weights.sum(dim=1), torch.ones(2))
    assert fan.classifier.in_features == 1024


def test_other_frame_sizes_are_accepted(fan: FAN) -> None:
    assert fan(frames(1, 2, side=224)).shape == (1, C)
    assert fan(torch.randn(1, 2, 3, 96, 80)).shape == (1, C)


def test_self_attention_only_variant() -> None:
    model = build_fan(C, relation=False).eval()
    out = model(frames(2, 3), return_weights=True)
    assert out.logits.shape == (2, C)
    assert out.beta is None
    assert model.beta_fc is None
    assert model.classifier.in_features == 512
    assert bool(((out.alpha > 0) & (out.alpha < 1)).all())
    assert torch.allclose(out.frame_weights, out.alpha / out.alpha.sum(1, keepdim=True))


def test_clip_vector_uses_alpha_beta_weighting_in_eval(fan: FAN) -> None:
    """The α·β weighting (paper), not the official eval code's α-only numerator."""
    x = frames(1, 3)
    out = fan(x, return_weights=True)
    f = fan.trunk(x[0])  # (3, 512)
    f_v = (out.alpha[0, :, None] * f).sum(0) / out.alpha[0].sum()
    pairs = torch.cat([f, f_v.expand_as(f)], dim=1)
    w = out.alpha[0] * out.beta[0]
    clip = (w[:, None] * pairs).sum(0) / w.sum()
    assert torch.allclose(fan.classifier(clip), out.logits[0], atol=1e-5)
    alpha_only = (out.alpha[0, :, None] * pairs).sum(0) / w.sum()
    assert not torch.allclose(fan.classifier(alpha_only), out.logits[0], atol=1e-3)


@pytest.mark.parametrize("relation", [True, False])
def test_padded_masked_clip_equals_unpadded_clip(relation: bool) -> None:
    torch.manual_seed(1)
    model = build_fan(C, relation=relation).eval()
    short, full = frames(1, 3, seed=1), frames(1, 5, seed=2)
    garbage = torch.full((1, 2, 3, SIDE, SIDE), float("nan"))
    garbage[:, 0] = 1e6
    batch = torch.cat([torch.cat([short, garbage], dim=1), full], dim=0)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out = model(batch, mask, return_weights=True)
    ref_short = model(short, return_weights=True)
    ref_full = model(full, return_weights=True)
    assert torch.allclose(out.logits[0], ref_short.logits[0], atol=1e-5)
    assert torch.allclose(out.logits[1], ref_full.logits[0], atol=1e-5)
    assert torch.allclose(out.alpha[0, :3], ref_short.alpha[0], atol=1e-6)
    assert torch.equal(out.alpha[0, 3:], torch.zeros(2))
    if relation:
        assert torch.allclose(out.beta[0, :3], ref_short.beta[0], atol=1e-6)
        assert torch.equal(out.beta[0, 3:], torch.zeros(2))


def test_padding_does_not_reach_batchnorm_in_training() -> None:
    """Padded frames never enter the trunk, so training-mode BN statistics ignore them."""
    torch.manual_seed(2)
    model = build_fan(C, dropout=0.0).train()
    short = frames(1, 3, seed=3)
    padded = torch.cat([short, torch.randn(1, 2, 3, SIDE, SIDE) * 100], dim=1)
    mask = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.bool)
    assert torch.allclose(model(padded, mask), model(short), atol=1e-5)


def test_bad_masks_are_refused(fan: FAN) -> None:
    x = frames(2, 3)
    with pytest.raises(ValueError, match="at least one unmasked frame"):
        fan(x, torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be bool"):
        fan(x, torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        fan(x[0])


def test_eval_is_deterministic_and_train_uses_dropout() -> None:
    torch.manual_seed(3)
    model = build_fan(C).eval()
    x = frames(2, 3, seed=4)
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(10)
    first = model(x)
    torch.manual_seed(11)
    second = model(x)
    assert not torch.allclose(first, second, atol=1e-4)


def test_gradients_reach_attention_classifier_and_trunk() -> None:
    torch.manual_seed(4)
    model = build_fan(C).train()
    x = frames(2, 3, seed=5)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    torch.nn.functional.cross_entropy(model(x, mask), torch.tensor([0, 3])).backward()
    assert model.beta_fc is not None
    for p in (model.alpha_fc.weight, model.beta_fc.weight, model.classifier.weight,
              model.trunk.conv1.weight):  # fmt: skip
        assert p.grad is not None
        assert p.grad.abs().sum() > 0


def trunk_equals(model: FAN, state: dict[str, torch.Tensor]) -> bool:
    own = model.trunk.state_dict()
    keys = [k for k in state if not k.startswith("fc.")]
    return len(keys) == len(own) and all(torch.equal(own[k], state[k]) for k in keys)


def test_loads_torchvision_resnet18_state_dict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(5)
    state = resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    fresh = build_fan(C)
    assert not trunk_equals(fresh, state)
    with caplog.at_level(logging.INFO, logger="emoflow.models.backbone"):
        model = build_fan(C, pretrained=path)
    assert trunk_equals(model, state)
    assert "0 trunk keys missing, 0 unexpected" in caplog.text


def test_loads_prefixed_wrapped_checkpoint(tmp_path: Path) -> None:
    """The Emotion-FAN checkpoint layout: {"state_dict": {"module.<key>": ...}} with an fc."""
    torch.manual_seed(6)
    net = resnet18(weights=None, num_classes=8631)
    state = net.state_dict()
    path = tmp_path / "msceleb.pth.tar"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = build_fan(C, pretrained=path)
    assert trunk_equals(model, state)


def test_partial_checkpoint_reports_missing_and_unexpected(tmp_path: Path) -> None:
    state = resnet18(weights=None).state_dict()
    path = tmp_path / "partial.pt"
    torch.save({"backbone.conv1.weight": state["conv1.weight"], "head.weight": torch.zeros(2),
                "base.bn1.weight": torch.zeros(3)}, path)  # fmt: skip
    model = build_fan(C)
    report = load_trunk_weights(model.trunk, path)
    assert report.loaded == ["conv1.weight"]
    assert report.unexpected == ["head.weight"]
    assert report.mismatched == ["base.bn1.weight"]
    # BatchNorm fills an absent num_batches_tracked itself, so it is never reported missing.
    weights = [k for k in model.trunk.state_dict() if not k.endswith("num_batches_tracked")]
    assert sorted(report.missing) == sorted(k for k in weights if k != "conv1.weight")
    assert torch.equal(model.trunk.conv1.weight, state["conv1.weight"])


def test_file_without_trunk_keys_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"encoder.blocks.0.weight": torch.zeros(3), "fc.weight": torch.zeros(7, 512)}, path)
    with pytest.raises(InputError, match="no ResNet18 trunk weight matched") as info:
        build_fan(C, pretrained=path)
    assert info.value.path == path
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_unreadable_or_missing_file_is_an_input_error(tmp_path: Path,
                                                      content: bytes | None) -> None:  # fmt: skip
    path = tmp_path / "weights.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as info:
        build_fan(C, pretrained=path)
    assert str(path) in str(info.value)


def test_registry_builds_both_models() -> None:
    fan = build_model("fan", 4, relation=False, dropout=0.2)
    assert isinstance(fan, FAN)
    assert fan.classifier.out_features == 4 and fan.beta_fc is None
    assert fan.alpha_dropout.p == 0.2
    de = build_model("deep_emotion", 6, input_size=64)
    assert de.fc2.out_features == 6
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg", 7)  # type: ignore[arg-type]
