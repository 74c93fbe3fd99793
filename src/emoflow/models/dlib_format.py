"""Reading a network that dlib's DNN toolkit serialised (``serialize(net, out)``), without dlib.

The stream, as dlib writes it (``dlib/serialize.h``, ``dlib/dnn/core.h``, ``dlib/dnn/layers.h``):

- integers: one byte whose low nibble is the number of value bytes that follow (little-endian)
  and whose top bit marks a negative number; bools: the character ``'1'`` or ``'0'``;
  floats: mantissa and exponent as two integers (value = m · 2^e); strings: length, then bytes;
- tensors: version 2, (n, k, nr, nc), then the values as raw little-endian float32;
  alias tensors (views into a layer's ``params``): version 1, (n, k, nr, nc);
- the network is written top-down and then bottom-up: each ``add_layer`` writes its version
  (2; 3 for the one holding the input layer), then its sub-network, then its layer and state;
  ``tag``/``skip`` layers write only their version (1) and their sub-network. So the file lists
  every computational layer in input-to-output order, after the input layer; where tags and skips
  sit is fixed by the C++ type, not stored. The caller checks the layer list against the
  architecture it expects.

Only the layer kinds dlib's face descriptor uses are decoded; anything else is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emoflow.errors import InputError


@dataclass
class Layer:
    """One computational layer: its dlib name (``con_4``, ``affine_``...), settings and tensors."""

    kind: str
    config: dict[str, int | float] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A serialised dlib network: loss and input settings, layers from input to output."""

    loss: str
    input: str
    input_mean: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: list[Layer]
    structure: list[int]  # the wrapper versions, top-down: 2 add_layer, 1 tag/skip, 3 input's


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, rule: str) -> InputError:
        return InputError(self.path, f"not a dlib network file: {rule}", f"byte {self.pos}")

    def int(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of file")
        head = self.data[self.pos]
        size = head & 0x0F
        if size > 8:
            raise self.fail(f"integer of {size} bytes")
        raw = self.data[self.pos + 1 : self.pos + 1 + size]
        if len(raw) != size:
            raise self.fail("unexpected end of file")
        self.pos += 1 + size
        value = int.from_bytes(raw, "little")
        return -value if head & 0x80 else value

    def bool(self) -> bool:
        c = self.data[self.pos : self.pos + 1]
        if c not in (b"0", b"1"):
            raise self.fail(f"expected a bool, found {c!r}")
        self.pos += 1
        return c == b"1"

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(np.ldexp(float(mantissa), exponent))

    def str(self) -> str:
        n = self.int()
        raw = self.data[self.pos : self.pos + n]
        if n < 0 or len(raw) != n:
            raise self.fail("unexpected end of file")
        self.pos += n
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("a layer name that is not text") from None

    def tensor(self) -> np.ndarray:
        if (version := self.int()) != 2:
            raise self.fail(f"tensor version {version}")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        if min(shape) < 0 or self.pos + 4 * count > len(self.data):
            raise self.fail(f"tensor of shape {shape} runs past the end")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos += 4 * count
        return values.astype(np.float32).reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        if (version := self.int()) != 1:
            raise self.fail(f"alias tensor version {version}")
        n, k, nr, nc = (self.int() for _ in range(4))
        return n, k, nr, nc


def _split(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """Consecutive views of a layer's flat ``params`` in dlib's alias order."""
    flat = params.reshape(-1)
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(flat[start : start + size].reshape(shape))
        start += size
    return out


def _layer(r: _Reader) -> Layer:
    kind = r.str()
    if kind == "con_4":
        params = r.tensor()
        names = ("filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        config: dict[str, int | float] = dict(zip(names, (r.int() for _ in names), strict=True))
        filters, biases = r.alias(), r.alias()
        for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
            config[name] = r.float()
        w, b = _split(params, filters, (biases[1],))
        return Layer(kind, config, {"weight": w, "bias": b})
    if kind == "affine_":
        params = r.tensor()
        gamma, beta = r.alias(), r.alias()
        mode = r.int()
        g, b = _split(params, (gamma[1],), (beta[1],))
        return Layer(kind, {"mode": mode}, {"gamma": g, "beta": b})
    if kind in ("max_pool_2", "avg_pool_2"):
        names = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        return Layer(kind, dict(zip(names, (r.int() for _ in names), strict=True)))
    if kind == "fc_2":
        outputs, inputs = r.int(), r.int()
        params = r.tensor()
        weights, _biases = r.alias(), r.alias()
        config = {"outputs": outputs, "inputs": inputs, "bias_mode": r.int()}
        for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
            config[name] = r.float()
        if config["bias_mode"] != 1:  # FC_NO_BIAS: the only mode the face descriptor uses
            raise r.fail("fc_2 with a bias is not supported")
        (w,) = _split(params, (weights[0], weights[1]))
        return Layer(kind, config, {"weight": w})  # (inputs, outputs): y = x @ w
    if kind in ("relu_", "add_prev_"):
        return Layer(kind)
    raise r.fail(f"unsupported layer {kind!r}")


def read_dlib_net(path: Path) -> DlibNet:
    """Parse a dlib network file (e.g. ``dlib_face_recognition_resnet_model_v1.dat``).

    Raises InputError naming the file on anything it does not recognise, rather than returning
    weights read from the wrong offsets.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(path, f"cannot read the dlib network ({e.strerror})") from e
    r = _Reader(data, path)
    if (version := r.int()) != 1:
        raise r.fail(f"loss layer version {version}")
    loss = r.str()
    if loss != "loss_metric_2":
        raise r.fail(f"unsupported loss {loss!r}")
    r.float(), r.float()  # the metric loss's margin and distance threshold: training only
    structure = []
    while (v := r.int()) != 3:
        if v not in (1, 2):
            raise r.fail(f"layer wrapper version {v}")
        structure.append(v)
    structure.append(v)
    input_kind = r.str()
    if input_kind != "input_rgb_image_sized":
        raise r.fail(f"unsupported input layer {input_kind!r}")
    mean = (r.float(), r.float(), r.float())
    size = (r.int(), r.int())
    layers: list[Layer] = []
    while r.pos < len(data):
        layers.append(_layer(r))
        r.bool(), r.bool(), r.bool()  # setup called, gradient stale, gradient disabled
        for _ in range(3):  # x_grad, cached_output, params_grad: empty in a saved model
            r.tensor()
        if len(layers) == 1:
            r.int()  # the input wrapper's sample expansion factor
    wrapped = sum(1 for v in structure if v != 1)
    if wrapped != len(layers):
        raise r.fail(f"{wrapped} layer wrappers but {len(layers)} layers")
    return DlibNet(loss, input_kind, mean, size, layers, structure)
