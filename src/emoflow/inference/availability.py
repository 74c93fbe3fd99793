"""Backend names and whether this machine can run each, answered before any model is loaded.

Light on purpose (no torch, no onnxruntime import unless the answer needs it): the CLI and the
service check ``--backend`` here first, so a wrong name or a missing runtime is the first and
only thing reported, in well under a second.
"""

from __future__ import annotations

import importlib.util

from emoflow.errors import EmoflowError

BACKENDS = ("auto", "torch", "onnx", "tensorrt")
INSTALL_HINT = ("pip install tensorrt-cu13 (CUDA 13, as torch 2.14's wheels; the `gpu` extra pins "
                "it) on a machine with an NVIDIA GPU")
# Names people try for "on the GPU": the backends choose the device themselves.
GPU_WORDS = ("cuda", "gpu")


def backend_problem(name: str) -> str | None:
    """Why backend ``name`` cannot run here (unknown, or its runtime missing), or None."""
    if name not in BACKENDS:
        hint = (f"; there is no {name!r} backend: torch and onnx run on a CUDA GPU by themselves "
                "when one is visible, tensorrt needs one" if name.lower() in GPU_WORDS else "")
        return f"unknown backend {name!r}: one of {', '.join(BACKENDS)}{hint}"
    if name == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        return "backend onnx: onnxruntime is not installed (pip install onnxruntime)"
    if name == "tensorrt":
        if importlib.util.find_spec("tensorrt") is None:
            return f"backend tensorrt: TensorRT is not installed: {INSTALL_HINT}"
        import torch

        if not torch.cuda.is_available():
            return "backend tensorrt: no CUDA GPU visible to PyTorch, and TensorRT needs one"
    return None


def check_backend(name: str) -> None:
    """EmoflowError saying what is missing when backend ``name`` cannot run here."""
    problem = backend_problem(name)
    if problem is not None:
        raise EmoflowError(problem)
