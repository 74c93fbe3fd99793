"""Decision-level aggregation: a clip's probabilities are the mean of its frames' softmax."""

from __future__ import annotations

import pytest
import torch

from emoflow.models import aggregate_clip_probabilities


def test_mean_of_softmax_per_clip_with_interleaved_frames() -> None:
    logits = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    clip = torch.tensor([2, 0, 2, 1, 0, 2, 1])
    out = aggregate_clip_probabilities(logits, clip, 3)
    probs = logits.softmax(dim=1)
    expected = torch.stack([probs[clip == k].mean(dim=0) for k in range(3)])
    assert out.shape == (3, 4)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(out.sum(dim=1), torch.ones(3))
    # the mean of probabilities, not the softmax of mean logits
    mean_logits = torch.stack([logits[clip == k].mean(dim=0) for k in range(3)]).softmax(1)
    assert not torch.allclose(out, mean_logits, atol=1e-4)


def test_single_frame_clip_is_that_frames_softmax() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    out = aggregate_clip_probabilities(logits, torch.tensor([0]), 1)
    assert torch.allclose(out, logits.softmax(dim=1))


def test_is_differentiable() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    aggregate_clip_probabilities(logits, torch.tensor([0, 0, 1, 1]), 2)[:, 0].sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("clip", "n_clips", "message"),
    [
        (torch.tensor([0, 0, 2]), 3, "clips without frames: \\[1\\]"),
        (torch.tensor([0, 1, 3]), 3, "must lie in"),
        (torch.tensor([0, -1, 1]), 3, "must lie in"),
        (torch.tensor([0.0, 1.0, 1.0]), 2, "clip_index must be long"),
        (torch.tensor([0, 1]), 2, "clip_index must be long"),
    ],
)
def test_bad_clip_index_is_refused(clip: torch.Tensor, n_clips: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aggregate_clip_probabilities(torch.randn(3, 4), clip, n_clips)
