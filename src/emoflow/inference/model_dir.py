"""A model folder (``models/<arch>/`` or a downloaded registry version): what the model expects.

``model.pt`` records the classes, the input (image size, grayscale) and the faces params the
training data was made with (``preprocessing``); nothing here re-types them. Model files from
before ``preprocessing`` was recorded fall back to the current params' faces section, loudly.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emoflow.config import DEFAULT_PARAMS, FacesParams, load_params
from emoflow.errors import InputError
from emoflow.training import checkpoint as ckpt

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
EXPORT_JSON = "export.json"
ENGINE_FILE = "model.engine"
ENGINE_JSON = "engine.json"


@dataclass(frozen=True)
class ModelSpec:
    """The checkpoint's metadata (everything but the weights) and where it lives."""

    folder: Path
    meta: dict[str, Any]
    preprocessing: FacesParams

    @property
    def arch(self) -> str:
        return str(self.meta["arch"])

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def grayscale(self) -> bool:
        return bool(self.meta.get("grayscale", False))

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    @property
    def model_file(self) -> Path:
        return self.folder / ckpt.MODEL_FILE


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_spec(folder: Path, params_path: Path = DEFAULT_PARAMS) -> ModelSpec:
    """The model folder's checkpoint metadata and preprocessing (see the module doc)."""
    path = folder / ckpt.MODEL_FILE
    if not path.exists():
        raise InputError(folder, f"no {ckpt.MODEL_FILE}: not a model folder (run `emoflow train`)")
    meta = ckpt.load(path)
    for key in ("arch", "classes", "model_config", "state_dict", "image_size"):
        if key not in meta:
            raise InputError(path, f"not an emoflow model file (no {key!r})")
    return ModelSpec(folder, meta, _preprocessing(path, meta, params_path))


def _preprocessing(path: Path, meta: dict[str, Any], params_path: Path) -> FacesParams:
    recorded = meta.get("preprocessing")
    if recorded is not None:
        # Keys a newer faces stage added are unknown to older code: keep what this code knows.
        known = {k: v for k, v in recorded.items() if k in FacesParams.model_fields}
        return FacesParams.model_validate(known)
    faces = load_params(params_path).faces if params_path.exists() else FacesParams()
    log.warning("%s records no preprocessing (trained before it was recorded): using the faces "
                "params of %s; retrain to record them", path,
                params_path if params_path.exists() else "the defaults")  # fmt: skip
    return faces


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from exc
