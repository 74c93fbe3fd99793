"""The retrain flow's steps and the DVC stages each one reproduces.

``dvc.yaml`` stays the one definition of the stage graph: a step names its last stages and DVC
brings everything upstream up to date first (skipping what its lock says is unchanged). The names
are checked against ``dvc.yaml`` before anything runs, so a renamed stage fails the flow at once
with the name, not halfway through a training.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from emoflow.config import (
    Params,
    PipelineKubeflowParams,
    PipelineParams,
    PipelineSyncParams,
    PipelineTimeouts,
    load_params,
)
from emoflow.errors import InputError
from emoflow.models import registry

MODELS: tuple[str, ...] = registry.NAMES
# The flow's steps in order; those with stages run DVC, the others the release commands.
STEPS: tuple[str, ...] = ("sync", "validate", "preprocess", "train", "evaluate", "export",
                          "convert", "register", "promote", "report")  # fmt: skip
_DATA_TARGETS = {"validate": ("validate",), "preprocess": ("split",)}  # split pulls trim, faces
_MODEL_STEPS = ("train", "evaluate", "export")


def step_targets(step: str, models: Sequence[str]) -> list[str]:
    """The DVC targets of ``step``: ``["split"]`` for preprocess, ``["train@fan", …]`` for train."""
    if step in _DATA_TARGETS:
        return list(_DATA_TARGETS[step])
    if step in _MODEL_STEPS:
        return [f"{step}@{m}" for m in models]
    raise ValueError(f"step {step!r} runs no DVC stages")


def check_models(models: Sequence[str]) -> tuple[str, ...]:
    """``models`` without repeats, each one emoflow trains; an unknown name is an error."""
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ValueError(f"models must be a non-empty subset of {list(MODELS)}, got {list(models)}")
    return tuple(dict.fromkeys(models))


def dvc_stage_names(dvc_yaml: Path) -> set[str]:
    """Every stage address in ``dvc_yaml``, ``foreach`` stages expanded (``train@fan``)."""
    try:
        doc = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise InputError(dvc_yaml, "not found: the flow runs in the repository root") from exc
    names: set[str] = set()
    for name, stage in (doc.get("stages") or {}).items():
        items = stage.get("foreach") if isinstance(stage, dict) else None
        if isinstance(items, list):
            names.update(f"{name}@{item}" for item in items)
        elif isinstance(items, dict):
            names.update(f"{name}@{key}" for key in items)
        else:
            names.add(name)
    return names


def check_targets(dvc_yaml: Path, models: Sequence[str]) -> None:
    """Fail with the missing names when ``dvc_yaml`` lacks a stage the flow would run."""
    known = dvc_stage_names(dvc_yaml)
    wanted = [t for step in STEPS if step in _DATA_TARGETS or step in _MODEL_STEPS
              for t in step_targets(step, models)]  # fmt: skip
    missing = [t for t in wanted if t not in known]
    if missing:
        raise InputError(dvc_yaml, f"has no stage {', '.join(missing)}; the retrain flow runs "
                         f"{', '.join(wanted)}")  # fmt: skip


@dataclass(frozen=True)
class RunSettings:
    """One flow run's choices: its parameters where given, else params.yaml's ``pipeline``."""

    models: tuple[str, ...]
    convert: bool
    metric: str
    min_delta: float
    sync: PipelineSyncParams
    timeout_h: PipelineTimeouts
    params: Params
    train_on: str = "local"
    kubeflow: PipelineKubeflowParams = field(default_factory=PipelineKubeflowParams)

    def as_dict(self) -> dict[str, Any]:
        return {"models": list(self.models), "convert": self.convert, "metric": self.metric,
                "min_delta": self.min_delta, "sync": self.sync.model_dump(),
                "train_on": self.train_on}  # fmt: skip


def resolve(params_file: Path, models: Sequence[str] | None = None, convert: bool | None = None,
            metric: str | None = None, min_delta: float | None = None,
            sync_mode: str | None = None, train_on: str | None = None) -> RunSettings:  # fmt: skip
    """Merge a run's parameters over ``params_file``; the result is checked by the same strict
    model (a wrong metric name fails here, naming the key)."""
    params = load_params(params_file)
    given = {"models": models, "convert": convert, "promote_metric": metric,
             "promote_min_delta": min_delta, "train_on": train_on}  # fmt: skip
    section = params.pipeline.model_dump() | {k: v for k, v in given.items() if v is not None}
    if sync_mode is not None:
        section["sync"] = section["sync"] | {"mode": sync_mode}
    try:
        p = PipelineParams.model_validate(section)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        raise InputError(params_file, f"flow parameter {key}: {err['msg']}") from exc
    return RunSettings(check_models(p.models), p.convert, p.promote_metric, p.promote_min_delta,
                       p.sync, p.timeout_h, params, p.train_on, p.kubeflow)  # fmt: skip


@contextlib.contextmanager
def inside(repo: Path) -> Iterator[None]:
    """Work with ``repo`` as cwd. The flow's own paths come from ``Layout(repo)``; what still
    reads the cwd is MLflow's default store (``sqlite:///<cwd>/mlflow.db``) and the relative
    paths that runs record as given (``register``'s lineage keys, named as ``dvc.lock`` names
    them; ``promote``'s test manifest in its report)."""
    before = Path.cwd()
    os.chdir(repo)
    try:
        yield
    finally:
        os.chdir(before)
