"""TensorRT engines: what the machine has, and the backend that runs one.

TensorRT is imported only here and only when asked for. An engine is tied to the GPU model and
the TensorRT version it was built with (``engine.json`` records both): any other pairing is
refused with a message to rebuild, before TensorRT is handed bytes it cannot read.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from emoflow.errors import EmoflowError
from emoflow.inference.availability import INSTALL_HINT
from emoflow.inference.graph import INPUTS, OUTPUTS
from emoflow.inference.model_dir import ENGINE_FILE, ENGINE_JSON, ModelSpec, file_sha256, read_json

log = logging.getLogger(__name__)


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or an EmoflowError naming what is missing and how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise EmoflowError(f"TensorRT is not installed ({exc}): {INSTALL_HINT}") from None
    if not torch.cuda.is_available():
        raise EmoflowError(f"no CUDA GPU visible to PyTorch: TensorRT needs one ({INSTALL_HINT})")
    return tensorrt


def machine() -> dict[str, Any]:
    """What an engine is tied to: this GPU and this TensorRT."""
    trt = import_tensorrt()
    major, minor = torch.cuda.get_device_capability()
    return {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(),
            "compute_capability": f"{major}.{minor}"}  # fmt: skip


def unusable(spec: ModelSpec) -> str | None:
    """Why the folder's engine cannot run here, or None when it can."""
    engine, info = spec.folder / ENGINE_FILE, read_json(spec.folder / ENGINE_JSON)
    if not engine.exists() or info is None:
        return f"{spec.folder}: no {ENGINE_FILE} / {ENGINE_JSON}: run `emoflow convert` first"
    try:
        here = machine()
    except EmoflowError as exc:
        return str(exc)
    built = {k: info.get(k) for k in here}
    if built != here:
        return (f"{engine} was built for {_describe(built)}, this machine has {_describe(here)}: "
                f"an engine is tied to its GPU and TensorRT version; rebuild it here with "
                f"`emoflow convert --model {spec.arch}`")  # fmt: skip
    if info.get("source_sha256") != file_sha256(spec.model_file):
        return (f"{engine} was built from another {spec.model_file.name}: run `emoflow export` "
                f"and `emoflow convert` again")  # fmt: skip
    return None


def _describe(m: dict[str, Any]) -> str:
    return (f"{m.get('gpu')} (compute {m.get('compute_capability')}), TensorRT "
            f"{m.get('tensorrt')}")  # fmt: skip


class EngineRunner:
    """Runs serialised engine bytes with PyTorch CUDA tensors as its buffers (no other CUDA
    bindings needed)."""

    def __init__(self, engine: bytes, where: str, arch: str) -> None:
        trt = import_tensorrt()
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine)
        if self.engine is None:
            raise EmoflowError(f"{where}: TensorRT cannot load this engine; rebuild it with "
                               f"`emoflow convert --model {arch}`")  # fmt: skip
        self.context = self.engine.create_execution_context()
        self.device = torch.device("cuda")

    def run(self, frames: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inputs = {"frames": torch.from_numpy(frames), "mask": torch.from_numpy(mask)}
        buffers: dict[str, torch.Tensor] = {}
        for name in INPUTS:
            dtype = _torch_dtype(self._trt, self.engine.get_tensor_dtype(name))
            t = inputs[name].to(self.device, dtype).contiguous()
            buffers[name] = t
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        for name in OUTPUTS:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = _torch_dtype(self._trt, self.engine.get_tensor_dtype(name))
            buffers[name] = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(name, buffers[name].data_ptr())
        stream = torch.cuda.current_stream()  # the one the copies above were queued on
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EmoflowError("TensorRT execution failed (see the TensorRT log above)")
        stream.synchronize()
        probs, weights = (buffers[n].float().cpu().numpy() for n in OUTPUTS)
        return probs, weights


class TensorRTBackend(EngineRunner):
    """The folder's engine, once ``unusable`` finds nothing against it."""

    name = "tensorrt"

    def __init__(self, spec: ModelSpec) -> None:
        why = unusable(spec)
        if why is not None:
            raise EmoflowError(why)
        path = spec.folder / ENGINE_FILE
        super().__init__(path.read_bytes(), str(path), spec.arch)


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bool: torch.bool,
             trt.int32: torch.int32, trt.int64: torch.int64}  # fmt: skip
    return table[dtype]
