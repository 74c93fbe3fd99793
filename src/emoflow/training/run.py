"""``emoflow train``'s work around the trainer: the MLflow run, the logged model and curves."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from emoflow.artifact import CURVES, HISTORY, load_model, read_model_file, save_model_file
from emoflow.config import Params
from emoflow.guards import check_outputs, params_inputs
from emoflow.models import registry
from emoflow.tracking.lineage import lineage_tags
from emoflow.tracking.params import training_params
from emoflow.tracking.run import RunLogger
from emoflow.training.distributed import shutdown, wait_for_all
from emoflow.training.plots import plot_curves
from emoflow.training.tasks import make_task
from emoflow.training.trainer import train_model

log = logging.getLogger(__name__)


def run_training(model_name: str, params: Params, faces_dir: Path, splits_dir: Path,
                 out_dir: Path) -> None:  # fmt: skip
    """Train one model; rank 0 tracks it in MLflow (experiment ``emoflow-<model>``)."""
    tp = params.train
    check_outputs({"faces": faces_dir, "splits": splits_dir, **params_inputs(params),
                   "train.init_from": Path(tp.init_from) if tp.init_from else None,
                   "train.fan.pretrained": Path(tp.fan.pretrained) if tp.fan.pretrained else None},
                  {"out": out_dir})  # fmt: skip
    main = int(os.environ.get("RANK", "0")) == 0
    section = training_params(model_name, params)
    tags = {"model": model_name, "splits": str(splits_dir)}
    if main:
        tags.update(lineage_tags(Path("."), [str(faces_dir), str(splits_dir)]))
    try:
        experiment = registry.get(model_name).experiment
        with RunLogger(experiment, run_name=f"{model_name}-{splits_dir.name}", params=section,
                       tags=tags, enabled=main) as run:  # fmt: skip
            result = train_model(model_name, params, faces_dir, splits_dir, out_dir, run)
            if result.main:
                plot_curves(result.history, out_dir / CURVES, title=model_name)
                run.log_artifact(out_dir / CURVES)
                run.log_artifact(out_dir / HISTORY)
                meta, weights = read_model_file(result.model_file)
                task = make_task(model_name, params.train, 0)
                run.log_model(load_model(meta, weights), task.input_example())
                if run.run_id:
                    save_model_file(result.model_file,
                                    meta.model_copy(update={"mlflow_run_id": run.run_id}), weights)
                log.info("train: kept epoch %d (%s %.3f) in %s", result.best_epoch,
                         params.train.select_on, result.best_score, result.model_file)  # fmt: skip
            # Every rank waits until rank 0 has written the model: a cluster job (an elastic
            # PyTorchJob) counts as done when its first pod is, and the flow then records it.
            wait_for_all()
    finally:
        shutdown()
