"""``emoflow mark``: walk the queue of unmarked clips, one window session per clip."""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

from emoflow.errors import InputError
from emoflow.ingest.marks import Marks, marks_path, read_marks, write_marks
from emoflow.labelling.clip import Clip, load_clip
from emoflow.labelling.overlay import Header
from emoflow.labelling.queue import Trial, load_trials, pending, progress
from emoflow.labelling.review import ReviewQueue, label_path, load_review, read_label, write_label
from emoflow.labelling.state import Labeller, Outcome, Saver

log = logging.getLogger(__name__)


def _saved_marks(path: Path, frame_count: int) -> tuple[Marks | None, str]:
    """The marks saved for a clip, or None and why an existing file is ignored."""
    if not path.is_file():
        return None, ""
    try:
        return read_marks(path, frame_count), ""
    except InputError as exc:
        log.warning("%s", exc)
        return None, f"saved marks ignored ({exc.rule}); E replaces them"


def _saver(path: Path, frame_count: int) -> Saver:
    def save(marks: Marks) -> None:
        write_marks(path, marks, frame_count)  # checked, temp file + rename
        log.info("wrote %s: %s", path, marks.to_line().replace("\t", " "))

    return save


def labeller_for(clip: Clip, path: Path, jump: int = 10) -> Labeller:
    saved, note = _saved_marks(path, clip.frame_count)
    labeller = Labeller(clip.frame_count, _saver(path, clip.frame_count), marks=saved, jump=jump)
    if note:
        labeller.say(note, error=True)
    return labeller


def with_review(labeller: Labeller, trial: Trial, review: ReviewQueue, marks_dir: Path,
                labeller_name: str) -> Labeller:  # fmt: skip
    """A review queue's clip: the class to confirm or change (the saved one, else the queue's
    pre-filled one) and the model's peak frame as the first frame shown."""
    path = label_path(marks_dir, trial.trial_id)
    saved = None
    if path.is_file():
        try:
            saved = read_label(path, review.classes)["label"]
        except InputError as exc:
            log.warning("%s", exc)
    prefill = trial.emotion if trial.emotion in review.classes else None
    labeller.with_labels(review.classes, saved or prefill,
                         lambda label: write_label(path, label, labeller_name),
                         saved=saved is not None)  # fmt: skip
    hint = review.hints.get(trial.trial_id)
    if hint is not None and hint.peak_frame is not None and labeller.saved is None:
        labeller.frame = min(max(hint.peak_frame, 0), labeller.frame_count - 1)
    return labeller


def mark_trials(
    source: str | Path, marks_dir: str | Path, redo: bool = False, jump: int = 10,
    labeller_name: str = "",
) -> None:
    trials = load_trials(source)
    review = load_review(source)
    queue = pending(trials, marks_dir, redo)
    marked, total = progress(trials, marks_dir)
    log.info("%d of %d clips marked; opening %d", marked, total, len(queue))
    if not queue:
        log.info("nothing to mark (--all reopens marked clips)")
        return

    from emoflow.labelling import window  # needs OpenCV's GUI build: import only when used

    window.open_window()
    try:
        for position, trial in enumerate(queue, start=1):
            if _mark_one(trial, position, trials, queue, Path(marks_dir), jump, window,
                         review, labeller_name):  # fmt: skip
                break
    finally:
        window.close_window()
    marked, total = progress(trials, marks_dir)
    log.info("%d of %d clips marked", marked, total)


def _mark_one(
    trial: Trial,
    position: int,
    trials: list[Trial],
    queue: list[Trial],
    marks_dir: Path,
    jump: int,
    window: ModuleType,  # passed in so that importing cv2's GUI stays lazy
    review: ReviewQueue | None = None,
    labeller_name: str = "",
) -> bool:
    """Mark one clip; True when the labeller stopped the whole session."""
    clip = load_clip(trial.clip)
    path = marks_path(marks_dir, trial.trial_id)
    labeller = labeller_for(clip, path, jump)
    hint = ""
    if review is not None:
        with_review(labeller, trial, review, marks_dir, labeller_name)
        found = review.hints.get(trial.trial_id)
        hint = found.text() if found is not None else ""
    # counted once per clip, not per redraw: a held key redraws ~60 times a second
    marked_before, total = progress(trials, marks_dir)
    had_file = path.is_file()

    def header() -> Header:
        marked = marked_before + (not had_file and labeller.saved is not None)
        return Header(
            trial_id=trial.trial_id,
            participant=trial.participant,
            emotion=trial.emotion,
            fps=clip.fps,
            position=position,
            queued=len(queue),
            marked=marked,
            total=total,
            hint=hint,
        )

    log.info("clip %d/%d: %s (%d frames)", position, len(queue), trial.trial_id, clip.frame_count)
    return window.run_clip(clip, labeller, header) is Outcome.STOP
