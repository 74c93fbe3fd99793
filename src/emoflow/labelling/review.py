"""A review queue (``emoflow review pull``) as ``emoflow mark`` walks it: the class to confirm or
change beside the marks, the model's hints, and the label file each saved clip gets.

A queue is a ``trials.csv`` whose folder also holds ``queue.json`` (the classes to pick from);
``emotion`` is the pre-filled class (the feedback label, else the model's). The labeller's class
goes to ``<marks dir>/<trial_id>.label.json`` beside the marks file.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from emoflow.errors import InputError
from emoflow.fsio import atomic_write_text
from emoflow.labelling.state import MAX_CLASSES

QUEUE_META = "queue.json"
LABEL_SUFFIX = ".label.json"
# the queue's trials.csv: mark's own columns, then what the labeller sees as hints
QUEUE_COLUMNS: tuple[str, ...] = ("trial_id", "participant", "emotion", "prediction_id",
                                  "model_name", "model_version", "served_label", "confidence",
                                  "margin", "peak_frame", "feedback_label", "feedback_source",
                                  "predicted_at")  # fmt: skip


@dataclass(frozen=True)
class Hint:
    served_label: str
    confidence: float
    peak_frame: int | None  # the frame the model weighted most, if the record says
    feedback_label: str | None

    def text(self) -> str:
        out = f"model: {self.served_label} {self.confidence:.2f}"
        if self.peak_frame is not None:
            out += f", peak frame {self.peak_frame}"
        if self.feedback_label:
            out += f"  |  feedback: {self.feedback_label}"
        return out


@dataclass(frozen=True)
class ReviewQueue:
    classes: tuple[str, ...]
    hints: dict[str, Hint]  # by trial id


def load_review(source: str | Path) -> ReviewQueue | None:
    """The review queue at ``source`` (a queue's trials.csv), or None for a lab trials source."""
    source = Path(source)
    meta_path = source.parent / QUEUE_META
    if not source.is_file() or not meta_path.is_file():
        return None
    try:
        classes = tuple(json.loads(meta_path.read_text(encoding="utf-8"))["classes"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(meta_path, f"not a review queue's {QUEUE_META} ({exc})") from exc
    if not 2 <= len(classes) <= MAX_CLASSES or len(set(classes)) != len(classes):
        raise InputError(meta_path, f"2 to {MAX_CLASSES} distinct classes (keys 1-"
                         f"{MAX_CLASSES}), got {list(classes)}")  # fmt: skip
    hints: dict[str, Hint] = {}
    with source.open(newline="", encoding="utf-8") as fh:
        for row_no, row in enumerate(csv.DictReader(fh), start=2):
            try:
                peak = row.get("peak_frame") or ""
                hints[row["trial_id"]] = Hint(row["served_label"], float(row["confidence"]),
                                              int(peak) if peak else None,
                                              row.get("feedback_label") or None)  # fmt: skip
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(source, f"not a review queue row ({exc})", f"row {row_no}"
                                 ) from exc  # fmt: skip
    return ReviewQueue(classes, hints)


def label_path(marks_dir: str | Path, trial_id: str) -> Path:
    return Path(marks_dir) / f"{trial_id}{LABEL_SUFFIX}"


def write_label(path: Path, label: str, labeller: str) -> None:
    doc = {"label": label, "labeller": labeller,
           "time": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    atomic_write_text(path, json.dumps(doc) + "\n")


def read_label(path: Path, classes: tuple[str, ...] | list[str]) -> dict[str, str]:
    """A label file's label, labeller and time; the label must be one of ``classes``."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        label, labeller, time = (str(doc[k]) for k in ("label", "labeller", "time"))
    except FileNotFoundError as exc:
        raise InputError(path, "no label file: save the clip in `emoflow mark` (E)") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"not a label file ({exc})") from exc
    if label not in classes:
        raise InputError(path, f"label {label!r} is not one of the classes {list(classes)}")
    return {"label": label, "labeller": labeller, "labelled_at": time}
