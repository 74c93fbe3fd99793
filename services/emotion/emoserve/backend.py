"""Where the model runs: whether this machine has a GPU (why its backend was chosen is the
inference core's ``Predictor.backend_reason``)."""

from __future__ import annotations

import functools


@functools.cache
def has_gpu() -> bool:
    """A CUDA device torch can see (the model service then asks BentoML for one)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver means no GPU, not a dead service
        return False
