"""MLflow helpers: where runs go, what every training run records, and logging that can be off.

Where runs go (**convention**): ``MLFLOW_TRACKING_URI`` when set (a real server,
``http://host:5000``), else ``sqlite:///<cwd>/mlflow.db`` with artifacts under
``<cwd>/mlartifacts``.
The stages run from the repo root (``dvc repro``, the CLI, Prefect tasks), so cwd is the repo root
and ``dvc repro`` needs no server. The paths are made absolute so a run started from a sub-folder by
mistake still lands in one place that its URI names exactly.

What a run records: flattened params, lineage tags (git commit and dirtiness, DVC hashes of the data
it read), per-epoch metrics, system metrics (CPU/GPU/memory, via psutil), plots and the model.

No network: MLflow 3 sends usage telemetry and fetches its config from the internet at import time;
``disable_telemetry`` opts out (unless the user chose otherwise) before mlflow is first imported
here. mlflow is imported lazily, so importing this module costs nothing for stages that never log.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

if TYPE_CHECKING:
    import torch
    from mlflow.models.model import ModelInfo
    from mlflow.models.signature import ModelSignature

    from emoflow.config import Params

log = logging.getLogger(__name__)

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
# mlflow.utils.validation.MAX_PARAM_VAL_LENGTH in mlflow 3.17 (a test checks they agree).
MAX_PARAM_VALUE_LENGTH = 6000
TRUNCATED = "..."
OFFLINE_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
# What a pickled emoflow model needs to be unpickled and run (mlflow adds itself). Listed instead
# of inferred: inference loads the model in a subprocess (~5 s per log_model) for the same answer.
MODEL_REQUIREMENTS = ("torch", "torchvision", "numpy", "cloudpickle", "emoflow")
GIT_TIMEOUT_S = 10


# --------------------------------------------------------------------------- where runs go


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


def _mlflow() -> ModuleType:
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
    mlflow = _mlflow()
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


# --------------------------------------------------------------------------- params and lineage


def flatten_params(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as MLflow params: ``{"a": {"b": 1}}`` → ``{"a.b": "1"}``.

    Lists and tuples become one JSON string (``"[1, 2]"``), so a list keeps one key and its order;
    values longer than MLflow's limit (6000 characters) are cut and end with ``...`` instead of
    failing the run. An empty mapping keeps its key, as ``"{}"``.
    """
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, name))
        else:
            out[name] = _truncate(_param_text(value))
    return out


def _param_text(value: Any) -> str:
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str)
    return str(value)


def _truncate(text: str) -> str:
    if len(text) <= MAX_PARAM_VALUE_LENGTH:
        return text
    return text[: MAX_PARAM_VALUE_LENGTH - len(TRUNCATED)] + TRUNCATED


def training_params(model_name: str, params: Params) -> dict[str, Any]:
    """The params sections a training of ``model_name`` depends on (what its run logs):
    classes, train (without the other model's section), faces and split."""
    from emoflow.config import model_names

    section = params.model_dump(by_alias=True, include={"classes", "train", "faces", "split"})
    section["train"] = {k: v for k, v in section["train"].items()
                        if k not in (set(model_names()) - {model_name})}  # fmt: skip
    return section


def lineage_tags(repo: Path = Path("."), data_paths: Sequence[str] = ()) -> dict[str, str]:
    """What a run was made from: ``git.commit``, ``git.dirty`` and ``dvc.<path>`` per data path.

    ``git.commit`` and ``git.dirty`` are ``"unknown"`` outside a git repo or without git;
    ``git.dirty`` is ``"true"`` when tracked files differ from the commit (untracked files such as
    ``mlflow.db`` do not count). ``dvc.<path>`` is the md5 that ``dvc.lock`` records for the stage
    output at exactly ``path`` (or, for data added with ``dvc add``, that ``<path>.dvc`` records);
    a path DVC does not know gets no tag. Paths are repo-relative as in dvc.lock; an absolute path
    inside ``repo`` is made relative.
    """
    repo = Path(repo)
    tags = {"git.commit": "unknown", "git.dirty": "unknown"}
    commit = _git(repo, "rev-parse", "HEAD")
    if commit is not None:
        tags["git.commit"] = commit.strip()
        status = _git(repo, "status", "--porcelain", "--untracked-files=no")
        if status is not None:
            tags["git.dirty"] = "true" if status.strip() else "false"
    hashes = dvc_hashes(repo)
    for path in data_paths:
        key = _norm(_relative_to(repo, path))
        md5 = hashes.get(key) or _dvc_file_hash(repo, key)
        if md5:
            tags[f"dvc.{key}"] = md5
    return tags


def _git(repo: Path, *args: str) -> str | None:
    """stdout of ``git <args>`` in ``repo``, or None when git is missing or fails."""
    try:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def dvc_hashes(repo: Path = Path(".")) -> dict[str, str]:
    """``{out path: md5}`` over every stage's outs in ``repo/dvc.lock``; {} if absent or bad."""
    lock = Path(repo) / "dvc.lock"
    if not lock.exists():
        return {}
    try:
        doc = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        log.warning("%s: cannot read (%s); runs get no dvc.* lineage tags", lock, e)
        return {}
    out: dict[str, str] = {}
    stages = doc.get("stages") if isinstance(doc, dict) else None
    for stage in (stages or {}).values():
        for entry in (stage or {}).get("outs") or []:
            md5 = _out_hash(entry)
            if md5:
                out[_norm(entry["path"])] = md5
    return out


def _dvc_file_hash(repo: Path, path: str) -> str | None:
    """The md5 in ``<path>.dvc`` (``dvc add``) if there is one."""
    dvc_file = Path(repo) / f"{path}.dvc"
    if not dvc_file.exists():
        return None
    try:
        doc = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    outs = doc.get("outs") if isinstance(doc, dict) else None
    return _out_hash(outs[0]) if outs else None


def _out_hash(entry: object) -> str | None:
    """DVC 3 writes ``hash: md5`` and ``md5: <value>``; DVC 2 only ``md5``."""
    if not isinstance(entry, dict) or "path" not in entry:
        return None
    field = entry.get("hash", "md5")
    value = entry.get(field) or entry.get("md5")
    return str(value) if value else None


def _relative_to(repo: Path, path: str | Path) -> str:
    """An absolute path inside ``repo`` as the repo-relative path dvc.lock uses."""
    path = Path(path)
    if path.is_absolute():
        try:
            return path.resolve().relative_to(repo.resolve()).as_posix()
        except ValueError:
            return path.as_posix()
    return path.as_posix()


def _norm(path: str) -> str:
    return Path(path).as_posix().removeprefix("./").rstrip("/")


# --------------------------------------------------------------------------- models


def model_requirements() -> list[str]:
    """Pinned pip requirements of a pickled emoflow model, from the installed versions.

    Local version labels (``2.14.1+cu130``) are dropped: pip cannot resolve them from an index.
    """
    reqs = []
    for dist in MODEL_REQUIREMENTS:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        reqs.append(f"{dist}=={version.split('+')[0]}")
    return reqs


def plain_module(model: torch.nn.Module) -> torch.nn.Module:
    """The user's module inside DDP/DataParallel (``.module``) or torch.compile (``._orig_mod``)."""
    from torch import nn

    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def model_signature(model: torch.nn.Module, example: np.ndarray | Mapping[str, np.ndarray],
                    dynamic_axes: Sequence[int] | None = None) -> ModelSignature:  # fmt: skip
    """Signature from one forward pass over ``example``, with ``dynamic_axes`` set to -1.

    mlflow infers only the batch axis as variable; a clip model also takes any number of frames,
    so by default axis 1 of a 5-D (B, T, C, H, W) input is variable too.
    """
    import torch
    from mlflow.models import infer_signature
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    with torch.no_grad():
        if isinstance(example, Mapping):
            output = model(**{k: torch.as_tensor(v) for k, v in example.items()})
        else:
            output = model(torch.as_tensor(example))
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the model must return one tensor to be logged, got {type(output)}")
    signature = infer_signature(example, output.numpy())
    specs = []
    for spec in signature.inputs.inputs:
        shape = list(spec.shape)
        axes = dynamic_axes if dynamic_axes is not None else (0, 1) if len(shape) == 5 else (0,)
        for axis in axes:
            if axis < len(shape):
                shape[axis] = -1
        specs.append(TensorSpec(spec.type, tuple(shape), spec.name))
    return ModelSignature(inputs=Schema(specs), outputs=signature.outputs)


def _as_numpy(example: Any) -> np.ndarray | dict[str, np.ndarray]:
    if isinstance(example, Mapping):
        return {str(k): _as_numpy(v) for k, v in example.items()}  # type: ignore[misc]
    if hasattr(example, "detach"):
        example = example.detach().cpu().numpy()
    return np.asarray(example)


# --------------------------------------------------------------------------- the run


class RunLogger:
    """One MLflow run as a context manager; with ``enabled=False`` every method does nothing.

    The trainer makes one on every rank and enables it on rank 0 only, so the training code calls
    the same methods everywhere without rank checks. Leaving the context ends the run: FINISHED,
    FAILED on an exception, KILLED on Ctrl-C.

    The run is MLflow's active (fluent) run, because ``mlflow.pytorch.log_model`` logs into that:
    use one RunLogger at a time, from the thread that entered it.
    """

    def __init__(self, experiment: str, run_name: str | None = None,
                 params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
                 enabled: bool = True, system_metrics: bool = True) -> None:  # fmt: skip
        self.experiment = experiment
        self.run_name = run_name
        self.params = dict(params or {})
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.enabled = enabled
        self.system_metrics = system_metrics
        self.uri: str | None = None
        self.experiment_id: str | None = None
        self._run_id: str | None = None
        self._client: Any = None

    @property
    def run_id(self) -> str | None:
        """The MLflow run id while (and after) the run is open; None when disabled."""
        return self._run_id

    def __enter__(self) -> RunLogger:
        if not self.enabled:
            return self
        mlflow = _mlflow()
        self.uri = tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        self.experiment_id = ensure_experiment(self.experiment, self.uri)
        run = mlflow.start_run(experiment_id=self.experiment_id, run_name=self.run_name,
                               tags=self.tags, nested=mlflow.active_run() is not None,
                               log_system_metrics=self._system_metrics_available())  # fmt: skip
        self._run_id = run.info.run_id
        self._client = mlflow.MlflowClient(tracking_uri=self.uri)
        try:
            self.log_params(self.params)
        except BaseException:
            mlflow.end_run("FAILED")
            raise
        log.info("MLflow run %s in experiment %r at %s", self._run_id, self.experiment, self.uri)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        if not self.enabled or self._run_id is None:
            return
        status = "FINISHED"
        if exc_type is not None:
            status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        mlflow = _mlflow()
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self._run_id:
            mlflow.end_run(status)
        else:  # ended elsewhere or in another thread: still record the outcome
            self._client.set_terminated(self._run_id, status)

    def _system_metrics_available(self) -> bool:
        if not self.system_metrics:
            return False
        if importlib.util.find_spec("psutil") is None:
            log.warning("psutil is not installed: this run records no system metrics")
            return False
        return True

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log ``params`` flattened (see ``flatten_params``)."""
        if self.enabled and params:
            from mlflow.entities import Param

            flat = [Param(k, v) for k, v in flatten_params(params).items()]
            self._client.log_batch(self._run_id, params=flat)  # chunked by the client

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.enabled and tags:
            from mlflow.entities import RunTag

            self._client.log_batch(self._run_id, tags=[RunTag(str(k), str(v))
                                                       for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log numeric ``metrics`` at ``step`` (the epoch); None and non-numbers are skipped."""
        if not self.enabled:
            return
        numeric = {}
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                log.debug("metric %s=%r is not a number; not logged", key, value)
                continue
            numeric[str(key)] = float(value)
        if numeric:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self._client.log_batch(self._run_id, metrics=[Metric(k, v, now, step)
                                                          for k, v in numeric.items()])

    def continues(self, run_id: str) -> None:
        """This run resumes the training of ``run_id``: tag the link, and end that run as
        KILLED if it was left RUNNING (its process died without closing it)."""
        if not self.enabled:
            return
        self.set_tags({"emoflow.resumed_from_run": run_id})
        try:
            if self._client.get_run(run_id).info.status == "RUNNING":
                self._client.set_terminated(run_id, "KILLED")
        except Exception as exc:  # another store, or deleted: the link tag is still useful
            log.warning("MLflow run %s of the resumed training not closed: %s", run_id, exc)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file (or a folder's contents) into the run's artifacts."""
        if not self.enabled:
            return
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(self._run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(self._run_id, str(path), artifact_path)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """Write ``obj`` as JSON/YAML (by extension) into the run's artifacts."""
        if self.enabled:
            self._client.log_dict(self._run_id, obj, artifact_file)

    def log_model(self, model: torch.nn.Module, input_example: Any, name: str = "model",
                  registered_model_name: str | None = None,
                  dynamic_axes: Sequence[int] | None = None,
                  pip_requirements: Sequence[str] | None = None) -> ModelInfo | None:  # fmt: skip
        """Log ``model`` so that ``mlflow.pytorch.load_model("runs:/<run_id>/<name>")`` returns it.

        A CPU copy in eval mode is pickled (``serialization_format="pickle"``): MLflow 3's default,
        pt2 (torch.export), would freeze the example's shapes and the optional ``mask`` branch of
        FAN. ``input_example``: an array (B, T, C, H, W) for FAN or (B, C, H, W) for Deep-Emotion
        (tensors are converted), or a dict of arrays passed as keyword arguments (kept in the
        signature only: pyfunc serving takes a single array). The signature comes from one
        forward pass over the example (see ``model_signature``). Returns MLflow's ModelInfo,
        None when disabled.
        """
        if not self.enabled:
            return None
        _mlflow()
        import mlflow.pytorch

        cpu_model = copy.deepcopy(plain_module(model)).cpu().eval()
        example = _as_numpy(input_example)
        signature = model_signature(cpu_model, example, dynamic_axes)
        return mlflow.pytorch.log_model(
            cpu_model,
            name=name,
            # A dict example cannot pass mlflow's serving check (pyfunc takes one array): the
            # signature alone describes it then.
            input_example=example if isinstance(example, np.ndarray) else None,
            signature=signature,
            serialization_format="pickle",
            registered_model_name=registered_model_name,
            pip_requirements=list(pip_requirements or model_requirements()),
        )
