"""The transfer recipe's switches for FAN: class-balanced sampling and label smoothing."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from emoflow.config import FanTrainParams
from emoflow.models import build_fan
from emoflow.training.tasks import BalancedSampler, FanTask


def test_balanced_sampler_evens_out_the_classes() -> None:
    labels = [0] * 90 + [1] * 10
    s = BalancedSampler(labels, seed=3)
    drawn: Counter[int] = Counter()
    for epoch in range(5):
        s.set_epoch(epoch)
        idx = list(s)
        assert len(idx) == len(s) == 100
        drawn.update(labels[i] for i in idx)
    assert 0.4 < drawn[1] / 500 < 0.6  # 10 % of the clips, half of the draws
    s.set_epoch(2)
    again = BalancedSampler(labels, seed=3)
    again.set_epoch(2)
    assert list(s) == list(again)  # (seed, epoch) decide: a resumed run draws the same
    again.set_epoch(3)
    assert list(s) != list(again)


def test_balanced_sampler_gives_every_process_as_many_steps() -> None:
    labels = [0, 0, 0, 1, 1, 2, 2]
    shards = [BalancedSampler(labels, seed=0, world=2, rank=r) for r in (0, 1)]
    assert [len(list(s)) for s in shards] == [4, 4] == [len(s) for s in shards]


def test_label_smoothing_changes_the_fan_loss() -> None:
    torch.manual_seed(0)
    model = build_fan(3, features="blendshapes").eval()
    batch = (torch.rand(4, 3, 52), torch.ones(4, 3, dtype=torch.bool), torch.tensor([0, 1, 2, 0]))
    cpu = torch.device("cpu")
    with torch.no_grad():
        plain = FanTask(FanTrainParams(features="blendshapes"), 0).loss(model, batch, cpu)[0]
        smooth = FanTask(FanTrainParams(features="blendshapes", label_smoothing=0.1), 0).loss(
            model, batch, cpu)[0]  # fmt: skip
        logits = model(batch[0])
        expected = torch.nn.functional.cross_entropy(logits, batch[2], label_smoothing=0.1)
    assert np.isclose(float(smooth), float(expected)) and not np.isclose(float(plain),
                                                                         float(smooth))  # fmt: skip


def test_flip_tta_in_the_clip_graph_averages_both_passes() -> None:
    """``ClipModel(flip=True)`` (predict, the service, export) = the mean of the clip and of
    its mirror image, for a FAN on images; padding keeps zero weight."""
    from emoflow.inference.graph import ClipModel

    torch.manual_seed(0)
    fan = build_fan(3).eval()
    frames = torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    with torch.no_grad():
        p, w = ClipModel(fan, "fan", False, flip=True)(frames, mask)
        p1, w1 = ClipModel(fan, "fan", False)(frames, mask)
        p2, w2 = ClipModel(fan, "fan", False)(frames.flip(3), mask)
    assert torch.allclose(p, (p1 + p2) / 2, atol=1e-6) and torch.allclose(w, (w1 + w2) / 2)
    assert not torch.allclose(p1, p2, atol=1e-4)
    assert float(w[0, 2]) == 0.0 and torch.allclose(w.sum(1), torch.ones(2))
