"""One MLflow run as a context manager (what every training run records): flattened params,
lineage tags, per-epoch metrics, system metrics (CPU/GPU/memory, via psutil), plots and the
model. It logs nothing when disabled (the ranks other than 0)."""

from __future__ import annotations

import copy
import importlib.util
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from emoflow.tracking.models import as_numpy, model_requirements, model_signature, plain_module
from emoflow.tracking.params import flatten_params
from emoflow.tracking.store import ensure_experiment, import_mlflow, tracking_uri

if TYPE_CHECKING:
    import torch
    from mlflow.models.model import ModelInfo

log = logging.getLogger(__name__)


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
        mlflow = import_mlflow()
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
        mlflow = import_mlflow()
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
        import_mlflow()
        import mlflow.pytorch

        cpu_model = copy.deepcopy(plain_module(model)).cpu().eval()
        example = as_numpy(input_example)
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
