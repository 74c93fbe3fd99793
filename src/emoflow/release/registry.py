"""The MLflow model registry: a model folder in, one registered version out, and back again.

``register`` logs the model folder (``model.pt``, and ``model.onnx``, ``export.json``,
``model.engine``, ``engine.json`` when present) as one MLflow 3 LoggedModel of the pyfunc flavor
whose ``artifacts/`` folder has the model-folder layout (CONTRACT.md), registers it as a new
version of ``emoflow-<arch>`` linked to the training's MLflow run, tags it with its lineage and
test metrics, and moves the alias ``challenger`` to it. ``download_version`` turns
``models:/emoflow-fan@champion`` (or ``/3``) back into a local model folder, cached by version.

Where the registry lives: the tracking URI (``emoflow.tracking.store.tracking_uri``), so
the sqlite default and a server both work; ``MLFLOW_REGISTRY_URI`` overrides it as in MLflow.
Before MLflow touches a store, ``emoflow.release.store.check_store`` says what is wrong with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emoflow.errors import InputError
from emoflow.inference.backends import onnx_problem
from emoflow.inference.model_dir import (
    ENGINE_FILE,
    ENGINE_JSON,
    EXPORT_JSON,
    ONNX_FILE,
    ModelSpec,
    file_sha256,
    read_json,
    read_spec,
)
from emoflow.models import registry as architectures
from emoflow.release.store import (
    RegistryError,
    check_store,
    first_line,
    registry_uri,
    store_errors,
)
from emoflow.tracking.lineage import lineage_tags
from emoflow.tracking.models import model_requirements
from emoflow.tracking.params import flatten_params, training_params
from emoflow.tracking.store import ensure_experiment, tracking_uri
from emoflow.tracking.store import import_mlflow as _mlflow
from emoflow.training import checkpoint as ckpt
from emoflow.training.metrics import SUMMARY_METRICS

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

    from emoflow.config import Params

log = logging.getLogger(__name__)

REGISTERED_NAMES = {a.name: a.registered_name for a in architectures.ARCHITECTURES.values()}
CHAMPION = "champion"
CHALLENGER = "challenger"
# What a version carries of a model folder (CONTRACT.md), in this order; model.pt is required.
MODEL_FILES = (ckpt.MODEL_FILE, ONNX_FILE, EXPORT_JSON, ENGINE_FILE, ENGINE_JSON)
ARTIFACTS_DIR = "artifacts"  # where pyfunc puts a python model's files inside the logged model
CACHE_ENV = "EMOFLOW_MODEL_CACHE"
URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
TEST_METRICS = (*SUMMARY_METRICS, "test_clips")  # of metrics/<model>.json, tagged test.<key>
LINEAGE_PREFIXES = ("git.", "dvc.")
DEFAULT_DATA = (Path("data/processed/faces"), Path("data/processed/splits"))
# Registry answers that mean "no such model, version or alias" (others are store failures).
NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))/?")


def registered_name(arch: str) -> str:
    """``fan`` → ``emoflow-fan``, ``deep_emotion`` → ``emoflow-deep-emotion``."""
    try:
        return REGISTERED_NAMES[arch]
    except KeyError:
        raise RegistryError(f"unknown model {arch!r}: one of {sorted(REGISTERED_NAMES)}") from None


@dataclass(frozen=True)
class Registered:
    """One registered version, as ``register`` made it."""

    name: str
    version: str
    model_id: str
    run_id: str | None
    files: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


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


# --------------------------------------------------------------------------- register


def register(model_dir: Path, arch: str, params: Params, metrics_path: Path | None = None,
             data_paths: Sequence[Path] = DEFAULT_DATA, repo: Path = Path(".")
             ) -> Registered:  # fmt: skip
    """Register ``model_dir`` as a new version of ``emoflow-<arch>`` and make it ``@challenger``.

    Lineage (``git.*``, ``dvc.*``) and the params hash come from the training's MLflow run when
    ``model.pt`` names one that this store holds (what the model was trained on); otherwise from
    the workspace (``dvc.lock`` over ``data_paths``, ``params``), and ``lineage.source`` says
    which. Test metrics come from ``metrics_path`` (``emoflow evaluate``'s JSON) when it exists.
    """
    name = registered_name(arch)
    spec = _read_model(model_dir, arch)
    meta = spec.meta
    files = tuple(f for f in MODEL_FILES if (model_dir / f).is_file())
    _check_exports(spec)
    metrics = _read_metrics(metrics_path) if metrics_path is not None else {}
    mlflow = _mlflow()
    from mlflow import pyfunc

    from emoflow.release import pyfunc_model

    with global_uris(), store_errors():
        c = client(must_exist=False, writable=True)  # the first register creates the store
        run = _training_run(c, meta.get("mlflow_run_id"))
        run_id = run.info.run_id if run is not None else None
        run_params = dict(run.data.params) if run is not None else {}
        tags = {
            "emoflow.arch": arch,
            "classes": json.dumps(meta["classes"]),
            "files": " ".join(files),
            "model.sha256": file_sha256(model_dir / ckpt.MODEL_FILE),
            **_lineage(run, repo, data_paths),
            "params.hash": params_hash(run_params
                                       or flatten_params(training_params(arch, params))),
            **{f"test.{k}": str(v) for k, v in metrics.items()},
        }  # fmt: skip
        if meta.get("mlflow_run_id"):
            tags["training.run_id"] = str(meta["mlflow_run_id"])
        logged = mlflow.initialize_logged_model(
            name=name, source_run_id=run_id, tags=tags, params=run_params or None,
            model_type=f"emoflow-{arch}",
            experiment_id=(run.info.experiment_id if run is not None
                           else ensure_experiment(f"emoflow-{arch}", tracking_uri())),
        )  # fmt: skip
        pyfunc.log_model(
            name=name,
            python_model=pyfunc_model.__file__,  # models from code: no pickle
            artifacts={f: str(model_dir / f) for f in files},
            metadata=_model_metadata(spec, files),
            pip_requirements=model_requirements(),
            model_id=logged.model_id,
        )
        _ensure_registered_model(c, name, arch)
        mv = c.create_model_version(name, source=f"models:/{logged.model_id}", run_id=run_id,
                                    tags=tags, model_id=logged.model_id,
                                    description=_describe(arch, meta, metrics))  # fmt: skip
        c.set_registered_model_alias(name, CHALLENGER, mv.version)
    log.info("register: %s v%s (%s) ← %s, alias %s; lineage from the %s", name, mv.version,
             ", ".join(files), model_dir, CHALLENGER, tags["lineage.source"])  # fmt: skip
    return Registered(name, str(mv.version), logged.model_id, run_id, files, tags)


def _read_model(model_dir: Path, arch: str) -> ModelSpec:
    spec = read_spec(model_dir)
    if spec.arch != arch:
        raise InputError(spec.model_file, f"holds a {spec.arch} model, not {arch}")
    return spec


def _check_exports(spec: ModelSpec) -> None:
    """ONNX and engine files must come from this model.pt: stale ones would ship other weights
    under this version's name."""
    folder = spec.folder
    if (folder / ONNX_FILE).exists() or (folder / EXPORT_JSON).exists():
        problem = onnx_problem(spec)
        if problem is not None:
            raise InputError(folder, problem)
    if (folder / ENGINE_FILE).exists() or (folder / ENGINE_JSON).exists():
        engine = read_json(folder / ENGINE_JSON)
        if engine is None or not (folder / ENGINE_FILE).exists():
            raise InputError(folder, f"{ENGINE_FILE} and {ENGINE_JSON} go together: run "
                             "`emoflow convert` again")  # fmt: skip
        if engine.get("source_sha256") != file_sha256(spec.model_file):
            raise InputError(folder / ENGINE_FILE, f"was built from another "
                             f"{ckpt.MODEL_FILE}: run `emoflow export` and `emoflow convert` "
                             "again")  # fmt: skip


def _model_metadata(spec: ModelSpec, files: Sequence[str]) -> dict[str, Any]:
    """What a reader of the MLmodel file needs without loading model.pt."""
    return {"arch": spec.arch, "files": list(files), "classes": spec.classes,
            "image_size": spec.image_size, "grayscale": spec.grayscale,
            "frames_per_clip": spec.meta.get("frames_per_clip"),
            "backbone": spec.meta.get("backbone"),  # FAN's frame encoder and its input
            "preprocessing": spec.preprocessing.model_dump()}  # fmt: skip


def _read_metrics(path: Path) -> dict[str, float]:
    """The test metrics of ``emoflow evaluate``'s JSON (not its val_* copies); {} when absent."""
    if not path.is_file():
        log.warning("register: no %s (run `emoflow evaluate`): the version gets no test.* tags",
                    path)  # fmt: skip
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise InputError(path, "not a JSON object of metrics")
    numbers = {k: v for k, v in doc.items()
               if isinstance(v, int | float) and not isinstance(v, bool)}  # fmt: skip
    return {k: numbers[k] for k in TEST_METRICS if k in numbers}


def _training_run(c: MlflowClient, run_id: str | None) -> Run | None:
    """The training's run when this store holds it (a model trained against another store, or
    before runs were recorded, has none here)."""
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        return c.get_run(str(run_id))
    except MlflowException:
        log.warning("register: training run %s is not in %s; lineage from the workspace",
                    run_id, tracking_uri())  # fmt: skip
        return None


def _lineage(run: Run | None, repo: Path, data_paths: Sequence[Path]) -> dict[str, str]:
    if run is not None:
        tags = {k: v for k, v in run.data.tags.items() if k.startswith(LINEAGE_PREFIXES)}
        if tags:
            return {**tags, "lineage.source": "training run"}
    return {**lineage_tags(repo, [str(p) for p in data_paths]), "lineage.source": "workspace"}


def params_hash(flat: Mapping[str, str]) -> str:
    """A hash of flattened params (``flatten_params``; a run's logged params are the same)."""
    return ckpt.fingerprint(dict(sorted(flat.items())))


def _ensure_registered_model(c: MlflowClient, name: str, arch: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(name)
    except MlflowException:
        try:
            c.create_registered_model(name, description=f"emoflow {arch} expression model: "
                                      f"@{CHAMPION} is served, @{CHALLENGER} is the latest")
        except MlflowException:
            c.get_registered_model(name)  # another process created it first


def _describe(arch: str, meta: dict[str, Any], metrics: Mapping[str, float]) -> str:
    scores = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("war", "uar", "macro_f1") if k in metrics)
    return (f"{arch}, {len(meta['classes'])} classes, {meta['image_size']} px"
            + (f"; test {scores}" if scores else ""))


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
    if (folder / ckpt.MODEL_FILE).is_file():
        log.debug("%s: v%s from the cache %s", uri, mv.version, folder)
        return folder
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        _mlflow().artifacts.download_artifacts(
            artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=str(tmp),
            tracking_uri=tracking_uri(), registry_uri=registry_uri(),
        )  # fmt: skip
        if not (tmp / ARTIFACTS_DIR / ckpt.MODEL_FILE).is_file():
            raise RegistryError(f"{uri}: version {mv.version} holds no "
                                f"{ARTIFACTS_DIR}/{ckpt.MODEL_FILE}: not registered by "
                                "`emoflow register`")
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (folder / ckpt.MODEL_FILE).is_file():
                raise  # not a lost race: something else is wrong
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: downloaded v%s to %s", uri, mv.version, folder)
    return folder
