"""Where MLflow runs go, and MLflow imported without network.

Where runs go (**convention**): ``MLFLOW_TRACKING_URI`` when set (a real server,
``http://host:5000``), else ``sqlite:///<cwd>/mlflow.db`` with artifacts under
``<cwd>/mlartifacts``.
The stages run from the repo root (``dvc repro``, the CLI, Prefect tasks), so cwd is the repo root
and ``dvc repro`` needs no server. The paths are made absolute so a run started from a sub-folder by
mistake still lands in one place that its URI names exactly.

No network: MLflow 3 sends usage telemetry and fetches its config from the internet at import time;
``disable_telemetry`` opts out (unless the user chose otherwise) before mlflow is first imported
here. mlflow is imported lazily, so importing this module costs nothing for stages that never log.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
OFFLINE_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def disable_telemetry() -> None:
    """Opt out of MLflow's telemetry unless the environment already says otherwise.

    mlflow starts its telemetry client when first imported; if it was imported before this ran,
    re-running its setup drops that client so nothing more is queued for sending.
    """
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    if "mlflow.telemetry" in sys.modules:
        from mlflow.telemetry import set_telemetry_client

        set_telemetry_client()


def import_mlflow() -> ModuleType:
    """``import mlflow``, with telemetry opted out first."""
    disable_telemetry()
    import mlflow

    return mlflow


def default_tracking_uri(root: Path | None = None) -> str:
    """``sqlite:///<root>/mlflow.db`` with ``root`` (default: cwd, the repo root) made absolute."""
    return f"sqlite:///{(root or Path.cwd()).resolve() / DB_NAME}"


def default_artifact_location(root: Path | None = None) -> str:
    """``file://<root>/mlartifacts``: where runs of a local sqlite store keep their files."""
    return ((root or Path.cwd()).resolve() / ARTIFACTS_DIR).as_uri()


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the local default (see the module docstring)."""
    disable_telemetry()
    return os.environ.get("MLFLOW_TRACKING_URI", "").strip() or default_tracking_uri()


def is_local_store(uri: str) -> bool:
    """A sqlite store has no server to choose an artifact root, so emoflow chooses one."""
    return uri.startswith("sqlite:")


def ensure_experiment(name: str, uri: str | None = None) -> str:
    """The id of experiment ``name``, created if missing (restored if deleted).

    Against a local sqlite store the experiment's artifacts go to ``./mlartifacts`` (mlflow's own
    default would be ``./mlruns``); against a server, the server's artifact root decides.
    """
    mlflow = import_mlflow()
    uri = uri or tracking_uri()
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(name)
    if found is None:
        location = default_artifact_location() if is_local_store(uri) else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except mlflow.exceptions.MlflowException:
            found = client.get_experiment_by_name(name)  # another rank or run created it first
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        log.warning("experiment %r was deleted; restoring it to log into it", name)
        client.restore_experiment(found.experiment_id)
    return found.experiment_id
