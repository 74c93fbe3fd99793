"""Classification metrics for expression recognition, as JSON-ready dicts.

The thesis (and the FER literature) reports two accuracies, because the classes are unbalanced:

- WAR, weighted average recall = plain accuracy: each clip counts once, so big classes dominate;
- UAR, unweighted average recall = the mean of the per-class recalls: each class counts once.

Classes without support (no true sample in this split or fold) have no recall; they are left out of
UAR and macro-F1 rather than counted as 0, which would punish a model for the split, not for its
predictions. They still appear in ``per_class`` (support 0) and in the confusion matrix.

numpy only: the stage needs nothing heavier, and the unit tests cross-check against scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SUMMARY_METRICS = ("war", "uar", "macro_f1")


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes), rows = true class, columns = predicted class."""
    true = _as_labels(y_true, num_classes, "y_true")
    pred = _as_labels(y_pred, num_classes, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} labels but y_pred has {pred.size}")
    flat = true * num_classes + pred
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]
                          ) -> dict:  # fmt: skip
    """WAR, UAR, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    Labels are indices into ``classes``. ``per_class[name]`` holds ``precision, recall, f1,
    support, predicted``; precision is reported as 0.0 when nothing was predicted as the class
    (``predicted == 0``: undefined, not "always wrong"), recall likewise when ``support == 0``.
    ``classes_without_support`` lists the classes left out of UAR and macro-F1.
    Every number is a Python int or float, so the dict goes straight to ``json.dump``.
    """
    names = [str(c) for c in classes]
    if len(names) < 2:
        raise ValueError(f"need at least 2 classes, got {names}")
    cm = confusion_matrix(y_true, y_pred, len(names))
    n = int(cm.sum())
    if n == 0:
        raise ValueError("no samples: y_true and y_pred are empty")
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    has_support = support > 0
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "predicted": int(predicted[i]),
        }
        for i, name in enumerate(names)
    }
    return {
        "n": n,
        "classes": names,
        "war": float(tp.sum() / n),
        "uar": float(recall[has_support].mean()),
        "macro_f1": float(f1[has_support].mean()),
        "per_class": per_class,
        "classes_without_support": [names[i] for i in np.flatnonzero(~has_support)],
        "confusion": cm.astype(int).tolist(),
    }


def flat_metrics(report: dict, prefix: str = "") -> dict[str, float]:
    """A report as flat MLflow metrics: ``<prefix>war``, ``uar``, ``macro_f1``, ``recall_<class>``.

    Per-class recall is left out for classes without support (there is nothing to measure).
    """
    out = {f"{prefix}{key}": float(report[key]) for key in SUMMARY_METRICS}
    for name, row in report["per_class"].items():
        if row["support"] > 0:
            out[f"{prefix}recall_{name}"] = float(row["recall"])
    return out


def summarise_folds(reports: list[dict]) -> dict:
    """Mean and population std (ddof=0) over k folds' reports.

    ddof=0 because the k folds are the whole population being described (every clip is tested
    exactly once), not a sample from a larger set of folds; it matches the thesis's tables and
    ``numpy.std``'s default. Per-class recall averages only over folds where the class has
    support; ``per_class_recall[name]["folds"]`` says how many those were.

    Returns ``{"folds": k, "war": {"mean", "std"}, "uar": ..., "macro_f1": ...,
    "per_class_recall": {name: {"mean", "std", "folds"}}}``.
    """
    if not reports:
        raise ValueError("no fold reports to summarise")
    classes = list(reports[0]["classes"])
    for i, report in enumerate(reports[1:], start=2):
        if list(report["classes"]) != classes:
            raise ValueError(f"fold {i} has classes {report['classes']}, fold 1 has {classes}")
    summary: dict = {"folds": len(reports)}
    for key in SUMMARY_METRICS:
        summary[key] = _mean_std([r[key] for r in reports])
    per_class = {}
    for name in classes:
        values = [r["per_class"][name]["recall"] for r in reports
                  if r["per_class"][name]["support"] > 0]  # fmt: skip
        per_class[name] = {**_mean_std(values), "folds": len(values)}
    summary["per_class_recall"] = per_class
    return summary


def _mean_std(values: list[float]) -> dict[str, float]:
    # No fold with support: NaN would break strict JSON consumers, so report 0 with folds=0.
    if not values:
        return {"mean": 0.0, "std": 0.0}
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=0))}


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (sklearn's ``zero_division=0``)."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _as_labels(labels: Sequence[int], num_classes: int, what: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must be a 1-D sequence of integer class indices")
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        raise ValueError(f"{what} has label {int(arr[bad][0])} outside 0..{num_classes - 1}")
    return arr.astype(np.int64)
