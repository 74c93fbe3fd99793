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

Whether it can serve us, answered before MLflow touches it: MLflow answers late or wrongly: a
``sqlite:///`` file that is absent is created empty (with its folder) and the question then fails
as "no such alias"; a read-only one fails at the first write with chained tracebacks; a tracking
server that is down is retried for minutes (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` 7, backoff factor
2: 4 min 22 s in issue 17). ``check_store`` answers each in seconds with the URI, without
importing mlflow, so the CLI can ask before loading a model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

from emoflow.errors import EmoflowError

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


# A server that accepts no connection within this is down for our purpose.
PROBE_TIMEOUT_S = 5.0


class RegistryError(EmoflowError):
    """A registry request that cannot be answered: unknown model, version or alias, or a store
    that is absent, read-only or unreachable."""


def registry_uri() -> str:
    """``MLFLOW_REGISTRY_URI`` when set, else the tracking URI (MLflow's own rule)."""
    return os.environ.get("MLFLOW_REGISTRY_URI", "").strip() or tracking_uri()


def check_store(*, must_exist: bool = True, writable: bool = False) -> None:
    """RegistryError naming the store when the tracking or registry store cannot serve us."""
    for uri in dict.fromkeys((tracking_uri(), registry_uri())):
        problem = store_problem(uri, must_exist=must_exist, writable=writable)
        if problem is not None:
            raise RegistryError(problem)


def store_problem(uri: str, *, must_exist: bool = True, writable: bool = False) -> str | None:
    """Why the store at ``uri`` cannot be used as asked, or None (other schemes: MLflow's say)."""
    path = sqlite_path(uri)
    if path is not None:
        if not path.is_file():
            if not must_exist:
                return None
            return (f"registry {uri} does not exist (no file {path}): register a model first "
                    "(`emoflow register`), or set MLFLOW_TRACKING_URI to the registry's store")
        # sqlite writes a journal beside the file: the folder must be writable too.
        if writable and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
            return (f"registry {uri} is read-only ({path} or its folder is not writable): "
                    "register and promote write to it")  # fmt: skip
        return None
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https") and parts.hostname:
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S).close()
        except (OSError, ValueError) as exc:
            why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            return (f"tracking server {uri} is not reachable ({why}): start it, or set "
                    "MLFLOW_TRACKING_URI to one that runs")  # fmt: skip
    return None


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///<path>`` URI (relative to cwd, or absolute with 4 slashes);
    None for other stores and in-memory databases."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" and not path.startswith("file:") else None


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """An MLflow failure of the store (a write refused, a server error) as one RegistryError
    line naming the registry, instead of MLflow's chained tracebacks."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise RegistryError(f"registry {registry_uri()}: {first_line(exc)}") from exc


def first_line(exc: Exception) -> str:
    """MLflow's messages carry SQL and parameters after the first line."""
    text = (getattr(exc, "message", None) or str(exc)).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
