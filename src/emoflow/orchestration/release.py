"""The release steps' decisions that need no Prefect: can we convert, is this model registered.

A scheduled run with nothing new must not add a registry version per week: a model folder whose
``model.pt`` a version already holds (its ``model.sha256`` tag) is that version.
"""

from __future__ import annotations

from pathlib import Path

from emoflow.artifact import MODEL_FILE
from emoflow.errors import EmoflowError
from emoflow.fsio import file_sha256


def convert_unavailable() -> str | None:
    """Why TensorRT engines cannot be built here (what is missing and how to get it, in the
    words ``emoflow convert`` would use), or None when a GPU and TensorRT are present."""
    from emoflow.inference.trt import import_tensorrt

    try:
        import_tensorrt()
    except EmoflowError as exc:
        return str(exc)
    return None


def registered_version(model_dir: Path, arch: str) -> tuple[str, str, str | None] | None:
    """(name, version, run id) of the newest version holding ``model_dir``'s model.pt, if any."""
    from emoflow.release.registry import client, registered_name

    name = registered_name(arch)
    sha = file_sha256(model_dir / MODEL_FILE)
    # must_exist=False: before the first register there is no store yet, and none registered.
    found = [v for v in client(must_exist=False).search_model_versions(f"name = '{name}'")
             if v.tags.get("model.sha256") == sha]  # fmt: skip
    if not found:
        return None
    newest = max(found, key=lambda v: int(v.version))
    return name, str(newest.version), newest.run_id
