"""Where the registry lives, and whether it can serve us, answered before MLflow touches it.

MLflow answers late or wrongly: a ``sqlite:///`` file that is absent is created empty (with its
folder) and the question then fails as "no such alias"; a read-only one fails at the first write
with chained tracebacks; a tracking server that is down is retried for minutes
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` 7, backoff factor 2: 4 min 22 s in issue 17). ``check_store``
answers each in seconds with the URI. Light on purpose (no mlflow import), so the CLI can ask
before loading a model.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from emoflow.errors import EmoflowError
from emoflow.tracking.mlflow_utils import tracking_uri

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
