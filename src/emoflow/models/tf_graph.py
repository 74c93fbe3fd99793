"""A frozen TensorFlow graph (``GraphDef``, ``.pb``) read with ``protobuf`` alone, no TensorFlow.

Only the five message types a frozen inference graph needs are declared (GraphDef, NodeDef,
AttrValue, TensorProto, TensorShapeProto), with TensorFlow's own field numbers
(``tensorflow/core/framework/*.proto``), built at import from a ``FileDescriptorProto``; every
other field (the function library, versions, debug info) is skipped by the parser as unknown. A
node becomes a :class:`Node`: its op, its inputs and its attributes as plain Python / numpy values
(a ``Const``'s tensor as an array).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from emoflow.errors import InputError

# TensorFlow's DataType enum (types.proto) → numpy, for the types a frozen model's tensors use.
DTYPES: dict[int, type] = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16,
                           6: np.int8, 9: np.int64, 10: np.bool_, 19: np.float16}  # fmt: skip
_FIELD = descriptor_pb2.FieldDescriptorProto
_SCHEMA = {  # message: [(name, number, type, label, message type)]
    "TensorShapeProto.Dim": [("size", 1, _FIELD.TYPE_INT64, 1, None)],
    "TensorShapeProto": [("dim", 2, _FIELD.TYPE_MESSAGE, 3, "TensorShapeProto.Dim"),
                         ("unknown_rank", 3, _FIELD.TYPE_BOOL, 1, None)],
    "TensorProto": [("dtype", 1, _FIELD.TYPE_INT32, 1, None),
                    ("tensor_shape", 2, _FIELD.TYPE_MESSAGE, 1, "TensorShapeProto"),
                    ("tensor_content", 4, _FIELD.TYPE_BYTES, 1, None),
                    ("float_val", 5, _FIELD.TYPE_FLOAT, 3, None),
                    ("double_val", 6, _FIELD.TYPE_DOUBLE, 3, None),
                    ("int_val", 7, _FIELD.TYPE_INT32, 3, None),
                    ("int64_val", 10, _FIELD.TYPE_INT64, 3, None),
                    ("bool_val", 11, _FIELD.TYPE_BOOL, 3, None)],
    "AttrValue.ListValue": [("s", 2, _FIELD.TYPE_BYTES, 3, None),
                            ("i", 3, _FIELD.TYPE_INT64, 3, None),
                            ("f", 4, _FIELD.TYPE_FLOAT, 3, None),
                            ("b", 5, _FIELD.TYPE_BOOL, 3, None),
                            ("type", 6, _FIELD.TYPE_INT32, 3, None)],
    "AttrValue": [("list", 1, _FIELD.TYPE_MESSAGE, 1, "AttrValue.ListValue"),
                  ("s", 2, _FIELD.TYPE_BYTES, 1, None), ("i", 3, _FIELD.TYPE_INT64, 1, None),
                  ("f", 4, _FIELD.TYPE_FLOAT, 1, None), ("b", 5, _FIELD.TYPE_BOOL, 1, None),
                  ("type", 6, _FIELD.TYPE_INT32, 1, None),
                  ("shape", 7, _FIELD.TYPE_MESSAGE, 1, "TensorShapeProto"),
                  ("tensor", 8, _FIELD.TYPE_MESSAGE, 1, "TensorProto")],
    # map<string, AttrValue> is, on the wire, a repeated (key = 1, value = 2) entry
    "NodeDef.AttrEntry": [("key", 1, _FIELD.TYPE_STRING, 1, None),
                          ("value", 2, _FIELD.TYPE_MESSAGE, 1, "AttrValue")],
    "NodeDef": [("name", 1, _FIELD.TYPE_STRING, 1, None), ("op", 2, _FIELD.TYPE_STRING, 1, None),
                ("input", 3, _FIELD.TYPE_STRING, 3, None),
                ("attr", 5, _FIELD.TYPE_MESSAGE, 3, "NodeDef.AttrEntry")],
    "GraphDef": [("node", 1, _FIELD.TYPE_MESSAGE, 3, "NodeDef")],
}  # fmt: skip
_PACKAGE = "emoflow_tf"


def _graph_def_class() -> type:
    file = descriptor_pb2.FileDescriptorProto(name="emoflow_tf_graph.proto", package=_PACKAGE,
                                              syntax="proto3")  # fmt: skip
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}
    for full in sorted(_SCHEMA, key=lambda m: m.count(".")):  # parents before nested types
        outer, _, inner = full.rpartition(".")
        parent = messages[outer].nested_type if outer else file.message_type
        messages[full] = parent.add(name=inner)
    # AttrValue's fields form its oneof ``value``: which one is set, even at its default
    messages["AttrValue"].oneof_decl.add(name="value")
    for full, fields in _SCHEMA.items():
        for name, number, kind, label, type_name in fields:
            f = messages[full].field.add(name=name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = f".{_PACKAGE}.{type_name}"
            if full == "AttrValue":
                f.oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.GraphDef"))


GraphDefMessage = _graph_def_class()


@dataclass
class Node:
    """One NodeDef: ``inputs`` as written (``name``, ``name:1``; ``^name`` control inputs
    dropped), ``attrs`` as Python values (a tensor as a numpy array, a shape as a tuple)."""

    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    nodes: list[Node]

    def __post_init__(self) -> None:
        self.by_name = {n.name: n for n in self.nodes}

    def const(self, name: str) -> np.ndarray:
        node = self.by_name[name]
        if node.op != "Const":
            raise KeyError(f"{name} is a {node.op}, not a Const")
        return node.attrs["value"]


def tensor_to_numpy(t: Any) -> np.ndarray:
    """A TensorProto as an array: its packed content, or its typed list (a single value is
    broadcast to the shape, as TensorFlow does)."""
    if t.dtype not in DTYPES:
        raise ValueError(f"tensor dtype {t.dtype} is not supported")
    dtype = np.dtype(DTYPES[t.dtype])
    shape = tuple(d.size for d in t.tensor_shape.dim)
    if t.tensor_content:
        return np.frombuffer(t.tensor_content, dtype=dtype.newbyteorder("<")).astype(
            dtype).reshape(shape)  # fmt: skip
    values = {np.float32: t.float_val, np.float64: t.double_val, np.int64: t.int64_val,
              np.bool_: t.bool_val}.get(dtype.type, t.int_val)  # fmt: skip
    arr = np.asarray(list(values), dtype=dtype)
    size = int(np.prod(shape)) if shape else 1
    if arr.size == size:
        return arr.reshape(shape)
    if arr.size == 1:
        return np.full(shape, arr[0], dtype=dtype)
    if arr.size == 0:
        return np.zeros(shape, dtype=dtype)
    raise ValueError(f"tensor of shape {shape} holds {arr.size} values")


def _attr_value(a: Any) -> Any:
    kind = a.WhichOneof("value")
    if kind == "tensor":
        return tensor_to_numpy(a.tensor)
    if kind == "shape":
        return tuple(d.size for d in a.shape.dim)
    if kind == "s":
        return a.s.decode("utf-8", "replace")
    if kind == "list":
        lv = a.list
        for name in ("i", "f", "s", "b", "type"):
            values = list(getattr(lv, name))
            if values:
                return [v.decode() for v in values] if name == "s" else values
        return []
    return getattr(a, kind) if kind else None


def parse_graph(data: bytes, path: Path | str = "<bytes>") -> Graph:
    """The nodes of a serialised GraphDef. InputError naming ``path`` if it is not one."""
    message = GraphDefMessage()
    try:
        message.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError and friends
        raise InputError(path, f"not a TensorFlow GraphDef ({e})") from e
    if not message.node:
        raise InputError(path, "not a TensorFlow GraphDef (no nodes)")
    nodes = []
    for n in message.node:
        try:
            attrs = {entry.key: _attr_value(entry.value) for entry in n.attr}
        except ValueError as e:
            raise InputError(path, f"node {n.name}: {e}") from e
        nodes.append(Node(n.name, n.op, [i for i in n.input if not i.startswith("^")], attrs))
    return Graph(nodes)


def read_graph(path: Path | str) -> Graph:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "TensorFlow graph file not found")
    return parse_graph(path.read_bytes(), path)
