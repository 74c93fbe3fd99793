"""A reference evaluation of a frozen TensorFlow graph in numpy, node by node as the graph is
written: the yardstick a PyTorch port is checked against where TensorFlow cannot be installed (and
OpenCV 5 no longer runs such graphs).

It implements TensorFlow's semantics for the ops inference graphs of convolutional networks use,
NHWC only, in float64 by default (so the reference's own rounding stays far below a port's float32
error). The detail ports usually get wrong is SAME padding: TensorFlow pads
``max((ceil(n / s) - 1) · s + k - n, 0)`` in all, the odd one at the bottom / right
(:func:`same_padding`); average pooling under SAME divides by the count of real inputs only.
Unknown ops raise NotImplementedError naming the node: never a silent guess.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from emoflow.models.tf_graph import Graph, Node


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding of one spatial axis: (before, after), the extra one after."""
    k = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _pad_spatial(x: np.ndarray, kh: int, kw: int, strides: list[int], padding: str,
                 value: float, dilations: list[int] | None = None) -> np.ndarray:  # fmt: skip
    if padding == "VALID":
        return x
    if padding != "SAME":
        raise NotImplementedError(f"padding {padding}")
    d = dilations or [1, 1, 1, 1]
    ph = same_padding(x.shape[1], kh, strides[1], d[1])
    pw = same_padding(x.shape[2], kw, strides[2], d[2])
    return np.pad(x, ((0, 0), ph, pw, (0, 0)), constant_values=value)


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int) -> np.ndarray:
    """(N, H, W, C) → (N, Ho, Wo, C, kh, kw) views."""
    return sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]


def conv2d(x: np.ndarray, w: np.ndarray, strides: list[int], padding: str,
           dilations: list[int] | None = None) -> np.ndarray:  # fmt: skip
    """NHWC input, HWIO filter, TensorFlow's Conv2D (dilation 1 only)."""
    if dilations and list(dilations) != [1, 1, 1, 1]:
        raise NotImplementedError(f"Conv2D dilations {dilations}")
    kh, kw, cin, cout = w.shape
    xp = _pad_spatial(x, kh, kw, strides, padding, 0.0)
    win = _windows(xp, kh, kw, strides[1], strides[2])  # (N, Ho, Wo, C, kh, kw)
    n, ho, wo = win.shape[:3]
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, kh * kw * cin)
    return (cols @ w.reshape(kh * kw * cin, cout)).reshape(n, ho, wo, cout)


def max_pool(x: np.ndarray, ksize: list[int], strides: list[int], padding: str) -> np.ndarray:
    xp = _pad_spatial(x, ksize[1], ksize[2], strides, padding, -np.inf)
    return _windows(xp, ksize[1], ksize[2], strides[1], strides[2]).max(axis=(4, 5))


def avg_pool(x: np.ndarray, ksize: list[int], strides: list[int], padding: str) -> np.ndarray:
    kh, kw = ksize[1], ksize[2]
    total = _windows(_pad_spatial(x, kh, kw, strides, padding, 0.0), kh, kw, strides[1],
                     strides[2]).sum(axis=(4, 5))  # fmt: skip
    ones = np.ones((1, *x.shape[1:3], 1), x.dtype)  # SAME: only real inputs count
    count = _windows(_pad_spatial(ones, kh, kw, strides, padding, 0.0), kh, kw, strides[1],
                     strides[2]).sum(axis=(4, 5))  # fmt: skip
    return total / count


def _nhwc(node: Node) -> None:
    fmt = node.attrs.get("data_format", "NHWC")
    if fmt not in ("NHWC", None, ""):
        raise NotImplementedError(f"{node.name}: data_format {fmt}")


def _fused_batch_norm(node: Node, x, scale, offset, mean, var):  # type: ignore[no-untyped-def]
    _nhwc(node)
    if node.attrs.get("is_training", False):
        raise NotImplementedError(f"{node.name}: FusedBatchNorm in training mode")
    eps = node.attrs.get("epsilon", 1e-3)
    return (x - mean) / np.sqrt(var + eps) * scale + offset


def _reshape(x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    return x.reshape(tuple(int(s) for s in shape))


def _sum(node: Node, x: np.ndarray, axes: np.ndarray) -> np.ndarray:
    axis = tuple(int(a) for a in np.atleast_1d(axes))
    return x.sum(axis=axis, keepdims=bool(node.attrs.get("keep_dims", False)))


def _mean(node: Node, x: np.ndarray, axes: np.ndarray) -> np.ndarray:
    axis = tuple(int(a) for a in np.atleast_1d(axes))
    return x.mean(axis=axis, keepdims=bool(node.attrs.get("keep_dims", False)))


def _conv(node: Node, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    _nhwc(node)
    return conv2d(x, w, node.attrs["strides"], node.attrs["padding"], node.attrs.get("dilations"))


def _pool(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def run(node: Node, x: np.ndarray) -> np.ndarray:
        _nhwc(node)
        return fn(x, node.attrs["ksize"], node.attrs["strides"], node.attrs["padding"])

    return run


def _matmul(node: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.T if node.attrs.get("transpose_a") else a
    return a @ (b.T if node.attrs.get("transpose_b") else b)


def _bias_add(node: Node, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    _nhwc(node)
    return x + b


# op → f(node, *inputs)
OPS: dict[str, Callable[..., np.ndarray]] = {
    "Identity": lambda node, x: x,
    "Conv2D": _conv,
    "BiasAdd": _bias_add,
    "Relu": lambda node, x: np.maximum(x, 0),
    "Relu6": lambda node, x: np.clip(x, 0, 6),
    "MaxPool": _pool(max_pool),
    "AvgPool": _pool(avg_pool),
    "ConcatV2": lambda node, *xs: np.concatenate(xs[:-1], axis=int(xs[-1])),
    "Add": lambda node, a, b: a + b,
    "AddV2": lambda node, a, b: a + b,
    "Sub": lambda node, a, b: a - b,
    "Mul": lambda node, a, b: a * b,
    "Maximum": lambda node, a, b: np.maximum(a, b),
    "Square": lambda node, x: x * x,
    "Rsqrt": lambda node, x: 1.0 / np.sqrt(x),
    "Reshape": lambda node, x, shape: _reshape(x, shape),
    "MatMul": _matmul,
    "Sum": _sum,
    "Mean": _mean,
    "FusedBatchNorm": _fused_batch_norm,
    "FusedBatchNormV3": _fused_batch_norm,
}


def evaluate(graph: Graph, feeds: Mapping[str, np.ndarray], fetches: Iterable[str],
             dtype: type = np.float64) -> dict[str, np.ndarray]:  # fmt: skip
    """The values of ``fetches`` (node names; a node's first output) given ``feeds`` (Placeholder
    name → array), each node computed once, in dependency order; floats in ``dtype``."""
    values: dict[str, np.ndarray] = {}

    def value_of(name: str) -> np.ndarray:
        base, _, port = name.partition(":")
        if port not in ("", "0"):
            raise NotImplementedError(f"output {name}: only a node's first output is supported")
        return values[base]

    def compute(node: Node) -> np.ndarray:
        if node.op == "Placeholder":
            if node.name not in feeds:
                raise KeyError(f"placeholder {node.name} needs a value")
            return np.asarray(feeds[node.name], dtype=dtype)
        if node.op == "Const":
            v = node.attrs["value"]
            return v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v
        if node.op not in OPS:
            raise NotImplementedError(f"node {node.name}: op {node.op} is not implemented")
        return OPS[node.op](node, *(value_of(i) for i in node.inputs))

    for target in fetches:  # iterative depth-first: deep graphs stay off Python's call stack
        stack = [target.partition(":")[0]]
        while stack:
            name = stack[-1]
            if name in values:
                stack.pop()
                continue
            node = graph.by_name[name]
            missing = [i.partition(":")[0] for i in node.inputs
                       if i.partition(":")[0] not in values]  # fmt: skip
            if missing and node.op != "Placeholder":
                stack.extend(missing)
                continue
            values[name] = compute(node)
            stack.pop()
    return {name: value_of(name) for name in fetches}
