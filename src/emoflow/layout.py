"""The workspace layout: where the data's path puts each stage's inputs and outputs, written once.

The CLI's defaults, the retrain flow, Kubeflow's checks, the run report and the release steps
read their paths here; ``dvc.yaml`` spells the same ones (tests/unit/test_layout.py keeps them
equal). A :class:`Layout` is anchored at a root: the default, ``Path(".")``, gives the relative
paths the stages run with from the repository root; ``Layout(repo)`` gives them under ``repo``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path


def fold_dir(base: Path, fold: int | None) -> Path:
    """``base`` itself, or fold k's part of it (``base/folds/fold_k``): split manifests, models
    and plots of a cross-validation fold."""
    return base if fold is None else base / "folds" / f"fold_{fold}"


@dataclass(frozen=True)
class Layout:
    """Every path of the workspace under ``root``: give the root, the rest is the layout."""

    root: Path = Path(".")
    # Data (DVC-tracked), in the order the stages write it. sample: raw/, marks/, sample_truth/.
    data: Path = field(default=Path("data"), init=False)
    sessions: Path = field(default=Path("data/raw/sessions"), init=False)
    protocol: Path = field(default=Path("data/raw/protocol.csv"), init=False)
    marks: Path = field(default=Path("data/marks"), init=False)  # <trial_id>.txt each
    sample_truth: Path = field(default=Path("data/sample_truth"), init=False)
    # segment: trial clips + trials.csv; validate: the gate's pass list
    trials: Path = field(default=Path("data/interim/trials"), init=False)
    trials_csv: Path = field(default=Path("data/interim/trials/trials.csv"), init=False)
    validated: Path = field(default=Path("data/interim/validated"), init=False)
    valid_trials: Path = field(default=Path("data/interim/validated/valid_trials.csv"), init=False)
    # trim: a folder per label + clips.csv; faces: a face file per clip; split: manifests, folds/
    clips: Path = field(default=Path("data/processed/clips"), init=False)
    clips_csv: Path = field(default=Path("data/processed/clips/clips.csv"), init=False)
    faces: Path = field(default=Path("data/processed/faces"), init=False)
    faces_csv: Path = field(default=Path("data/processed/faces/faces.csv"), init=False)
    splits: Path = field(default=Path("data/processed/splits"), init=False)
    # The feedback loop (docs/feedback.md): review pull's queue and its marks and labels; review
    # accept's reviewed served clips (reviewed.csv in git, clips/ under DVC), trim's second source.
    review_queue: Path = field(default=Path("data/review/queue"), init=False)
    review_marks: Path = field(default=Path("data/review/marks"), init=False)
    reviewed: Path = field(default=Path("data/reviewed"), init=False)
    # Results: a model folder per model (emoflow.artifact), DVC metrics and plots.
    models_dir: Path = field(default=Path("models"), init=False)
    metrics_dir: Path = field(default=Path("metrics"), init=False)
    plots_dir: Path = field(default=Path("plots"), init=False)
    # Reports (not DVC-cached): the gate's Data Docs and summary.json, the retrain run's report.
    reports: Path = field(default=Path("reports"), init=False)
    validation_report: Path = field(default=Path("reports/validation"), init=False)
    retrain_report: Path = field(default=Path("reports/retrain.json"), init=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            if not f.init:
                object.__setattr__(self, f.name, self.root / f.default)  # type: ignore[operator]

    def manifest(self, split: str) -> Path:
        """``train``, ``val`` or ``test``'s manifest."""
        return self.splits / f"{split}.csv"

    def model_dir(self, model: str, fold: int | None = None) -> Path:
        """``models/<model>[/folds/fold_k]``."""
        return fold_dir(self.models_dir / model, fold)

    def metrics(self, model: str, fold: int | None = None) -> Path:
        """``metrics/<model>.json``; fold k's ``metrics/<model>_folds_fold_k.json``."""
        suffix = "" if fold is None else f"_folds_fold_{fold}"
        return self.metrics_dir / f"{model}{suffix}.json"

    def cv_metrics(self, model: str) -> Path:
        """Cross-validation's mean ± std over the folds."""
        return self.metrics_dir / f"{model}_cv.json"

    def plots(self, model: str, fold: int | None = None) -> Path:
        return fold_dir(self.plots_dir / model, fold)

    def promotion_report(self, model: str) -> Path:
        """``emoflow promote``'s decision record: one file per model, the CLI and the flow alike."""
        return self.reports / f"promotion-{model}.json"


LAYOUT = Layout()  # relative: the stages run in the repository root
