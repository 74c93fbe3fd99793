"""Backends behind one interface: ``run(frames, mask) -> (probabilities, weights)`` on numpy.

- ``torch``: the clip graph in PyTorch (CUDA when available);
- ``onnx``: ONNX Runtime on ``model.onnx`` (CUDA provider when installed, else the CPU one),
  session options set for speed;
- ``tensorrt``: a TensorRT engine (``emoflow.inference.trt``, imported only when asked for).

``auto`` takes TensorRT when an engine is there and usable; else ONNX Runtime when
``model.onnx`` is there and current, unless a CUDA GPU is visible and this onnxruntime has no
CUDA provider (the pinned ``onnxruntime`` is the CPU build: a CPU runtime is never preferred
over PyTorch on the GPU); else torch. Each backend carries the ``reason`` it was chosen for
(the service's ``/info`` and ``emoflow predict``'s log show it).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

import numpy as np
import torch

from emoflow.artifact import EXPORT_JSON, ONNX_FILE, ModelSpec, read_json
from emoflow.errors import EmoflowError
from emoflow.fsio import file_sha256
from emoflow.inference.availability import check_backend
from emoflow.inference.graph import input_names, load_clip_model
from emoflow.parallel import cpu_threads

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str
    reason: str  # why this backend serves (open_backend sets it)

    def run(self, frames: np.ndarray, mask: np.ndarray, *expression: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]: ...  # fmt: skip


class TorchBackend:
    name = "torch"
    reason = "asked for (backend torch)"

    def __init__(self, spec: ModelSpec, device: str | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = load_clip_model(spec).to(self.device)

    @torch.inference_mode()
    def run(self, frames: np.ndarray, mask: np.ndarray, *expression: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        x = torch.from_numpy(frames).to(self.device)
        m = torch.from_numpy(mask).to(self.device)
        e = [torch.from_numpy(a).to(self.device) for a in expression]
        probs, weights = self.model(x, m, *e)
        return probs.cpu().numpy(), weights.cpu().numpy()


def onnx_session(path: os.PathLike | str, threads: int | None = None) -> Any:
    """An ONNX Runtime session tuned for latency: all graph optimisations, one intra-op thread
    per core, the CUDA provider first when this onnxruntime build has it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or cpu_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def onnx_has_cuda() -> bool:
    """Whether this onnxruntime build has the CUDA provider (onnxruntime-gpu), not the CPU one."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


class OnnxBackend:
    name = "onnx"
    reason = "asked for (backend onnx)"

    def __init__(self, spec: ModelSpec, threads: int | None = None) -> None:
        problem = onnx_problem(spec)
        if problem:
            raise EmoflowError(problem)
        self.session = onnx_session(spec.folder / ONNX_FILE, threads)
        self.providers = self.session.get_providers()
        self.inputs = input_names(spec)

    def run(self, frames: np.ndarray, mask: np.ndarray, *expression: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        feed = dict(zip(self.inputs, (frames, mask, *expression), strict=True))
        # a graph that reads no pixels (blendshapes alone) may have lost its frames input
        names = {i.name for i in self.session.get_inputs()}
        probs, weights = self.session.run(None, {k: v for k, v in feed.items() if k in names})
        return probs, weights


def onnx_problem(spec: ModelSpec) -> str | None:
    """Why ``model.onnx`` cannot stand for ``model.pt`` (absent, or exported from another
    model file), or None."""
    onnx, export = spec.folder / ONNX_FILE, read_json(spec.folder / EXPORT_JSON)
    if not onnx.exists() or export is None:
        return f"{spec.folder}: no {ONNX_FILE} / {EXPORT_JSON}: run `emoflow export` first"
    if export.get("source_sha256") != file_sha256(spec.model_file):
        return (f"{onnx} was exported from another {spec.model_file.name} (retrained since?): "
                "run `emoflow export` again")  # fmt: skip
    if export.get("onnx_sha256") != file_sha256(onnx):
        return f"{onnx} is not the file {EXPORT_JSON} describes: run `emoflow export` again"
    return None


def auto_choice(no_trt: str | None, no_onnx: str | None, cuda: bool, onnx_cuda: bool
                ) -> tuple[str, str]:  # fmt: skip
    """``auto``'s backend and why, from why TensorRT / ONNX cannot serve (None: they can),
    whether a CUDA GPU is visible and whether onnxruntime has the CUDA provider."""
    if no_trt is None:
        return "tensorrt", "auto: a TensorRT engine built for this GPU and TensorRT version"
    where = "cuda" if cuda else "cpu"
    if no_onnx is None and onnx_cuda and cuda:
        return "onnx", f"auto: ONNX Runtime on the GPU (CUDA provider); no TensorRT: {no_trt}"
    if no_onnx is None and not cuda:
        return "onnx", f"auto: ONNX Runtime on the CPU (no CUDA GPU); no TensorRT: {no_trt}"
    if no_onnx is None:
        return "torch", ("auto: PyTorch on cuda, not ONNX Runtime: this onnxruntime has no CUDA "
                         "provider (the CPU build) and a CPU runtime is not preferred over the "
                         f"GPU; no TensorRT: {no_trt}")  # fmt: skip
    return "torch", f"auto: PyTorch on {where}; no TensorRT: {no_trt}; no ONNX: {no_onnx}"


def open_backend(name: str, spec: ModelSpec, threads: int | None = None) -> Backend:
    """The backend ``name`` (see the module doc for ``auto``), with its ``reason``; ``threads``
    bounds ONNX Runtime's intra-op threads (default one per core)."""
    check_backend(name)
    from emoflow.inference import trt

    impl: Any
    if name == "auto":
        cuda = torch.cuda.is_available()
        name, reason = auto_choice(trt.unusable(spec), onnx_problem(spec), cuda,
                                   cuda and onnx_has_cuda())  # fmt: skip
    else:
        reason = f"asked for (backend {name})"
    if name == "torch":
        impl = TorchBackend(spec)
        reason = reason if "PyTorch on" in reason else f"{reason} on {impl.device.type}"
    elif name == "onnx":
        impl = OnnxBackend(spec, threads)
        if torch.cuda.is_available() and "CUDAExecutionProvider" not in impl.providers:
            log.warning("backend onnx runs on the CPU although a CUDA GPU is here: this "
                        "onnxruntime has no CUDA provider")  # fmt: skip
        reason = f"{reason}; providers {', '.join(impl.providers)}"
    else:
        impl = trt.TensorRTBackend(spec)
    impl.reason = reason
    return impl
