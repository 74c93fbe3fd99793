"""Deep-Emotion (Minaee et al., 2019): a small attentional CNN for single face images.

Per the paper: a spatial transformer warps the input towards the face regions that matter; four
3×3 convolutions (10 channels), in two pairs each followed by max-pooling and ReLU; dropout; two
fully connected layers. Loss: cross-entropy plus λ‖W‖² over the two FC layers; weights drawn from
N(0, 0.05). The model classifies frames; a clip's prediction averages its frames' probabilities
(``emoflow.models.aggregate``).

Unlike a popular re-implementation, dropout is a module (active only in training, not always on),
there is no ReLU inside a conv pair nor a BatchNorm (the paper has neither), and the flatten sizes
follow from ``input_size`` instead of being hard-coded for 48×48.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INIT_STD = 0.05
IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _features_size(s: int) -> int:
    """Side after conv3, conv3, pool2, conv3, conv3, pool2 (valid convolutions)."""
    return ((s - 4) // 2 - 4) // 2


def _localisation_size(s: int) -> int:
    """Side after conv7, pool2, conv5, pool2."""
    return ((s - 6) // 2 - 4) // 2


def base_grid(size: int) -> Tensor:
    """(size², 3) rows (x, y, 1) at the pixel centres in [-1, 1], x varying fastest: what
    ``F.affine_grid(..., align_corners=False)`` multiplies θ with."""
    c = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.flatten(), y.flatten(), torch.ones(size * size)], dim=1)


class SpatialTransformer(nn.Module):
    """Localisation net → affine θ → resampled input; starts as the identity transform.

    Zero weights and an identity bias in the last layer make the untrained network see the image
    as it is, so early training is plain CNN training and the warp is learnt only where it helps.

    The sampling grid is ``F.affine_grid``'s, computed as a MatMul of a constant base grid with
    θᵀ: exported to ONNX that is MatMul + GridSample, which TensorRT's ONNX parser takes (opset
    20 would export ``affine_grid`` as ``AffineGrid``, which it does not). The base grid is a
    non-persistent buffer: model files keep the same keys.
    """

    def __init__(self, channels: int, input_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.register_buffer("base_grid", base_grid(input_size), persistent=False)
        side = _localisation_size(input_size)
        self.localisation = nn.Sequential(
            nn.Conv2d(channels, 8, kernel_size=7),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(),
            nn.Conv2d(8, 10, kernel_size=5),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(),
        )
        self.regressor = nn.Sequential(nn.Linear(10 * side * side, 32), nn.ReLU(),
                                       nn.Linear(32, 6))  # fmt: skip

    def theta(self, x: Tensor) -> Tensor:
        """The affine transform (N, 2, 3) for each image."""
        return self.regressor(self.localisation(x).flatten(1)).view(-1, 2, 3)

    def grid(self, theta: Tensor) -> Tensor:
        """The (N, H, W, 2) sampling grid of ``theta`` (N, 2, 3), as ``F.affine_grid``."""
        s = self.input_size
        base = self.base_grid
        return (base @ theta.to(base.dtype).transpose(1, 2)).reshape(-1, s, s, 2)

    def forward(self, x: Tensor) -> Tensor:
        grid = self.grid(self.theta(x)).to(x.dtype)
        return F.grid_sample(x, grid, align_corners=False)


class DeepEmotion(nn.Module):
    """(N, channels, input_size, input_size) face images → (N, num_classes) logits."""

    def __init__(self, num_classes: int, input_size: int = 48, channels: int = 1,
                 dropout: float = 0.5, hidden: int = 50) -> None:  # fmt: skip
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if _features_size(input_size) < 1 or _localisation_size(input_size) < 1:
            raise ValueError(f"input_size {input_size} is too small for Deep-Emotion (min 18)")
        self.input_size = input_size
        self.channels = channels
        self.stn = SpatialTransformer(channels, input_size)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 10, kernel_size=3),
            nn.Conv2d(10, 10, kernel_size=3),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(),
            nn.Conv2d(10, 10, kernel_size=3),
            nn.Conv2d(10, 10, kernel_size=3),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(dropout)
        side = _features_size(input_size)
        self.fc1 = nn.Linear(10 * side * side, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights ~ N(0, 0.05), biases 0 (the paper); the STN's last layer keeps θ = identity."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.normal_(m.weight, 0.0, INIT_STD)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        last = self.stn.regressor[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor(IDENTITY_THETA))

    def forward(self, x: Tensor) -> Tensor:
        expected = (self.channels, self.input_size, self.input_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"Deep-Emotion expects images (N, {expected[0]}, {expected[1]}, "
                             f"{expected[2]}), got {tuple(x.shape)}")  # fmt: skip
        x = self.features(self.stn(x))
        x = self.dropout(x).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))

    def regularisation(self) -> Tensor:
        """‖W‖² of the two FC layers (weights only): the paper's penalty term."""
        return self.fc1.weight.pow(2).sum() + self.fc2.weight.pow(2).sum()

    def loss(self, logits: Tensor, target: Tensor, lam: float) -> Tensor:
        """Cross-entropy + λ‖W‖² (the paper's objective)."""
        return F.cross_entropy(logits, target) + lam * self.regularisation()


def build_deep_emotion(num_classes: int, input_size: int = 48, channels: int = 1,
                       dropout: float = 0.5) -> DeepEmotion:  # fmt: skip
    """Deep-Emotion for ``input_size``² images with ``channels`` channels (48, 1 in the paper)."""
    return DeepEmotion(num_classes, input_size=input_size, channels=channels, dropout=dropout)
