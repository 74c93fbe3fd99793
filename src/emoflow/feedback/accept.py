"""``emoflow review accept``: labelled clips of a review queue → the versioned reviewed data.

``<out>/reviewed.csv`` (in git: small, and its diff shows who labelled what) has the columns
``emoflow trim`` reads from ``valid_trials.csv`` (trial_id, participant, emotion, start, end,
peak, the flags) plus the provenance: prediction id, model name and version, what the model
said, the feedback label, labeller and times. ``<out>/clips/<trial_id>.mp4`` are the clips,
under DVC (``dvc add``, which writes ``<out>/clips.dvc``). ``dvc repro``'s trim stage reads both
as a second trials source.

A queue row joins once it has a marks file and a label file (``emoflow mark`` writes both on
E). Accepting is idempotent: a prediction id already in reviewed.csv adds nothing. Every row is
checked before anything is written; the table is written last and atomically, so a failure
leaves the reviewed data as it was.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from emoflow.errors import EmoflowError, InputError
from emoflow.feedback.pull import TRIALS_CSV, participant_of, trial_id_of
from emoflow.feedback.records import ID_PATTERN, now
from emoflow.fsio import atomic_path
from emoflow.ingest.marks import FLAG_NAMES, marks_path, read_marks
from emoflow.labelling.queue import CLIP_SUFFIX
from emoflow.labelling.review import QUEUE_COLUMNS, label_path, read_label
from emoflow.media.video import iter_frames
from emoflow.tables import read_table, write_table

log = logging.getLogger(__name__)

REVIEWED_CSV = "reviewed.csv"
CLIPS_DIR = "clips"
REVIEWED_COLUMNS: tuple[str, ...] = (
    "trial_id", "participant", "emotion", "start", "end", "peak", *FLAG_NAMES,
    "prediction_id", "model_name", "model_version", "served_label", "confidence",
    "feedback_label", "labeller", "labelled_at", "accepted_at", "clip_sha256",
)  # fmt: skip
PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class DvcAddError(EmoflowError):
    """``dvc add`` of the reviewed clips failed."""


def read_reviewed(path: Path) -> list[dict[str, str]]:
    """reviewed.csv's rows (none when it does not exist yet)."""
    if not path.exists():
        return []
    return read_table(path, REVIEWED_COLUMNS, "")


def reviewed_ids(out: Path) -> set[str]:
    return {r["prediction_id"] for r in read_reviewed(out / REVIEWED_CSV)}


def _frame_count(clip: Path) -> int:
    return sum(1 for _ in iter_frames(clip))


def _labelled_row(queue_csv: Path, row_no: int, row: dict[str, str], marks_dir: Path,
                  classes: Sequence[str]) -> dict[str, str] | None:  # fmt: skip
    """The reviewed.csv row of a queue row, or None when it is not labelled yet."""
    where = f"row {row_no}"
    pid = row["prediction_id"]
    if not ID_PATTERN.match(pid):
        raise InputError(queue_csv, f"prediction_id must be 32 hex digits, got {pid!r}", where)
    trial_id = row["trial_id"]
    if trial_id != trial_id_of(pid) or not PLAIN.match(trial_id):
        raise InputError(queue_csv, f"trial_id {trial_id!r} is not {trial_id_of(pid)!r}", where)
    if row["participant"] != participant_of(pid):  # its own group in a subject split
        raise InputError(queue_csv, f"participant {row['participant']!r} is not "
                         f"{participant_of(pid)!r}", where)  # fmt: skip
    mpath = marks_path(marks_dir, trial_id)
    if not mpath.is_file():
        return None
    clip = queue_csv.parent / f"{trial_id}{CLIP_SUFFIX}"
    if not clip.is_file():
        raise InputError(queue_csv, f"clip {clip} does not exist", where)
    marks = read_marks(mpath, _frame_count(clip))  # names the marks file and the rule
    label = read_label(label_path(marks_dir, trial_id), classes)
    return {
        "trial_id": trial_id, "participant": row["participant"], "emotion": label["label"],
        "start": str(marks.start), "end": str(marks.end), "peak": str(marks.peak),
        **{f: str(v) for f, v in marks.flags.items()},
        "prediction_id": pid, "model_name": row["model_name"],
        "model_version": row["model_version"], "served_label": row["served_label"],
        "confidence": row["confidence"], "feedback_label": row["feedback_label"],
        "labeller": label["labeller"], "labelled_at": label["labelled_at"],
        "accepted_at": now(), "clip_sha256": hashlib.sha256(clip.read_bytes()).hexdigest(),
    }  # fmt: skip


def accept(queue: Path, marks_dir: Path, out: Path, classes: Sequence[str],
           dvc: bool = True) -> list[dict[str, str]]:  # fmt: skip
    """Add the labelled clips of ``queue`` to ``out``; returns the rows added (none: a no-op)."""
    queue_csv = queue / TRIALS_CSV
    rows = read_table(queue_csv, QUEUE_COLUMNS, "no review queue: run `emoflow review pull`")
    table = out / REVIEWED_CSV
    existing = read_reviewed(table)
    done = {r["prediction_id"] for r in existing}
    added: list[dict[str, str]] = []
    pending = 0
    for row_no, row in enumerate(rows, start=2):
        if row["prediction_id"] in done:
            continue
        new = _labelled_row(queue_csv, row_no, row, marks_dir, classes)
        if new is None:
            pending += 1
            continue
        added.append(new)
        done.add(new["prediction_id"])
    log.info("review accept: %d labelled clips added to %s; %d already there, %d not labelled "
             "yet", len(added), out, len(rows) - len(added) - pending, pending)  # fmt: skip
    if not added:
        return added
    clips = out / CLIPS_DIR
    clips.mkdir(parents=True, exist_ok=True)
    for r in added:  # the clips first: a table row never names a clip that is not there
        with atomic_path(clips / f"{r['trial_id']}{CLIP_SUFFIX}") as tmp:
            shutil.copyfile(queue / f"{r['trial_id']}{CLIP_SUFFIX}", tmp)
    write_table(table, REVIEWED_COLUMNS, [*existing, *added])
    if dvc:
        dvc_add(clips)
    return added


def dvc_add(path: Path) -> None:
    """``dvc add`` the clips folder when it lies in a DVC repository (``<path>.dvc`` beside it)."""
    root = path.resolve().parent
    while not (root / ".dvc").is_dir():
        if root.parent == root:
            log.info("review accept: %s is not in a DVC repository: not added to DVC", path)
            return
        root = root.parent
    done = subprocess.run([sys.executable, "-m", "dvc", "add", "-q", str(path.resolve())],
                          cwd=root, capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise DvcAddError(f"dvc add {path} failed: {(done.stderr or done.stdout).strip()}")
    log.info("review accept: dvc add %s (commit %s.dvc and %s with git)", path, path,
             path.parent / REVIEWED_CSV)  # fmt: skip
