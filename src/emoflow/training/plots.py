"""Training plots as PNG files: the confusion matrix and the learning curves.

Figures are drawn with matplotlib's object API on an Agg canvas, never through ``pyplot``: no
global backend switch (the labelling GUI and notebooks keep theirs), no display needed, and no
figure registry to leak memory across the epochs of a long run. Files are written atomically
(``emoflow.fsio.atomic_path``), so a crash never leaves a truncated PNG for MLflow or DVC.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from emoflow.fsio import atomic_path

LOSS_KEYS = ("train_loss", "val_loss")
ACCURACY_KEYS = ("train_acc", "val_war", "val_uar")
DPI = 120


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path,
                   normalise: bool = True, title: str = "Confusion matrix") -> Path:  # fmt: skip
    """Write the confusion matrix (rows = true, columns = predicted) as a PNG; return the path.

    ``normalise``: colour by the row share (each true class's recall spread) and print count and
    percentage per cell, so small classes stay readable; otherwise colour and print raw counts.
    A row without support shows counts only.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    k = len(classes)
    if cm.shape != (k, k):
        raise ValueError(f"confusion is {cm.shape}, expected ({k}, {k}) for {list(classes)}")
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)
    shown = share if normalise else cm.astype(float)
    vmax = 1.0 if normalise else max(float(cm.max()), 1.0)

    size = max(4.0, 0.9 * k + 2.0)
    fig = Figure(figsize=(size + 1.0, size), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                 label="share of true class" if normalise else "clips")  # fmt: skip
    for i in range(k):
        for j in range(k):
            text = _cell_text(int(cm[i, j]), share[i, j], normalise and totals[i, 0] > 0)
            dark = shown[i, j] > 0.55 * vmax
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")  # fmt: skip
    ax.set_xticks(range(k), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(k), labels=[f"{c} ({int(totals[i, 0])})" for i, c in enumerate(classes)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (support)")
    ax.set_title(f"{title} (n={int(cm.sum())})")
    return _save(fig, path)


def plot_curves(history: Sequence[dict], path: str | Path, title: str = "Training") -> Path:
    """Write loss (left) and accuracy (right) over epochs as a PNG; return the path.

    ``history`` rows look like ``{"epoch": 1, "train_loss": .., "train_acc": .., "val_loss": ..,
    "val_war": .., "val_uar": .., "lr": ..}``; a key missing from a row (e.g. validation every
    other epoch) only drops that point, a key missing everywhere drops the line. ``lr`` goes on a
    log-scaled second axis of the loss panel, where warm-up and decay explain the loss's bends.
    """
    epochs = [float(row.get("epoch", i + 1)) for i, row in enumerate(history)]
    fig = Figure(figsize=(11.0, 4.2), dpi=DPI, layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)

    drawn = _lines(loss_ax, history, epochs, LOSS_KEYS)
    lr = _series(history, epochs, "lr")
    if lr[0]:
        lr_ax = loss_ax.twinx()
        lr_ax.plot(*lr, color="grey", linestyle=":", label="lr")
        lr_ax.set_ylabel("learning rate")
        if min(lr[1]) > 0:
            lr_ax.set_yscale("log")
        lr_ax.legend(loc="upper center", fontsize=8)
    _finish_panel(loss_ax, "loss", drawn)

    drawn = _lines(acc_ax, history, epochs, ACCURACY_KEYS)
    acc_ax.set_ylim(0.0, 1.0)
    _finish_panel(acc_ax, "accuracy / recall", drawn)
    fig.suptitle(title)
    return _save(fig, path)


def _cell_text(count: int, share: float, with_share: bool) -> str:
    return f"{count}\n{100 * share:.0f}%" if with_share else str(count)


def _series(history: Sequence[dict], epochs: list[float], key: str
            ) -> tuple[list[float], list[float]]:  # fmt: skip
    """(epochs, values) for the rows that have a finite ``key``."""
    xs, ys = [], []
    for epoch, row in zip(epochs, history, strict=True):
        value = row.get(key)
        if value is not None and np.isfinite(float(value)):
            xs.append(epoch)
            ys.append(float(value))
    return xs, ys


def _lines(ax: Axes, history: Sequence[dict], epochs: list[float], keys: Sequence[str]) -> int:
    drawn = 0
    for key in keys:
        xs, ys = _series(history, epochs, key)
        if xs:
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=key)
            drawn += 1
    return drawn


def _finish_panel(ax: Axes, ylabel: str, drawn: int) -> None:
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
