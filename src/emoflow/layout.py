"""The workspace layout: where the data's path puts each stage's inputs and outputs, written once.

The CLI's defaults, the retrain flow, Kubeflow's checks, the run report and the release steps
read their paths here; ``dvc.yaml`` spells the same ones (tests/unit/test_layout.py keeps them
equal). A :class:`Layout` is anchored at a root: the default, ``Path(".")``, gives the relative
paths the stages run with from the repository root; ``Layout(repo)`` gives them under ``repo``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def fold_dir(base: Path, fold: int | None) -> Path:
    """``base`` itself, or fold k's part of it (``base/folds/fold_k``): split manifests, models
    and plots of a cross-validation fold."""
    return base if fold is None else base / "folds" / f"fold_{fold}"


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")

    # -- data (DVC-tracked) -------------------------------------------------------------------

    @property
    def data(self) -> Path:
        """What ``emoflow sample`` writes under (raw/, marks/, sample_truth/)."""
        return self.root / "data"

    @property
    def sessions(self) -> Path:
        return self.data / "raw" / "sessions"

    @property
    def protocol(self) -> Path:
        return self.data / "raw" / "protocol.csv"

    @property
    def marks(self) -> Path:
        return self.data / "marks"

    @property
    def sample_truth(self) -> Path:
        return self.data / "sample_truth"

    @property
    def trials(self) -> Path:
        """Trial clips and ``trials.csv`` (segment)."""
        return self.data / "interim" / "trials"

    @property
    def trials_csv(self) -> Path:
        return self.trials / "trials.csv"

    @property
    def validated(self) -> Path:
        """``valid_trials.csv`` and the quarantine (validate)."""
        return self.data / "interim" / "validated"

    @property
    def valid_trials(self) -> Path:
        return self.validated / "valid_trials.csv"

    @property
    def clips(self) -> Path:
        """Labelled clips and ``clips.csv`` (trim)."""
        return self.data / "processed" / "clips"

    @property
    def clips_csv(self) -> Path:
        return self.clips / "clips.csv"

    @property
    def faces(self) -> Path:
        """Face files and ``faces.csv`` (faces)."""
        return self.data / "processed" / "faces"

    @property
    def faces_csv(self) -> Path:
        return self.faces / "faces.csv"

    @property
    def splits(self) -> Path:
        """Split manifests, and ``folds/`` (split)."""
        return self.data / "processed" / "splits"

    def manifest(self, split: str) -> Path:
        """``train``, ``val`` or ``test``'s manifest."""
        return self.splits / f"{split}.csv"

    # -- models and their results -------------------------------------------------------------

    def model_dir(self, model: str, fold: int | None = None) -> Path:
        """The model folder (``emoflow.artifact``): ``models/<model>[/folds/fold_k]``."""
        return fold_dir(self.root / "models" / model, fold)

    def metrics(self, model: str, fold: int | None = None) -> Path:
        """``metrics/<model>.json`` (DVC metrics); fold k: ``metrics/<model>_folds_fold_k.json``."""
        suffix = "" if fold is None else f"_folds_fold_{fold}"
        return self.root / "metrics" / f"{model}{suffix}.json"

    def cv_metrics(self, model: str) -> Path:
        """Cross-validation's mean ± std over the folds."""
        return self.root / "metrics" / f"{model}_cv.json"

    def plots(self, model: str, fold: int | None = None) -> Path:
        return fold_dir(self.root / "plots" / model, fold)

    # -- reports (not DVC-cached) -------------------------------------------------------------

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def validation_report(self) -> Path:
        """The gate's Data Docs (``index.html``) and ``summary.json``."""
        return self.reports / "validation"

    def promotion_report(self, model: str) -> Path:
        """``emoflow promote``'s decision record: one file per model, the CLI and the flow alike."""
        return self.reports / f"promotion-{model}.json"

    @property
    def retrain_report(self) -> Path:
        """The retrain flow's run report."""
        return self.reports / "retrain.json"


LAYOUT = Layout()  # relative: the stages run in the repository root
