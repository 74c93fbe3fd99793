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
    """One line: why ``auto`` (or the configured backend) gave this backend (the inference
    core records it when it opens the backend)."""
    return str(predictor.info().get("backend_reason") or predictor.backend)
