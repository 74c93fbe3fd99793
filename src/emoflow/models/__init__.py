"""The thesis's two models, and the registry of the architectures emoflow trains.

Classes come from the data (``params.yaml`` ``classes`` or an imported dataset's list): models take
only ``num_classes``; the class names and their order stay with the data and the trainer.

The networks load torch; they are imported on first use, so that ``emoflow.models.registry``
(the list of models, which the CLI reads before any command runs) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from emoflow.models.registry import ModelName, get

if TYPE_CHECKING:
    from torch import nn

    from emoflow.models.aggregate import aggregate_clip_probabilities
    from emoflow.models.deep_emotion import DeepEmotion, build_deep_emotion
    from emoflow.models.fan import FAN, FANOutput, build_fan

_LAZY = {
    "aggregate_clip_probabilities": "emoflow.models.aggregate",
    "DeepEmotion": "emoflow.models.deep_emotion",
    "build_deep_emotion": "emoflow.models.deep_emotion",
    "FAN": "emoflow.models.fan",
    "FANOutput": "emoflow.models.fan",
    "build_fan": "emoflow.models.fan",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(name: ModelName, num_classes: int, **kwargs: object) -> nn.Module:
    """The architecture ``name``'s network (``models.registry``); ``kwargs`` go to its builder."""
    return get(name).build(num_classes, **kwargs)


__all__ = [
    "FAN",
    "DeepEmotion",
    "FANOutput",
    "ModelName",
    "aggregate_clip_probabilities",
    "build_deep_emotion",
    "build_fan",
    "build_model",
]
