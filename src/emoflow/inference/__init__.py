"""The inference core shared by ``emoflow predict``, the service, ``promote`` and the benchmarks.

The names below load on first use (PEP 562): importing a light submodule such as
``emoflow.inference.availability`` must not import torch, OpenCV and dlib through the predictor.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emoflow.inference.predictor import NoFaceError, Predictor
    from emoflow.inference.schema import ClipResult, FrameResult, ModelRef, Timings

__all__ = ["ClipResult", "FrameResult", "ModelRef", "NoFaceError", "Predictor", "Timings"]
_HOMES = {"NoFaceError": "predictor", "Predictor": "predictor", "ClipResult": "schema",
          "FrameResult": "schema", "ModelRef": "schema", "Timings": "schema"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
