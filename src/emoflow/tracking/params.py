"""What a training run logs of params.yaml, as MLflow params."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from emoflow.config import model_names

if TYPE_CHECKING:
    from emoflow.config import Params

# mlflow.utils.validation.MAX_PARAM_VAL_LENGTH in mlflow 3.17 (a test checks they agree).
MAX_PARAM_VALUE_LENGTH = 6000
TRUNCATED = "..."


def flatten_params(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as MLflow params: ``{"a": {"b": 1}}`` → ``{"a.b": "1"}``.

    Lists and tuples become one JSON string (``"[1, 2]"``), so a list keeps one key and its order;
    values longer than MLflow's limit (6000 characters) are cut and end with ``...`` instead of
    failing the run. An empty mapping keeps its key, as ``"{}"``.
    """
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, name))
        else:
            out[name] = _truncate(_param_text(value))
    return out


def _param_text(value: Any) -> str:
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str)
    return str(value)


def _truncate(text: str) -> str:
    if len(text) <= MAX_PARAM_VALUE_LENGTH:
        return text
    return text[: MAX_PARAM_VALUE_LENGTH - len(TRUNCATED)] + TRUNCATED


def training_params(model_name: str, params: Params) -> dict[str, Any]:
    """The params sections a training of ``model_name`` depends on (what its run logs):
    classes, train (without the other model's section), faces and split."""
    section = params.model_dump(by_alias=True, include={"classes", "train", "faces", "split"})
    section["train"] = {k: v for k, v in section["train"].items()
                        if k not in (set(model_names()) - {model_name})}  # fmt: skip
    return section
