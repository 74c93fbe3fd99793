"""Checkpoints (every epoch, for resuming): their names and what decides whether one resumes.

They are written with ``emoflow.artifact.save_state`` (atomically: a training killed at any
moment leaves the previous epoch's checkpoint intact) and read as data with ``load_state``; the
kept model file is the model folder's (``emoflow.artifact``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from torch import nn

LAST = "last.pt"
BEST = "best.pt"


def fingerprint(*parts: Any) -> str:
    """A stable hash of what a training depends on: a checkpoint of other settings is not
    resumed."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def code_fingerprint() -> str:
    """A hash of the code that shapes a training (models, trainer, datasets, the expression
    features' extractor): a checkpoint written by other code is not resumed."""
    import emoflow

    root = Path(emoflow.__file__).parent
    files = sorted([*(root / "models").glob("*.py"), *(root / "training").glob("*.py"),
                    root / "datasets" / "clips.py", root / "faces" / "blendshapes.py"])  # fmt: skip
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
