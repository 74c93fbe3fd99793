"""A PyTorch model as MLflow logs it: its requirements, its signature, the plain module."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from mlflow.models.signature import ModelSignature

# What a pickled emoflow model needs to be unpickled and run (mlflow adds itself). Listed instead
# of inferred: inference loads the model in a subprocess (~5 s per log_model) for the same answer.
MODEL_REQUIREMENTS = ("torch", "torchvision", "numpy", "cloudpickle", "emoflow")


def model_requirements() -> list[str]:
    """Pinned pip requirements of a pickled emoflow model, from the installed versions.

    Local version labels (``2.14.1+cu130``) are dropped: pip cannot resolve them from an index.
    """
    reqs = []
    for dist in MODEL_REQUIREMENTS:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        reqs.append(f"{dist}=={version.split('+')[0]}")
    return reqs


def plain_module(model: torch.nn.Module) -> torch.nn.Module:
    """The user's module inside DDP/DataParallel (``.module``) or torch.compile (``._orig_mod``)."""
    from torch import nn

    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def model_signature(model: torch.nn.Module, example: np.ndarray | Mapping[str, np.ndarray],
                    dynamic_axes: Sequence[int] | None = None) -> ModelSignature:  # fmt: skip
    """Signature from one forward pass over ``example``, with ``dynamic_axes`` set to -1.

    mlflow infers only the batch axis as variable; a clip model also takes any number of frames,
    so by default axis 1 of a 5-D (B, T, C, H, W) input is variable too.
    """
    import torch
    from mlflow.models import infer_signature
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    with torch.no_grad():
        if isinstance(example, Mapping):
            output = model(**{k: torch.as_tensor(v) for k, v in example.items()})
        else:
            output = model(torch.as_tensor(example))
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the model must return one tensor to be logged, got {type(output)}")
    signature = infer_signature(example, output.numpy())
    specs = []
    for spec in signature.inputs.inputs:
        shape = list(spec.shape)
        axes = dynamic_axes if dynamic_axes is not None else (0, 1) if len(shape) == 5 else (0,)
        for axis in axes:
            if axis < len(shape):
                shape[axis] = -1
        specs.append(TensorSpec(spec.type, tuple(shape), spec.name))
    return ModelSignature(inputs=Schema(specs), outputs=signature.outputs)


def as_numpy(example: Any) -> np.ndarray | dict[str, np.ndarray]:
    if isinstance(example, Mapping):
        return {str(k): as_numpy(v) for k, v in example.items()}  # type: ignore[misc]
    if hasattr(example, "detach"):
        example = example.detach().cpu().numpy()
    return np.asarray(example)
