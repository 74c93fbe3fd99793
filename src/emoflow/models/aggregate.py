"""Decision-level aggregation (thesis 2.1.3): a clip's prediction is its frames' mean probability.

Frame models (Deep-Emotion) classify each frame; averaging probabilities rather than logits keeps
one over-confident frame from dominating and gives a proper distribution per clip.
"""

from __future__ import annotations

import torch
from torch import Tensor


def aggregate_clip_probabilities(frame_logits: Tensor, clip_index: Tensor, n_clips: int
                                 ) -> Tensor:  # fmt: skip
    """Mean softmax of the frames of each clip: (N, C) logits, (N,) clip ids → (n_clips, C).

    ``clip_index[i]`` is the clip (0..n_clips-1) of frame ``i``; frames of a clip need not be
    contiguous. Every clip needs at least one frame (an empty clip has no prediction).
    Differentiable, and runs on the logits' device.
    """
    if frame_logits.dim() != 2:
        raise ValueError(f"frame_logits must be (N, C), got {tuple(frame_logits.shape)}")
    if clip_index.shape != frame_logits.shape[:1] or clip_index.dtype != torch.long:
        raise ValueError(f"clip_index must be long ({frame_logits.shape[0]},), got "
                         f"{clip_index.dtype} {tuple(clip_index.shape)}")  # fmt: skip
    if clip_index.numel() and (int(clip_index.min()) < 0 or int(clip_index.max()) >= n_clips):
        raise ValueError(f"clip_index values must lie in [0, {n_clips})")
    counts = torch.bincount(clip_index, minlength=n_clips)
    if bool((counts == 0).any()):
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"clips without frames: {empty[:10]}")
    probs = torch.softmax(frame_logits, dim=1)
    sums = probs.new_zeros(n_clips, probs.shape[1]).index_add(0, clip_index, probs)
    return sums / counts.unsqueeze(1).to(probs.dtype)
