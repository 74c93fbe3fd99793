"""The model folder (``models/<arch>/`` or a downloaded registry version): its one owner.

What the folder holds (the file names, the one list of files a release carries), what
``model.pt`` records beside the weights (:class:`ModelMeta`, typed and versioned: written by
training, read by evaluation, inference, release and the service) and how a model is built from
it (:func:`load_model`). Below training, inference and release: it imports none of them.

``model.pt`` stays plain data (tensors, numbers, strings, lists, dicts): it is loaded with
``weights_only=True`` and a file is never allowed to run code, whoever registered it. The
preprocessing it records (the faces params the training data was made with) is what inference
applies; model files from before it was recorded fall back to the current params, loudly.
"""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from emoflow.config import DEFAULT_PARAMS, FacesParams, load_params
from emoflow.errors import InputError
from emoflow.fsio import atomic_path

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
ONNX_FILE = "model.onnx"
ONNX_DATA = "model.onnx.data"  # the weights of an ONNX file saved with external data
EXPORT_JSON = "export.json"
ENGINE_FILE = "model.engine"
ENGINE_JSON = "engine.json"
# What a release carries of a model folder (the registry version, the service's store copy), in
# this order; model.pt is required. Training's checkpoints/ and history stay behind.
SERVABLE_FILES = (MODEL_FILE, ONNX_FILE, ONNX_DATA, EXPORT_JSON, ENGINE_FILE, ENGINE_JSON)
# The training's own files beside them (DVC outputs of `emoflow train`, never released).
HISTORY = "history.json"  # one row of losses and scores per epoch
CURVES = "curves.png"
CHECKPOINTS = "checkpoints"  # last.pt and best.pt, for resuming (emoflow.training.checkpoint)

# model.pt's metadata format. 1: every file written before the format was recorded (no
# ``format`` key; ``preprocessing`` since the faces params were recorded); 2: the same keys with
# ``format``. A newer format than this code knows is refused, naming both.
FORMAT = 2


class ModelMeta(BaseModel):
    """Everything ``model.pt`` records but the weights (``state_dict``, kept beside it)."""

    # ``model_config`` is pydantic's own attribute: the file's key of that name is ``config``.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    format: int = FORMAT
    arch: str
    classes: list[str]
    config: dict[str, Any] = Field(alias="model_config")  # the builder's keyword arguments
    image_size: int
    grayscale: bool = False
    # The faces params the training data was made with (``faces`` of params.yaml, no workers).
    preprocessing: dict[str, Any] | None = None
    epoch: int | None = None  # the kept epoch
    val: dict[str, float] | None = None  # its validation scores (war, uar, macro_f1, loss)
    frames_per_clip: int | None = None
    backbone: dict[str, Any] | None = None  # FAN's frame encoder and its input
    tta_flip: bool = False  # the clip graph averages frames and their mirrors (train.fan)
    mlflow_run_id: str | None = None  # the training's run, when it was tracked

    def to_file(self) -> dict[str, Any]:
        """The plain-data dict ``model.pt`` holds (without the weights)."""
        return self.model_dump(by_alias=True)


def load_state(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint or model file as data: tensors and plain Python values only (see the module
    doc); one-line InputErrors for what is not."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError as exc:
        raise InputError(path, "no such checkpoint") from exc
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(path, "refused: holds more than tensors and plain values, which "
                         f"could run code when loaded ({first[:200]})") from None  # fmt: skip
    except Exception as exc:
        raise InputError(path, f"not a readable checkpoint ({exc})") from exc
    if not isinstance(state, dict):
        raise InputError(path, f"not an emoflow checkpoint (holds a {type(state).__name__})")
    return state


def save_state(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` through a temp file: a kill at any moment leaves the previous file."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def save_model_file(path: Path, meta: ModelMeta, state_dict: dict[str, torch.Tensor]) -> None:
    save_state(path, {**meta.to_file(), "state_dict": state_dict})


def read_model_file(path: Path) -> tuple[ModelMeta, dict[str, torch.Tensor]]:
    """``model.pt``'s metadata (any format up to :data:`FORMAT`) and weights."""
    state = load_state(path)
    weights = state.pop("state_dict", None)
    if weights is None:
        raise InputError(path, "not an emoflow model file (no 'state_dict')")
    state.setdefault("format", 1)
    if not isinstance(state["format"], int) or state["format"] > FORMAT:
        raise InputError(path, f"model file format {state['format']!r}: this emoflow reads up to "
                         f"{FORMAT} (written by a newer emoflow?)")  # fmt: skip
    try:
        return ModelMeta.model_validate(state), weights
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        what = f"no {key!r}" if err["type"] == "missing" else f"{key}: {err['msg']}"
        raise InputError(path, f"not an emoflow model file ({what})") from None


def load_model(meta: ModelMeta, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """The trained network ``meta`` describes with its weights, in eval mode, on the CPU."""
    from emoflow.models import build_model  # torchvision and the backbones: on first use

    model = build_model(meta.arch, len(meta.classes), **meta.config)  # type: ignore[arg-type]
    model.load_state_dict(state_dict)
    return model.eval()


def load_model_file(path: Path) -> tuple[nn.Module, ModelMeta]:
    """The kept model of ``path`` and its metadata (evaluation, the training's logged model)."""
    meta, weights = read_model_file(path)
    return load_model(meta, weights), meta


@dataclass(frozen=True)
class ModelSpec:
    """A model folder read: the metadata, the weights, the preprocessing and where it lives."""

    folder: Path
    meta: ModelMeta
    preprocessing: FacesParams
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def arch(self) -> str:
        return self.meta.arch

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def image_size(self) -> int:
        return self.meta.image_size

    @property
    def grayscale(self) -> bool:
        return self.meta.grayscale

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    @property
    def model_file(self) -> Path:
        return self.folder / MODEL_FILE


def read_spec(folder: Path, params_path: Path = DEFAULT_PARAMS) -> ModelSpec:
    """The model folder's metadata, weights and preprocessing (see the module doc)."""
    path = folder / MODEL_FILE
    if not path.exists():
        raise InputError(folder, f"no {MODEL_FILE}: not a model folder (run `emoflow train`)")
    meta, weights = read_model_file(path)
    return ModelSpec(folder, meta, _preprocessing(path, meta, params_path), weights)


def _preprocessing(path: Path, meta: ModelMeta, params_path: Path) -> FacesParams:
    if meta.preprocessing is not None:
        # Keys a newer faces stage added are unknown to older code: keep what this code knows.
        known = {k: v for k, v in meta.preprocessing.items() if k in FacesParams.model_fields}
        # Before ``track_points`` was recorded, the chips' predictor tracked every face frame.
        known.setdefault("track_points", known.get("landmarks", 68))
        return FacesParams.model_validate(known)
    faces = load_params(params_path).faces if params_path.exists() else FacesParams()
    log.warning("%s records no preprocessing (trained before it was recorded): using the faces "
                "params of %s; retrain to record them", path,
                params_path if params_path.exists() else "the defaults")  # fmt: skip
    return faces


def read_json(path: Path) -> dict[str, Any] | None:
    """A model folder's JSON record (``export.json``, ``engine.json``); None when absent."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from exc
