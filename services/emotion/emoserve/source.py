"""Which model is served: a registry alias, a local folder or a model already in BentoML's store.

Whatever the source, the model files are imported into BentoML's model store (tag
``emoflow-fan:v3`` for registry version 3, ``emoflow-fan:<content hash>`` for a folder), so a
Bento built with these settings carries the model, and the served files are the store's copy.
:class:`ModelHolder` keeps the current :class:`Predictor` and, for an alias, polls the registry
and swaps in the new version when the alias moves, without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import bentoml
from bentoml.exceptions import BentoMLException, NotFound
from pydantic import ValidationError

from emoflow.artifact import SERVABLE_FILES, read_spec
from emoflow.errors import EmoflowError
from emoflow.inference import Predictor
from emoserve.settings import ServiceSettings

log = logging.getLogger("emoflow.service")

STORE_PREFIX = "emoflow-"
T = TypeVar("T")


@dataclass(frozen=True)
class Release:
    """One servable model version and where its files are."""

    name: str  # emoflow-fan
    version: str  # registry version, or the folder's content hash
    alias: str | None
    tag: str  # BentoML store tag
    folder: Path


def settings_or_exit() -> ServiceSettings:
    """The settings, or one line on stderr and exit 2 (read where service.py is imported: its
    decorators take them; reading them contacts nothing)."""
    return _or_exit(ServiceSettings)


def release_or_exit(settings: ServiceSettings) -> Release:
    """The release the settings name (imported into the store), or one line on stderr and
    exit 2 (when the server starts, and in build.sh)."""
    return _or_exit(current_release, settings)


def _or_exit(make: Callable[..., T], *args: object) -> T:
    """A service that cannot start says why in one line, instead of BentoML's traceback."""
    try:
        return make(*args)
    except (EmoflowError, ValidationError) as exc:
        print(f"error: cannot start the service: {_one_line(exc)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()))
        return f"EMOFLOW_{field.upper()}: {first['msg']}" if field else first["msg"]
    return str(exc)


def current_release(settings: ServiceSettings) -> Release:
    """The release the settings name right now (the alias resolved), imported into the store."""
    if settings.model_uri:
        return _from_registry(settings.model_uri)
    if settings.model_dir:
        return _from_folder(settings.model_dir)
    return _from_store(settings.model_tag)


def _from_registry(uri: str) -> Release:
    from emoflow.tracking.registry import fetch

    got = fetch(uri)  # the alias resolved once: the files downloaded are this version's
    return _stored(got.name, got.version, got.alias, got.folder, {"source": uri},
                   f"v{got.version}")  # fmt: skip


def _from_folder(folder: Path) -> Release:
    from emoflow.release.registry import registered_name

    folder = Path(folder)
    spec = read_spec(folder)  # InputError naming the folder when it holds no model
    digest = hashlib.sha256()
    for name in SERVABLE_FILES:
        if (folder / name).is_file():
            digest.update(name.encode())
            digest.update((folder / name).read_bytes())
    return _stored(registered_name(spec.arch), digest.hexdigest()[:12], None, folder,
                   {"source": str(folder.resolve())})  # fmt: skip


def _from_store(tag: str | None) -> Release:
    """A model already in the store: the one named, or the only emoflow model (a Bento's)."""
    if tag is None:
        found = [m for m in bentoml.models.list() if m.tag.name.startswith(STORE_PREFIX)]
        names = {m.tag.name for m in found}
        if len(names) != 1:
            raise EmoflowError("no model configured: set EMOFLOW_MODEL_DIR (a model folder, "
                               "e.g. models/fan) or EMOFLOW_MODEL_URI "
                               "(e.g. models:/emoflow-fan@champion)")  # fmt: skip
        model = max(found, key=lambda m: m.info.creation_time)
    else:
        try:
            model = bentoml.models.get(tag)
        except NotFound as exc:
            raise EmoflowError(f"EMOFLOW_MODEL_TAG={tag}: not in BentoML's model store") from exc
    meta = model.info.metadata
    return Release(model.tag.name, str(meta.get("version", model.tag.version)),
                   meta.get("alias"), str(model.tag), Path(model.path))  # fmt: skip


def _stored(name: str, version: str, alias: str | None, folder: Path, meta: dict,
            tag_version: str | None = None) -> Release:  # fmt: skip
    """Import ``folder``'s model files into the store once (tag name:version); its copy."""
    tag = f"{name}:{tag_version or version}"
    try:
        model = bentoml.models.get(tag)
    except NotFound:
        try:
            meta = {**meta, "version": version}
            with bentoml.models.create(tag, labels={"source": "emoflow"}, metadata=meta) as staged:
                for f in SERVABLE_FILES:
                    if (folder / f).is_file():
                        shutil.copy2(folder / f, Path(staged.path) / f)
            log.info("imported %s into BentoML's model store as %s", folder, tag)
        except BentoMLException:  # another worker imported it first
            pass
        # The store's copy: the object `create` yields keeps the path of its temp folder,
        # which is gone once the model is saved.
        model = bentoml.models.get(tag)
    return Release(name, version, alias, tag, Path(model.path))


class ModelHolder(Generic[T]):
    """What is served (a Predictor, or only its spec), built from the current release by
    ``make``; with ``follow``, a daemon thread follows an alias every ``reload_s``."""

    def __init__(self, settings: ServiceSettings, make: Callable[[Release], T] | None = None,
                 follow: bool = True) -> None:  # fmt: skip
        self.settings = settings
        self._make: Callable[[Release], T] = make or self._predictor  # type: ignore[assignment]
        self._lock = threading.Lock()
        self.release = current_release(settings)
        self.predictor = self._make(self.release)
        self.loaded_at = time.time()
        if follow and settings.model_uri and "@" in settings.model_uri and settings.reload_s > 0:
            threading.Thread(target=self._follow, name="emoflow-reload", daemon=True).start()

    def _predictor(self, release: Release) -> Predictor:
        return Predictor.from_dir(release.folder, self.settings.backend, name=release.name,
                                  version=release.version, alias=release.alias)  # fmt: skip

    def refresh(self) -> bool:
        """Load the version the alias names now if it moved; True when it changed."""
        release = current_release(self.settings)
        if release.tag == self.release.tag:
            return False
        predictor = self._make(release)  # load outside the lock: requests keep being served
        with self._lock:
            old, self.release, self.predictor = self.release, release, predictor
            self.loaded_at = time.time()
        log.info("model reloaded: %s → %s (%s)", old.tag, release.tag,
                 getattr(predictor, "backend", "spec only"))  # fmt: skip
        return True

    def current(self) -> tuple[Release, T]:
        with self._lock:
            return self.release, self.predictor

    def _follow(self) -> None:
        while True:
            time.sleep(self.settings.reload_s)
            try:
                self.refresh()
            except Exception as exc:  # a registry outage must not stop serving the current one
                log.warning("model reload check failed (keeping %s): %s", self.release.tag, exc)


if __name__ == "__main__":  # build.sh: the release a Bento is to carry, imported; its tag
    print(release_or_exit(settings_or_exit()).tag)
