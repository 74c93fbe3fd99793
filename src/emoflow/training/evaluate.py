"""``emoflow evaluate``: the kept model on the test split — metrics, confusion matrix, curves.

The test split is read here and nowhere in training: the kept checkpoint was chosen on val.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from emoflow.artifact import CURVES, HISTORY, MODEL_FILE, load_model_file
from emoflow.config import Params
from emoflow.datasets.clips import read_manifest
from emoflow.errors import InputError
from emoflow.fsio import atomic_write_text
from emoflow.guards import check_outputs, params_inputs
from emoflow.tables import write_table
from emoflow.training.metrics import flat_metrics, summarise_folds
from emoflow.training.plots import plot_confusion, plot_curves
from emoflow.training.tasks import make_task
from emoflow.training.trainer import evaluate_refs

log = logging.getLogger(__name__)

# What evaluate writes in its plots folder (dvc.yaml names these files, not the folder:
# crossval puts its folds' evaluations in folds/ under it).
REPORT, CONFUSION, PREDICTIONS = "report.json", "confusion.png", "predictions.csv"
PLOT_FILES = (REPORT, CONFUSION, CURVES, PREDICTIONS)


def evaluate_model(
    model_name: str, params: Params, faces_dir: Path, splits_dir: Path, model_dir: Path,
    metrics_path: Path, plots_dir: Path,
) -> dict[str, Any]:  # fmt: skip
    """Write ``metrics_path`` (the headline numbers: DVC metrics) and ``plots_dir``/{report.json
    (everything, per class and the confusion matrix), confusion.png, curves.png,
    predictions.csv}; log the test metrics to the training's MLflow run."""
    check_outputs({"model": model_dir, "faces": faces_dir, "splits": splits_dir,
                   **params_inputs(params)}, {"metrics": metrics_path, "plots": plots_dir})
    model, meta = load_model_file(model_dir / MODEL_FILE)
    if meta.arch != model_name:
        raise InputError(model_dir / MODEL_FILE, f"holds a {meta.arch} model, not {model_name}")
    task = make_task(model_name, params.train, 0)
    if task.cfg.image_size != meta.image_size:
        raise InputError(model_dir / MODEL_FILE, f"trained at image size {meta.image_size}, "
                         f"params say {task.cfg.image_size}: retrain")  # fmt: skip
    if meta.epoch is None or meta.val is None:
        raise InputError(model_dir / MODEL_FILE, "records no kept epoch and validation scores: "
                         "not written by `emoflow train`")  # fmt: skip
    classes, val = meta.classes, meta.val
    refs = read_manifest(splits_dir / "test.csv", faces_dir, classes)
    if not refs:  # nothing to measure: keep the metrics and plots of the last evaluation
        raise InputError(splits_dir / "test.csv", "no test clips: nothing to evaluate")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    if model_name == "fan":
        features = meta.config.get("features", "appearance")
        if features != task.cfg.features:
            raise InputError(model_dir / MODEL_FILE, f"trained on {features} features, "
                             f"params say {task.cfg.features}: retrain")  # fmt: skip
        expression = meta.config.get("expression", "blendshapes")
        if features != "appearance" and expression != task.cfg.expression:
            raise InputError(model_dir / MODEL_FILE, f"trained on MediaPipe's {expression}, "
                             f"params say {task.cfg.expression}: retrain")  # fmt: skip
        if features != "appearance":  # expression scores exist only as cached features
            model = task.prepare(model, device)
    report = evaluate_refs(task, model, refs, classes, device, params.train.workers)
    predictions = report.pop("predictions")
    metrics = {"war": report["war"], "uar": report["uar"], "macro_f1": report["macro_f1"],
               "test_clips": len(refs), "best_epoch": meta.epoch,
               "val_war": val["war"], "val_uar": val["uar"],
               "recall": {c: r["recall"] for c, r in report["per_class"].items()}}  # fmt: skip
    atomic_write_text(metrics_path, json.dumps(metrics, indent=1))
    plots_dir.mkdir(parents=True, exist_ok=True)
    full = {"model": model_name, "val": val, "test": report}
    atomic_write_text(plots_dir / REPORT, json.dumps(full, indent=1))
    plot_confusion(report["confusion"], classes, plots_dir / CONFUSION,
                   title=f"{model_name}: test split")  # fmt: skip
    history = model_dir / HISTORY
    if history.exists():
        plot_curves(json.loads(history.read_text()), plots_dir / CURVES, title=model_name)
    _write_predictions(plots_dir / PREDICTIONS, refs, predictions, classes)
    _log_to_run(meta.mlflow_run_id, report, [plots_dir / CONFUSION, metrics_path])
    log.info("evaluate %s on %d test clips: WAR %.3f, UAR %.3f, macro-F1 %.3f → %s",
             model_name, len(refs), report["war"], report["uar"], report["macro_f1"],
             metrics_path)  # fmt: skip
    return metrics


def _write_predictions(path: Path, refs: list, predictions: list[int], classes: list[str]
                       ) -> None:  # fmt: skip
    """Per-clip actual vs predicted, for DVC's confusion-matrix plot."""
    rows = [{"trial_id": ref.trial_id, "actual": classes[ref.label], "predicted": classes[pred]}
            for ref, pred in zip(refs, predictions, strict=True)]  # fmt: skip
    write_table(path, ("trial_id", "actual", "predicted"), rows)


def _log_to_run(run_id: str | None, report: dict, files: list[Path]) -> None:
    if not run_id:
        return
    from mlflow import MlflowClient

    from emoflow.tracking.store import tracking_uri

    client = MlflowClient(tracking_uri())
    for key, value in flat_metrics(report, prefix="test_").items():
        client.log_metric(run_id, key, value)
    for f in files:
        client.log_artifact(run_id, str(f), "evaluation")


def summarise(report_files: list[Path], out: Path) -> dict[str, Any]:
    """Mean ± std over the folds' ``report.json`` files (cross-validation)."""
    reports = [json.loads(p.read_text())["test"] for p in report_files]
    summary = summarise_folds(reports)
    atomic_write_text(out, json.dumps(summary, indent=1))
    log.info("cross-validation over %d folds: WAR %.3f ± %.3f, UAR %.3f ± %.3f → %s",
             summary["folds"], summary["war"]["mean"], summary["war"]["std"],
             summary["uar"]["mean"], summary["uar"]["std"], out)  # fmt: skip
    return summary
