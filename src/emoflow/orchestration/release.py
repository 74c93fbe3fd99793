"""The release steps' decisions that need no Prefect: can we convert, is this model registered.

A scheduled run with nothing new must not add a registry version per week: a model folder whose
``model.pt`` a version already holds (its ``model.sha256`` tag) is that version.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from emoflow.artifact import MODEL_FILE
from emoflow.errors import EmoflowError
from emoflow.fsio import file_sha256

if TYPE_CHECKING:
    from emoflow.config import Params


def convert_unavailable(model_dir: Path | None = None) -> str | None:
    """Why a TensorRT engine cannot be built here (what is missing and how to get it, in the
    words ``emoflow convert`` would use), or for the model in ``model_dir`` (a FAN on expression
    features); None when a GPU and TensorRT are present and the model can be converted."""
    from emoflow.inference.trt import import_tensorrt

    try:
        import_tensorrt()
    except EmoflowError as exc:
        return str(exc)
    if model_dir is not None:
        from emoflow.artifact import read_spec
        from emoflow.release.convert import engine_refusal

        return engine_refusal(read_spec(model_dir))
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


def set_challenger(name: str, version: str) -> None:
    """(Re)point ``@challenger`` at ``version``: a register retried after the version was
    created but before its alias was set finds the version by its model.pt and ends here."""
    from emoflow.release.registry import CHALLENGER, client
    from emoflow.tracking.store import store_errors

    with store_errors():
        client(writable=True).set_registered_model_alias(name, CHALLENGER, version)


def tag_version(name: str, version: str, tags: dict[str, str]) -> None:
    """Tags on a registered version (the retrain run's commit and branch)."""
    from emoflow.release.registry import client
    from emoflow.tracking.store import store_errors

    with store_errors():
        c = client(writable=True)
        for key, value in tags.items():
            c.set_model_version_tag(name, version, key, value)


def register_once(model_dir: Path, arch: str, params: Params, metrics: Path,
                  tags: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """Register ``model_dir`` as ``@challenger`` unless a version holds its model.pt already;
    then that version gets the alias. Either way ``tags`` go on the version. Run twice (a
    retry after a partial failure), it adds no second version and leaves the alias set."""
    from emoflow.release.registry import register

    found = registered_version(model_dir, arch)
    if found is not None:
        name, version, run_id = found
        set_challenger(name, version)
        out: dict[str, Any] = {"name": name, "version": version, "run_id": run_id,
                               "existing": True}  # fmt: skip
    else:
        done = register(model_dir, arch, params, metrics)
        out = {"name": done.name, "version": done.version, "run_id": done.run_id,
               "files": list(done.files), "existing": False}  # fmt: skip
    if tags:
        tag_version(out["name"], out["version"], tags)
    return out
