"""How each architecture turns a batch of padded clips into clip probabilities and frame weights.

``(model, x (B, T, C, H, W) normalised, mask (B, T), expression (B, T, 52) or None) →
(probabilities (B, K), weights (B, T))``, in float32 whatever the network's precision.
``inference.graph.ClipModel`` runs the one an architecture names (``models.registry``), so the
torch backend, the ONNX export and TensorRT compute the same graph.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from emoflow.models.fan import FANOutput


def attention_clip(model: nn.Module, x: Tensor | None, mask: Tensor,
                   expression: Tensor | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """A clip model (FAN): softmax of the clip logits (as evaluation computes them) and the
    normalised α·β attention. A FAN on expression features takes their scores; one on
    blendshapes alone reads no pixels (``x`` None)."""
    if x is None:
        assert expression is not None, "a FAN on blendshapes takes the expression input"
        out = model(expression, mask, return_weights=True)
    else:
        out = model(x, mask, return_weights=True, expression=expression)
    beta = None if out.beta is None else out.beta.float()
    out = FANOutput(out.logits.float(), out.alpha.float(), beta)
    return F.softmax(out.logits, dim=1), out.frame_weights


def frame_mean_clip(model: nn.Module, x: Tensor, mask: Tensor,
                    expression: Tensor | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """A frame model (Deep-Emotion): the mean of the frames' softmax (the decision-level
    aggregation of evaluation) and each frame's share in the averaged probability of the
    predicted class. It takes no expression features."""
    b, t = mask.shape
    logits = model(x.reshape(b * t, *x.shape[2:]))
    keep = mask.unsqueeze(-1).float()
    p = F.softmax(logits.float(), dim=1).reshape(b, t, -1) * keep
    probs = p.sum(1) / keep.sum(1)
    top = probs.argmax(1).reshape(b, 1, 1).expand(b, t, 1)
    share = p.gather(2, top).squeeze(-1)
    return probs, share / share.sum(1, keepdim=True)
