"""The architectures emoflow trains: one entry each, the one place a model is named.

An entry owns the model's name, its section of params.yaml (``train.<name>``, a class of
``emoflow.config``), its builder, its training task and its clip forward (what every backend
runs, ``models.clip``). The CLI's ``--model`` choices, the retrain flow's plan, Kubeflow's
``--model``, the export opsets and the MLflow names and filters all read this table.

Importing it costs nothing (no torch): the code an entry names is given as ``module:attribute``
and imported when first used. That also keeps the import graph one-way: the training tasks sit
above the models, the CLI answers ``--help`` before torch loads.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emoflow.config import (
    DeepEmotionTrainParams,
    FanTrainParams,
    ModelName,
    Strict,
    TrainParams,
    model_names,
)

if TYPE_CHECKING:
    from torch import Tensor, nn

    from emoflow.training.tasks import Task


@dataclass(frozen=True)
class Architecture:
    name: str
    params: type[Strict]  # its section train.<name> of params.yaml
    builder: str  # "module:function": (num_classes, **model_config) → nn.Module
    task: str  # "module:class": (params section, seed) → the training task
    # "module:function": (model, x, mask, expression) → (probabilities, weights)
    clip_forward: str
    # ONNX opsets it exports at (measured with torch 2.14): FAN's einsum needs 12, Deep-Emotion's
    # GridSample 16; 20 is the highest the TorchScript exporter supports (it only warns above).
    opsets: range

    @property
    def registered_name(self) -> str:
        """Its name in the MLflow registry (``deep_emotion`` → ``emoflow-deep-emotion``)."""
        return "emoflow-" + self.name.replace("_", "-")

    @property
    def experiment(self) -> str:
        """The MLflow experiment its trainings log to."""
        return f"emoflow-{self.name}"

    def section(self, train: TrainParams) -> Strict:
        """Its settings in params.yaml's ``train``."""
        return getattr(train, self.name)

    def build(self, num_classes: int, **model_config: Any) -> nn.Module:
        return _load(self.builder)(num_classes, **model_config)

    def make_task(self, section: Strict, seed: int) -> Task:
        return _load(self.task)(section, seed)

    def forward(self) -> Callable[..., tuple[Tensor, Tensor]]:
        return _load(self.clip_forward)


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("fan", FanTrainParams, "emoflow.models.fan:build_fan",
                 "emoflow.training.tasks:FanTask", "emoflow.models.clip:attention_clip",
                 opsets=range(12, 21)),
    Architecture("deep_emotion", DeepEmotionTrainParams,
                 "emoflow.models.deep_emotion:build_deep_emotion",
                 "emoflow.training.tasks:DeepEmotionTask", "emoflow.models.clip:frame_mean_clip",
                 opsets=range(16, 21)),
)}  # fmt: skip
NAMES: tuple[str, ...] = tuple(ARCHITECTURES)

# params.yaml's schema (config.TrainParams) has a section for each entry, of the entry's class.
_SECTIONS = {n: TrainParams.model_fields[n].annotation for n in model_names()}
if {a.name: a.params for a in ARCHITECTURES.values()} != _SECTIONS:
    raise ImportError(f"config.TrainParams's model sections {_SECTIONS} differ from the "
                      f"registry's {list(ARCHITECTURES)}")  # fmt: skip


__all__ = ["ARCHITECTURES", "NAMES", "Architecture", "ModelName", "get"]


def get(name: str) -> Architecture:
    """The entry of ``name``; ValueError naming the known ones otherwise."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(NAMES)}") from None


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)
