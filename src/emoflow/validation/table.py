"""The tables the expectations run over, built from trials.csv, the marks folder and the clips.

Nothing here decides pass or fail: values that break a rule are kept (or left null, with the
reason in an ``*_error`` column) so that the GX suite is the one place that judges them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from emoflow.errors import InputError
from emoflow.ingest.marks import FIELD_NAMES, MARKS_SUFFIX, marks_path, parse_int, read_marks
from emoflow.validation.media import ClipCheck, check_clip

log = logging.getLogger(__name__)

NO_CLIP = ClipCheck(None, "no trial_id, so no clip to check", None)

TRIALS_COLUMNS: tuple[str, ...] = (
    "trial_id",
    "participant",
    "trial",
    "emotion",
    "beep_s",
    "fps",
    "frames",
    "duration_s",
    "width",
    "height",
)
TEXT_COLUMNS: tuple[str, ...] = ("trial_id", "participant", "emotion")
INT_COLUMNS: tuple[str, ...] = ("trial", "frames", "width", "height")
FLOAT_COLUMNS: tuple[str, ...] = ("beep_s", "fps", "duration_s")
NUMBER_COLUMNS: tuple[str, ...] = INT_COLUMNS + FLOAT_COLUMNS


def text_column(name: str) -> str:
    """The column holding a numeric field as written in trials.csv (its type is checked there)."""
    return f"{name}_text"


@dataclass(frozen=True)
class Issue:
    """A structural problem: the dataset's shape is wrong, not one trial's values."""

    file: str
    rule: str
    detail: str
    trial_id: str = ""


@dataclass
class Tables:
    """Everything the suite validates, plus what the gate needs to write its outputs."""

    raw: pd.DataFrame  # trials.csv as text, every column it had, indexed like ``trials``
    trials: pd.DataFrame  # one row per trials.csv row, joined with marks and clip checks
    marks: pd.DataFrame  # one row per marks file in the folder
    participants: pd.DataFrame  # label distribution per participant
    structural: list[Issue] = field(default_factory=list)


def read_trials_csv(path: Path) -> tuple[pd.DataFrame, list[Issue]]:
    """trials.csv as text (so a type problem stays visible), and its schema problems."""
    try:
        # Only an empty cell is null: "NA" or "nan" is a value the type checks should see.
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = f"unreadable: {exc}".splitlines()[0]
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in TRIALS_COLUMNS})
        return empty, [Issue(str(path), "trials.csv readable", reason)]
    issues = []
    for name in TRIALS_COLUMNS:
        if name not in raw.columns:
            # Kept as an all-null column so the row checks still run and name what is missing.
            raw[name] = pd.Series(pd.NA, index=raw.index, dtype=object)
            issues.append(Issue(str(path), "trials.csv columns", f"missing column {name!r}"))
    raw.index = pd.RangeIndex(2, len(raw) + 2, name="row")  # the line number in the file
    return raw, issues


def _typed(raw: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=raw.index)
    out["row"] = raw.index.to_numpy()
    for name in TEXT_COLUMNS:
        out[name] = raw[name].astype(object)
    for name in NUMBER_COLUMNS:
        text = raw[name].astype(object)
        out[text_column(name)] = text
        # Unparseable text becomes NaN here; the regex check on the text column names it.
        out[name] = pd.to_numeric(text, errors="coerce").astype(float)
    return out


def _lenient_fields(path: Path) -> list[int] | None:
    """The 8 integers of a well-formed marks line whatever their values, else ``None``.

    ``read_marks`` rejects a file on its first broken rule; when the file is well formed but
    its values break rules (start > end, a flag of 2) the values go to the table so the suite
    reports every rule they break, each under its own expectation.
    """
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError):
        return None
    if len(lines) != 1:
        return None
    parts = lines[0].split("\t")
    values = [v for v in map(parse_int, parts) if v is not None]
    return values if len(values) == len(parts) == len(FIELD_NAMES) else None


def _marks_row(marks_dir: Path, trial_id: object) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(FIELD_NAMES, float("nan"))
    row.update(marks_file=None, marks_error=None)
    if not isinstance(trial_id, str):
        return row
    path = marks_path(marks_dir, trial_id)
    if not path.is_file():
        return row
    row["marks_file"] = str(path)
    try:
        values = list(astuple(read_marks(path)))
    except InputError as exc:
        values = _lenient_fields(path)
        if values is None:
            row["marks_error"] = str(exc)
            return row
    row.update(zip(FIELD_NAMES, (float(v) for v in values), strict=True))
    return row


def _marks_files(marks_dir: Path, trial_ids: set[str]) -> pd.DataFrame:
    files = sorted(marks_dir.glob(f"*{MARKS_SUFFIX}")) if marks_dir.is_dir() else []
    return pd.DataFrame(
        {
            "trial_id": [f.stem for f in files],
            "file": [str(f) for f in files],
            "in_trials": [f.stem in trial_ids for f in files],
        },
        columns=["trial_id", "file", "in_trials"],
    )


def _participants(trials: pd.DataFrame) -> pd.DataFrame:
    known = trials.dropna(subset=["participant", "emotion"])
    rows = []
    for participant, group in known.groupby("participant", sort=True):
        counts = group["emotion"].value_counts()
        rows.append(
            {
                "participant": participant,
                "trials": len(group),
                "top_label": str(counts.index[0]),
                "top_share": float(counts.iloc[0] / len(group)),
            }
        )
    return pd.DataFrame(rows, columns=["participant", "trials", "top_label", "top_share"])


def build_tables(
    trials_csv: Path,
    marks_dir: Path,
    clip_check: Callable[[Path], ClipCheck] = check_clip,
) -> Tables:
    """Read trials.csv and the marks folder, decode the clips, and join it all per trial."""
    raw, structural = read_trials_csv(trials_csv)
    trials = _typed(raw)
    marks = pd.DataFrame(
        [_marks_row(marks_dir, t) for t in trials["trial_id"]],
        index=trials.index,
        columns=[*FIELD_NAMES, "marks_file", "marks_error"],
    )
    paths = [
        trials_csv.parent / f"{t}.mp4" if isinstance(t, str) else None for t in trials["trial_id"]
    ]
    # Decoding dominates the run; PyAV decodes and converts with the GIL released.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        found = list(
            tqdm(
                pool.map(lambda p: NO_CLIP if p is None else clip_check(p), paths),
                total=len(paths),
                desc="media checks",
                unit="clip",
            )
        )
    clips = [
        {
            "clip_file": None if path is None else str(path),
            "decoded_frames": float("nan") if c.decoded_frames is None else float(c.decoded_frames),
            "video_error": c.video_error,
            "audio_error": c.audio_error,
        }
        for path, c in zip(paths, found, strict=True)
    ]
    media = pd.DataFrame(
        clips,
        index=trials.index,
        columns=["clip_file", "decoded_frames", "video_error", "audio_error"],
    )
    joined = pd.concat([trials, marks, media], axis=1)
    marks_table = _marks_files(marks_dir, set(trials["trial_id"].dropna()))
    log.info(
        "read %d trials from %s and %d marks files from %s",
        len(joined),
        trials_csv,
        len(marks_table),
        marks_dir,
    )
    return Tables(raw, joined, marks_table, _participants(trials), structural)
