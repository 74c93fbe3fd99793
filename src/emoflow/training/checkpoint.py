"""Checkpoints (every epoch, for resuming) and the kept model file (for evaluation, export).

Both are written atomically, so a training killed at any moment leaves the previous epoch's
checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emoflow.errors import InputError
from emoflow.fsio import atomic_path

LAST = "last.pt"
BEST = "best.pt"
MODEL_FILE = "model.pt"


def fingerprint(*parts: Any) -> str:
    """A stable hash of what a training depends on: a checkpoint of other settings is not
    resumed."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def code_fingerprint() -> str:
    """A hash of the code that shapes a training (models, trainer, datasets): a checkpoint
    written by other code is not resumed."""
    import emoflow

    root = Path(emoflow.__file__).parent
    files = sorted([*(root / "models").glob("*.py"), *(root / "training").glob("*.py"),
                    root / "datasets" / "clips.py"])  # fmt: skip
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def files_fingerprint(paths: list[Path]) -> str:
    """A hash of the files' contents: new face files (other faces params, new data) mean a
    new training even when the manifests list the same clips."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def save(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint or model file as data: tensors and plain Python values only. A file is
    never allowed to run code (``weights_only``), whoever registered it."""
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


def load_model_file(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The kept model and its metadata (classes, architecture, preprocessing)."""
    from emoflow.models import build_model

    meta = load(path)
    model = build_model(meta["arch"], len(meta["classes"]), **meta["model_config"])
    model.load_state_dict(meta["state_dict"])
    return model.eval(), meta
