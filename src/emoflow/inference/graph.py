"""The one clip-level graph every backend runs, and the model input it takes.

``ClipModel`` wraps FAN or Deep-Emotion so that both take uint8 face images ``frames (B, T, H,
W, C)`` (as the datasets give them) and a ``mask (B, T)`` (True at real frames; clips of
different lengths are padded), normalise them with the datasets' own ``normalise`` (inside the
graph: an exported model takes the bytes) and return the clip probabilities ``(B, K)`` and
per-frame weights ``(B, T)`` (rows sum to 1, 0 at padding):

- FAN: softmax of the clip logits (as evaluation computes them) and the normalised α·β attention;
- Deep-Emotion: the mean of the frames' softmax (the decision-level aggregation of evaluation)
  and each frame's share in the averaged probability of the predicted class.

The torch backend runs this module, ``emoflow export`` traces it into ONNX, TensorRT builds from
that ONNX: the same computation everywhere. Inputs are made by the datasets' own code. With
``half`` the network runs in float16 while the numerically sensitive ends stay in float32: the
normalisation table, the softmax, the frame means and the weight normalisation (the FP16 graph
``emoflow convert`` gives a strongly typed TensorRT network).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emoflow.artifact import ModelSpec, load_model
from emoflow.datasets.clips import collate_clips, normalise, to_uint8
from emoflow.models import FANOutput

INPUTS = ("frames", "mask")
OUTPUTS = ("probabilities", "weights")


class ClipModel(nn.Module):
    def __init__(self, model: nn.Module, arch: str, grayscale: bool, half: bool = False) -> None:
        super().__init__()
        self.model = model.half() if half else model
        self.arch = arch
        self.grayscale = grayscale
        self.half = half

    def forward(self, frames: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        x = normalise(frames, self.grayscale)  # (B, T, C, H, W) float32
        if self.half:
            x = x.half()
        if self.arch == "fan":
            out = self.model(x, mask, return_weights=True)
            beta = None if out.beta is None else out.beta.float()
            out = FANOutput(out.logits.float(), out.alpha.float(), beta)
            return F.softmax(out.logits, dim=1), out.frame_weights
        b, t = mask.shape
        logits = self.model(x.reshape(b * t, *x.shape[2:]))
        keep = mask.unsqueeze(-1).float()
        p = F.softmax(logits.float(), dim=1).reshape(b, t, -1) * keep
        probs = p.sum(1) / keep.sum(1)
        top = probs.argmax(1).reshape(b, 1, 1).expand(b, t, 1)
        share = p.gather(2, top).squeeze(-1)
        return probs, share / share.sum(1, keepdim=True)


def load_clip_model(spec: ModelSpec, half: bool = False) -> ClipModel:
    """The trained weights in the clip graph, in eval mode, on the CPU."""
    model = load_model(spec.meta, spec.state_dict)
    return ClipModel(model, spec.arch, spec.grayscale, half).eval()


def clip_inputs(clips: list[list[np.ndarray]], spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Face chips of several clips → padded ``frames`` uint8 and ``mask`` bool arrays, made by
    the datasets' ``to_uint8`` (resize) and ``collate_clips``. Colour chips for a grayscale
    model become OpenCV's luma (what a JPEG decoder gives the datasets for a face file)."""
    batch = [(to_uint8([_channels(c, spec.grayscale) for c in chips], spec.image_size), 0)
             for chips in clips]  # fmt: skip
    frames, mask, _ = collate_clips(batch)
    return frames.numpy(), mask.numpy()


def _channels(chip: np.ndarray, grayscale: bool) -> np.ndarray:
    if grayscale and chip.ndim == 3:
        return cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
    return chip


def example_inputs(spec: ModelSpec, clips: int = 2, frames: int = 4) -> tuple[Tensor, Tensor]:
    s = spec.image_size
    x = torch.zeros(clips, frames, s, s, spec.channels, dtype=torch.uint8)
    mask = torch.ones(clips, frames, dtype=torch.bool)
    mask[-1, frames // 2 :] = False  # a padded clip, so the traced graph keeps the mask path
    return x, mask
