"""The thesis's two models and a registry that builds either by name.

Classes come from the data (``params.yaml`` ``classes`` or an imported dataset's list): models take
only ``num_classes``; the class names and their order stay with the data and the trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

from torch import nn

from emoflow.models.aggregate import aggregate_clip_probabilities
from emoflow.models.deep_emotion import DeepEmotion, build_deep_emotion
from emoflow.models.fan import FAN, FANOutput, build_fan

ModelName = Literal["fan", "deep_emotion"]

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fan": build_fan,
    "deep_emotion": build_deep_emotion,
}
assert set(BUILDERS) == set(get_args(ModelName))


def build_model(name: ModelName, num_classes: int, **kwargs: object) -> nn.Module:
    """``build_fan`` or ``build_deep_emotion`` by name; ``kwargs`` go to the builder."""
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(BUILDERS)}") from None
    return builder(num_classes, **kwargs)


__all__ = [
    "BUILDERS",
    "FAN",
    "DeepEmotion",
    "FANOutput",
    "ModelName",
    "aggregate_clip_probabilities",
    "build_deep_emotion",
    "build_fan",
    "build_model",
]
