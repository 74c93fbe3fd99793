"""The one clip-level graph every backend runs, and the model input it takes.

``ClipModel`` wraps FAN or Deep-Emotion so that both take uint8 face images ``frames (B, T, H,
W, C)`` (as the datasets give them) and a ``mask (B, T)`` (True at real frames; clips of
different lengths are padded), normalise them with the datasets' own ``normalise`` (inside the
graph: an exported model takes the bytes) and return the clip probabilities ``(B, K)`` and
per-frame weights ``(B, T)`` (rows sum to 1, 0 at padding):

- FAN: softmax of the clip logits (as evaluation computes them) and the normalised α·β attention;
- Deep-Emotion: the mean of the frames' softmax (the decision-level aggregation of evaluation)
  and each frame's share in the averaged probability of the predicted class.

A FAN on expression features (``train.fan.features``: blendshapes or fused) takes a third input,
``expression (B, T, 52)`` float32: MediaPipe's blendshape scores of each chip (or its
normalised landmarks, ``train.fan.expression``: 1434, or both: 1486), made outside the graph by
the extractor training used (``faces/blendshapes.py``, in ``clip_inputs``); a
blendshapes-only FAN reads no pixels (``frames`` stays an input, unused, so every backend keeps
one calling convention).

A model trained with ``train.fan.tta_flip`` (``model.pt``'s ``tta_flip``) averages, inside the
graph, the probabilities and frame weights of the frames and of their mirror images (flipped in
the graph; an expression model takes the mirrors' scores as ``expression_mirror``).

Which clip forward an architecture runs is its registry entry's (``models.registry``, code in
``models.clip``).

The torch backend runs this module, ``emoflow export`` traces it into ONNX, TensorRT builds from
that ONNX: the same computation everywhere. Inputs are made by the datasets' own code. With
``half`` the network runs in float16 while the numerically sensitive ends stay in float32: the
normalisation table, the softmax, the frame means and the weight normalisation (the FP16 graph
``emoflow convert`` gives a strongly typed TensorRT network).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from emoflow.artifact import ModelSpec, load_model
from emoflow.datasets.clips import collate_clips, normalise, to_uint8
from emoflow.errors import InputError
from emoflow.models import registry

log = logging.getLogger(__name__)

INPUTS = ("frames", "mask")
EXPRESSION_INPUT = "expression"
MIRROR_INPUT = "expression_mirror"
OUTPUTS = ("probabilities", "weights")


def frame_features(spec: ModelSpec) -> str:
    """``appearance``, ``blendshapes`` or ``fused``: what the model's frame feature is."""
    return str(spec.meta.config.get("features", "appearance"))


def expression_kind(spec: ModelSpec) -> str:
    """What MediaPipe gives each frame of an expression model: ``blendshapes``, ``landmarks``
    or ``both`` (``train.fan.expression``)."""
    return str(spec.meta.config.get("expression", "blendshapes"))


def expression_dim(spec: ModelSpec) -> int:
    from emoflow.faces.blendshapes import EXPRESSION_DIMS

    return EXPRESSION_DIMS[expression_kind(spec)]


def tta_flip(spec: ModelSpec) -> bool:
    return spec.meta.tta_flip


def input_names(spec: ModelSpec) -> tuple[str, ...]:
    """The graph's inputs: ``frames``, ``mask`` and, on expression features, ``expression``
    (and ``expression_mirror`` with test-time flips)."""
    if frame_features(spec) == "appearance":
        return INPUTS
    return (*INPUTS, EXPRESSION_INPUT, *((MIRROR_INPUT,) if tta_flip(spec) else ()))


class ClipModel(nn.Module):
    def __init__(self, model: nn.Module, arch: str, grayscale: bool, half: bool = False,
                 flip: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.model = model.half() if half else model
        self.arch = arch
        self.grayscale = grayscale
        self.half = half
        self.flip = flip
        self.clip_forward = registry.get(arch).forward()  # the architecture's (models.clip)

    def forward(self, frames: Tensor, mask: Tensor, expression: Tensor | None = None,
                expression_mirror: Tensor | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
        probs, weights = self.once(frames, mask, expression, mirror=False)
        if not self.flip:
            return probs, weights
        p2, w2 = self.once(frames, mask, expression_mirror, mirror=True)
        return (probs + p2) / 2, (weights + w2) / 2

    def once(self, frames: Tensor, mask: Tensor, expression: Tensor | None, mirror: bool
             ) -> tuple[Tensor, Tensor]:  # fmt: skip
        if expression is not None and self.half:
            expression = expression.half()
        if getattr(self.model, "features", "") == "blendshapes":  # reads no pixels
            return self.clip_forward(self.model, None, mask, expression)
        x = normalise(frames, self.grayscale)  # (B, T, C, H, W) float32
        if mirror:
            x = x.flip(-1)
        if self.half:
            x = x.half()
        return self.clip_forward(self.model, x, mask, expression)


def load_clip_model(spec: ModelSpec, half: bool = False) -> ClipModel:
    """The trained weights in the clip graph, in eval mode, on the CPU."""
    model = load_model(spec.meta, spec.state_dict)
    if frame_features(spec) != "appearance":
        _check_extractor(spec)
    return ClipModel(model, spec.arch, spec.grayscale, half, tta_flip(spec)).eval()


def _check_extractor(spec: ModelSpec) -> None:
    """Refuse a model whose landmarks were normalised otherwise than this code does (the
    heads would read other numbers); warn when the installed MediaPipe model is not the one it
    was trained with (its scores would be another function than the one the heads learnt)."""
    from emoflow.faces.blendshapes import LANDMARK_NORM, expression_fingerprint

    kind = expression_kind(spec)
    wanted = expression_fingerprint(kind)
    recorded = ((spec.meta.backbone or {}).get("expression") or {}).get("fingerprint")
    if recorded == wanted:
        return
    if kind != "blendshapes" and not str(recorded).endswith(f"-{kind}-{LANDMARK_NORM}"):
        raise InputError(spec.model_file, f"its {kind} features were made as {recorded}; this "
                         f"emoflow makes {wanted} (another landmark normalisation): retrain "
                         "or use the emoflow that trained it")  # fmt: skip
    log.warning("%s: trained on expression features of %s, this installation computes %s: "
                "predictions may differ from evaluation's", spec.model_file, recorded,
                wanted)  # fmt: skip


def clip_inputs(clips: list[list[np.ndarray]], spec: ModelSpec) -> tuple[np.ndarray, ...]:
    """Face chips of several clips → padded ``frames`` uint8 and ``mask`` bool arrays, made by
    the datasets' ``to_uint8`` (resize) and ``collate_clips``. Colour chips for a grayscale
    model become OpenCV's luma (what a JPEG decoder gives the datasets for a face file).
    On expression features, also ``expression`` float32 (B, T, 52, or the landmarks' width):
    the extractor's features of each chip as given (what training cached), zeros at padding
    (``expression_inputs``)."""
    return (*frame_inputs(clips, spec), *expression_inputs(clips, spec))


def frame_inputs(clips: list[list[np.ndarray]], spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` and ``mask`` of ``clip_inputs``."""
    batch = [(to_uint8([_channels(c, spec.grayscale) for c in chips], spec.image_size), 0)
             for chips in clips]  # fmt: skip
    frames, mask, _ = collate_clips(batch)
    return frames.numpy(), mask.numpy()


def expression_inputs(clips: list[list[np.ndarray]], spec: ModelSpec) -> tuple[np.ndarray, ...]:
    """The expression inputs of ``clip_inputs`` (none for an appearance model): the
    extractor's part of a prediction, timed on its own by the predictor."""
    if frame_features(spec) == "appearance":
        return ()
    from emoflow.faces.blendshapes import expression as features

    kind = expression_kind(spec)
    length = max(len(c) for c in clips)
    expression = np.zeros((len(clips), length, expression_dim(spec)), np.float32)
    mirrored = np.zeros_like(expression) if tta_flip(spec) else None
    # Every chip of the batch (and its mirror image, whose own scores training cached) in one
    # call, so the extractors' threads share the whole batch.
    chips = [c for clip in clips for c in clip]
    if mirrored is not None:
        chips += [np.ascontiguousarray(c[:, ::-1]) for c in chips]
    feats, k = features(chips, kind)[0], 0
    outs = (expression,) if mirrored is None else (expression, mirrored)
    for out in outs:
        for i, clip in enumerate(clips):
            out[i, : len(clip)] = feats[k : k + len(clip)]
            k += len(clip)
    return outs


def _channels(chip: np.ndarray, grayscale: bool) -> np.ndarray:
    if grayscale and chip.ndim == 3:
        return cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
    return chip


def example_inputs(spec: ModelSpec, clips: int = 2, frames: int = 4) -> tuple[Tensor, ...]:
    s = spec.image_size
    x = torch.zeros(clips, frames, s, s, spec.channels, dtype=torch.uint8)
    mask = torch.ones(clips, frames, dtype=torch.bool)
    mask[-1, frames // 2 :] = False  # a padded clip, so the traced graph keeps the mask path
    if frame_features(spec) == "appearance":
        return x, mask
    g = torch.Generator().manual_seed(0)
    scores = [torch.rand(clips, frames, expression_dim(spec), generator=g)
              for _ in range(len(input_names(spec)) - 2)]  # fmt: skip
    return x, mask, *scores
