"""Which clips to mark: trials from a folder of clips or from trials.csv, minus those marked."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from emoflow.errors import InputError
from emoflow.ingest.marks import marks_path

CLIP_SUFFIX = ".mp4"
REQUIRED_COLUMNS: tuple[str, ...] = ("trial_id", "participant", "emotion")


@dataclass(frozen=True)
class Trial:
    trial_id: str
    participant: str
    emotion: str | None  # expected emotion from the protocol; unknown for a bare folder
    clip: Path


def load_trials(source: str | Path) -> list[Trial]:
    """Trials of a folder of ``*.mp4`` clips or of a ``trials.csv`` (clips beside it)."""
    source = Path(source)
    if source.is_dir():
        return _from_folder(source)
    if source.is_file():
        return _from_csv(source)
    raise InputError(source, "no such folder or trials.csv")


def _from_folder(folder: Path) -> list[Trial]:
    clips = sorted(folder.glob(f"*{CLIP_SUFFIX}"))
    if not clips:
        raise InputError(folder, f"no *{CLIP_SUFFIX} clips in this folder")
    return [
        Trial(trial_id=c.stem, participant=c.stem.split("_", 1)[0], emotion=None, clip=c)
        for c in clips
    ]


def _from_csv(path: Path) -> list[Trial]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(path, f"missing column(s) {', '.join(missing)}", where="header")
        trials: list[Trial] = []
        seen: set[str] = set()
        # row 1 is the header, so the first record is row 2 as a spreadsheet shows it
        for row_no, row in enumerate(reader, start=2):
            where = f"row {row_no}"
            trial_id = (row["trial_id"] or "").strip()
            if not trial_id:
                raise InputError(path, "trial_id is empty", where=where)
            if trial_id in seen:
                raise InputError(path, f"trial_id {trial_id} appears twice", where=where)
            seen.add(trial_id)
            clip = path.parent / f"{trial_id}{CLIP_SUFFIX}"
            if not clip.is_file():
                raise InputError(path, f"clip {clip} does not exist", where=where)
            trials.append(
                Trial(
                    trial_id=trial_id,
                    participant=(row["participant"] or "").strip(),
                    emotion=(row["emotion"] or "").strip() or None,
                    clip=clip,
                )
            )
    if not trials:
        raise InputError(path, "no trials listed")
    return trials


def is_marked(trial: Trial, marks_dir: str | Path) -> bool:
    return marks_path(marks_dir, trial.trial_id).is_file()


def pending(trials: list[Trial], marks_dir: str | Path, redo: bool = False) -> list[Trial]:
    """The trials to open: those without a marks file, or all of them with ``redo``."""
    return list(trials) if redo else [t for t in trials if not is_marked(t, marks_dir)]


def progress(trials: list[Trial], marks_dir: str | Path) -> tuple[int, int]:
    """(marked, total): read from the marks folder, so it counts saves made this session."""
    return sum(is_marked(t, marks_dir) for t in trials), len(trials)
