"""Where the model runs: whether this machine has a GPU, and why the backend was chosen."""

from __future__ import annotations

import functools

from emoflow.inference import Predictor


@functools.cache
def has_gpu() -> bool:
    """A CUDA device torch can see (the model service then asks BentoML for one)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver means no GPU, not a dead service
        return False


def backend_reason(predictor: Predictor) -> str:
    """One line: why ``auto`` (or the configured backend) gave this backend."""
    from emoflow.inference import trt
    from emoflow.inference.backends import onnx_problem

    spec = predictor.spec
    chosen = predictor.backend
    if chosen == "tensorrt":
        return "TensorRT engine built for this GPU and TensorRT version"
    no_trt = trt.unusable(spec) or "TensorRT not asked for"
    if chosen == "onnx":
        providers = predictor.info().get("providers") or []
        return f"ONNX Runtime ({', '.join(providers) or 'CPU'}); no TensorRT: {no_trt}"
    problem = onnx_problem(spec) or "ONNX Runtime not asked for"
    return f"PyTorch; no TensorRT: {no_trt}; no ONNX: {problem}"
