"""The registry's read side: a model URI resolved, and its version as a local model folder.

``fetch("models:/emoflow-fan@champion")`` (or ``…/3``) resolves the alias once and gives the
version's folder, downloaded once per version into a cache (``download_version``): what
``emoflow predict``, ``promote`` and the service serve from. Below inference, so the inference
core can open a registered version without importing the release package that writes them
(``emoflow.release.registry.register``).

Where the registry lives: the tracking URI (``emoflow.tracking.store.tracking_uri``), so
the sqlite default and a server both work; ``MLFLOW_REGISTRY_URI`` overrides it as in MLflow.
Before MLflow touches a store, ``emoflow.tracking.store.check_store`` says what is wrong with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from emoflow.artifact import MODEL_FILE
from emoflow.tracking.store import (
    RegistryError,
    check_store,
    first_line,
    registry_uri,
    tracking_uri,
)
from emoflow.tracking.store import import_mlflow as _mlflow

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
ARTIFACTS_DIR = "artifacts"  # where pyfunc puts a python model's files inside the logged model
CACHE_ENV = "EMOFLOW_MODEL_CACHE"
URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
# Registry answers that mean "no such model, version or alias" (others are store failures).
NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))/?")


@dataclass(frozen=True)
class Fetched:
    """A registered version as a local model folder, and which version it is."""

    name: str  # emoflow-fan
    version: str
    alias: str | None  # the alias the URI named, if any (resolved to ``version``)
    folder: Path


def fetch(uri: str) -> Fetched:
    """The model folder of ``uri`` (``models:/<name>@<alias>`` or ``models:/<name>/<version>``).

    The alias is resolved once, so the files are that version's even if the alias moves while
    they download."""
    _, alias, _ = parse_model_uri(uri)
    mv = get_version(uri)
    folder = download_version(f"models:/{mv.name}/{mv.version}")
    return Fetched(mv.name, str(mv.version), alias, folder)


# --------------------------------------------------------------------------- where


def client(*, must_exist: bool = True, writable: bool = False) -> MlflowClient:
    """A client of our stores, after ``check_store`` (``register`` may create the first store;
    every other use reads one that exists)."""
    check_store(must_exist=must_exist, writable=writable)
    mlflow = _mlflow()
    return mlflow.MlflowClient(tracking_uri=tracking_uri(), registry_uri=registry_uri())


@contextlib.contextmanager
def global_uris() -> Iterator[None]:
    """Point MLflow's global URIs at ours for the duration, then restore the caller's.

    The fluent API (``pyfunc.log_model``) logs to them, and MLflow's own stores build clients
    from them (the sqlite registry resolves a ``models:/<model id>`` source that way), whatever
    URI the client we call was given; an earlier run in this process may have set them.
    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the environment, so
    the environment is restored too.
    """
    mlflow = _mlflow()
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    uris = tracking_uri(), registry_uri()
    env = {k: os.environ.get(k) for k in URI_ENV}
    # MLflow keeps no public getter for "set by set_*_uri, not resolved": read its globals.
    before = (getattr(tracking_utils, "_tracking_uri", None),
              getattr(registry_utils, "_registry_uri", None))  # fmt: skip
    mlflow.set_tracking_uri(uris[0])
    mlflow.set_registry_uri(uris[1])
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value



# --------------------------------------------------------------------------- resolve, download


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` → (name, alias, None); ``models:/name/3`` → (name, None, "3")."""
    m = _URI.fullmatch(uri.strip())
    if m is None:
        raise RegistryError(f"{uri!r} is not a model URI: models:/<name>@<alias> or "
                            f"models:/<name>/<version>")  # fmt: skip
    return m["name"], m["alias"], m["version"]


def get_version(uri: str, c: MlflowClient | None = None) -> ModelVersion:
    """The version a model URI names; a clear error for an unknown model, version or alias."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_uri(uri)
    c = c or client()
    try:
        if alias is not None:
            return c.get_model_version_by_alias(name, alias)
        return c.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code not in NOT_FOUND_CODES:
            raise RegistryError(f"{uri}: registry {registry_uri()} failed: "
                                f"{first_line(exc)}") from exc
        what = f"no version has alias {alias!r}" if alias else f"no version {version}"
        hint = " (run `emoflow promote`)" if alias == CHAMPION else ""
        raise RegistryError(f"{uri}: {what} in {registry_uri()}{hint} ({exc.message})") from exc


def _model_id(source: str) -> str | None:
    """``models:/m-<hex>`` (a LoggedModel's URI, what ``register`` records) → ``m-<hex>``."""
    m = re.fullmatch(r"models:/(m-[0-9a-f]+)", source)
    return m[1] if m else None


def default_cache_dir() -> Path:
    """``$EMOFLOW_MODEL_CACHE``, else ``$XDG_CACHE_HOME/emoflow/models`` (``~/.cache``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "emoflow" / "models"


def download_version(uri: str, cache_dir: Path | None = None) -> Path:
    """A local model folder for ``uri`` (``models:/emoflow-fan@champion``, ``…/3``).

    An alias is resolved on every call (it moves); the files are downloaded once per version
    into ``<cache>/<name>/v<version>-<model id>/``. The model id is part of the key because a
    version number is only unique within one registry: a new ``mlflow.db`` starts at 1 again.
    The download lands in a temp folder renamed into place, so a cached folder is complete and
    processes racing for the same version keep whichever finished first.
    """
    with global_uris():
        return _download(uri, cache_dir)


def _download(uri: str, cache_dir: Path | None) -> Path:
    c = client()
    mv = get_version(uri, c)
    ident = mv.model_id or _model_id(mv.source) or hashlib.sha256(
        f"{mv.source}|{mv.creation_timestamp}".encode()).hexdigest()[:16]
    dest = (cache_dir or default_cache_dir()) / mv.name / f"v{mv.version}-{ident}"
    folder = dest / ARTIFACTS_DIR
    if (folder / MODEL_FILE).is_file():
        log.debug("%s: v%s from the cache %s", uri, mv.version, folder)
        return folder
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        _mlflow().artifacts.download_artifacts(
            artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=str(tmp),
            tracking_uri=tracking_uri(), registry_uri=registry_uri(),
        )  # fmt: skip
        if not (tmp / ARTIFACTS_DIR / MODEL_FILE).is_file():
            raise RegistryError(f"{uri}: version {mv.version} holds no "
                                f"{ARTIFACTS_DIR}/{MODEL_FILE}: not registered by "
                                "`emoflow register`")
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (folder / MODEL_FILE).is_file():
                raise  # not a lost race: something else is wrong
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: downloaded v%s to %s", uri, mv.version, folder)
    return folder
