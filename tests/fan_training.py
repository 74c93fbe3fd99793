"""FAN trained on ``tiny_faces`` for the backbone and expression tests, and the check they all
make: the inference core (chips → extractors → model) gives what evaluation computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emoflow.artifact import load_model_file
from emoflow.config import load_params
from emoflow.datasets.clips import read_manifest
from emoflow.inference.schema import ClipResult
from emoflow.training.tasks import FanTask
from emoflow.training.trainer import train_model


def train_tiny(tiny_faces: Path, params: Path, folder: Path) -> tuple[Path, Path]:
    """FAN trained by ``params`` with its own weights and feature cache: (model folder, cache)."""
    cache = folder / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOFLOW_WEIGHTS_CACHE", str(cache))
        result = train_model("fan", load_params(params), tiny_faces / "faces",
                             tiny_faces / "splits", folder / "m")  # fmt: skip
    return result.model_file.parent, cache


def core_against_evaluation(folder: Path, params: Path, tiny_faces: Path, split: str
                            ) -> tuple[list[ClipResult], float]:  # fmt: skip
    """``split``'s clips through the Predictor (torch backend) and through the task on cached
    features: the results and the largest difference of a probability."""
    from emoflow.inference.predictor import Predictor

    model, meta = load_model_file(folder / "model.pt")
    refs = read_manifest(tiny_faces / "splits" / f"{split}.csv", tiny_faces / "faces",
                         meta.classes)  # fmt: skip
    task = FanTask(load_params(params).train.fan, 0)
    task.prepare(model, torch.device("cpu"))
    expected = task.predict(model, refs, torch.device("cpu"), 0)
    results = Predictor.from_dir(folder, "torch").predict_face_files([r.path for r in refs])
    got = np.array([[r.probabilities[c] for c in meta.classes] for r in results])
    return results, float(np.abs(got - expected).max())
