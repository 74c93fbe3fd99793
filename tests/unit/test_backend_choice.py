"""``auto``'s choice of backend and the reason it records (issue 20: on a GPU machine with the
CPU build of onnxruntime, auto used to pick ONNX Runtime on the CPU over PyTorch on the GPU)."""

from __future__ import annotations

import pytest

from emoflow.inference.backends import auto_choice

NO_TRT = "no model.engine / engine.json: run `emoflow convert` first"
NO_ONNX = "no model.onnx / export.json: run `emoflow export` first"


@pytest.mark.parametrize(
    ("no_trt", "no_onnx", "cuda", "onnx_cuda", "backend", "says"),
    [
        (None, None, True, False, "tensorrt", "TensorRT engine built for this GPU"),
        # the GPU machine with the pinned (CPU) onnxruntime: the GPU, not the CPU runtime
        (NO_TRT, None, True, False, "torch", "this onnxruntime has no CUDA provider"),
        (NO_TRT, None, True, True, "onnx", "ONNX Runtime on the GPU (CUDA provider)"),
        (NO_TRT, None, False, False, "onnx", "ONNX Runtime on the CPU (no CUDA GPU)"),
        (NO_TRT, NO_ONNX, True, True, "torch", "PyTorch on cuda"),
        (NO_TRT, NO_ONNX, False, False, "torch", "PyTorch on cpu"),
    ],
)
def test_auto_never_prefers_a_cpu_runtime_over_the_gpu(
    no_trt: str | None, no_onnx: str | None, cuda: bool, onnx_cuda: bool, backend: str, says: str
) -> None:
    chosen, reason = auto_choice(no_trt, no_onnx, cuda, onnx_cuda)
    assert chosen == backend
    assert reason.startswith("auto: ") and says in reason
    for why in (no_trt, no_onnx):  # what ruled the others out is part of the reason
        if why and chosen != "tensorrt" and not (chosen == "onnx" and why == no_onnx):
            assert why in reason
