"""The MLflow model registry's write side: a model folder in, one registered version out.

``register`` logs the model folder's servable files (``emoflow.artifact.SERVABLE_FILES``: always
``model.pt``; ``model.onnx``, ``export.json``, ``model.engine``, ``engine.json`` when present) as
one MLflow 3 LoggedModel of the pyfunc flavor whose ``artifacts/`` folder has the model-folder
layout, registers it as a new version of ``emoflow-<arch>`` linked to the training's MLflow run,
tags it with its lineage and test metrics, and moves the alias ``challenger`` to it. The read
side (a model URI back to a local folder: ``fetch``) is ``emoflow.tracking.registry``, below the
inference core that serves it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emoflow.artifact import (
    ENGINE_FILE,
    ENGINE_JSON,
    EXPORT_JSON,
    MODEL_FILE,
    ONNX_FILE,
    SERVABLE_FILES,
    ModelMeta,
    ModelSpec,
    read_json,
    read_spec,
)
from emoflow.errors import InputError
from emoflow.fsio import file_sha256
from emoflow.inference.backends import onnx_problem
from emoflow.layout import LAYOUT
from emoflow.models import registry as architectures
from emoflow.tracking.lineage import lineage_tags
from emoflow.tracking.models import model_requirements
from emoflow.tracking.params import flatten_params, training_params
from emoflow.tracking.registry import CHALLENGER, CHAMPION, client, global_uris
from emoflow.tracking.store import RegistryError, ensure_experiment, store_errors, tracking_uri
from emoflow.tracking.store import import_mlflow as _mlflow
from emoflow.training import checkpoint as ckpt
from emoflow.training.metrics import SUMMARY_METRICS

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from emoflow.config import Params

log = logging.getLogger(__name__)

REGISTERED_NAMES = {a.name: a.registered_name for a in architectures.ARCHITECTURES.values()}
TEST_METRICS = (*SUMMARY_METRICS, "test_clips")  # of metrics/<model>.json, tagged test.<key>
LINEAGE_PREFIXES = ("git.", "dvc.")
DEFAULT_DATA = (LAYOUT.faces, LAYOUT.splits)  # relative: lineage names them as dvc.lock does


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
    files = tuple(f for f in SERVABLE_FILES if (model_dir / f).is_file())
    _check_exports(spec)
    metrics = _read_metrics(metrics_path) if metrics_path is not None else {}
    mlflow = _mlflow()
    from mlflow import pyfunc

    from emoflow.release import pyfunc_model

    with global_uris(), store_errors():
        c = client(must_exist=False, writable=True)  # the first register creates the store
        run = _training_run(c, meta.mlflow_run_id)
        run_id = run.info.run_id if run is not None else None
        run_params = dict(run.data.params) if run is not None else {}
        tags = {
            "emoflow.arch": arch,
            "classes": json.dumps(meta.classes),
            "files": " ".join(files),
            "model.sha256": file_sha256(model_dir / MODEL_FILE),
            **_lineage(run, repo, data_paths),
            "params.hash": params_hash(run_params
                                       or flatten_params(training_params(arch, params))),
            **{f"test.{k}": str(v) for k, v in metrics.items()},
        }  # fmt: skip
        if meta.mlflow_run_id:
            tags["training.run_id"] = meta.mlflow_run_id
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
                             f"{MODEL_FILE}: run `emoflow export` and `emoflow convert` "
                             "again")  # fmt: skip


def _model_metadata(spec: ModelSpec, files: Sequence[str]) -> dict[str, Any]:
    """What a reader of the MLmodel file needs without loading model.pt."""
    return {"arch": spec.arch, "files": list(files), "classes": spec.classes,
            "image_size": spec.image_size, "grayscale": spec.grayscale,
            "frames_per_clip": spec.meta.frames_per_clip,
            "backbone": spec.meta.backbone,  # FAN's frame encoder and its input
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


def _describe(arch: str, meta: ModelMeta, metrics: Mapping[str, float]) -> str:
    scores = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("war", "uar", "macro_f1") if k in metrics)
    return (f"{arch}, {len(meta.classes)} classes, {meta.image_size} px"
            + (f"; test {scores}" if scores else ""))
