"""``emoflow trim``: validated trials → labelled clips cut to the marked [start, end]."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from emoflow.config import TrimParams
from emoflow.errors import InputError
from emoflow.fsio import atomic_dir, atomic_path
from emoflow.guards import check_outputs, keep_nonempty, params_inputs
from emoflow.ingest.marks import FIELD_NAMES, FLAG_NAMES, Marks, marks_from_fields
from emoflow.media.video import MediaWriter, iter_frames, probe
from emoflow.tables import read_table, write_table

# emoflow review accept's output (emoflow.feedback.accept), read here without importing it
REVIEWED_CSV = "reviewed.csv"
REVIEWED_CLIPS = "clips"

log = logging.getLogger(__name__)

CLIPS_CSV = "clips.csv"
CLIPS_COLUMNS = ("trial_id", "participant", "label", "frames", "peak", *FLAG_NAMES, "start",
                 "end", "source")  # fmt: skip
NEEDED = ("trial_id", "participant", "emotion", "start", "end", "peak", *FLAG_NAMES)


def read_valid_trials(path: Path) -> list[dict[str, str]]:
    """The validation gate's ``valid_trials.csv``: only rows that passed every expectation."""
    return read_table(path, NEEDED, "no validated trials: run `emoflow validate` first")


def row_marks(path: Path, row_no: int, row: dict[str, str]) -> Marks:
    """A valid_trials.csv row's marks, checked by the marks rules the gate applied.

    The file may have been edited since the gate passed it: a bad value is an error here, not
    a crash or a wrong clip.
    """
    where = f"row {row_no}"
    for name in ("trial_id", "participant", "emotion"):
        value = (row.get(name) or "").strip()
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise InputError(path, f"{name} must be a plain name, got {row.get(name)!r}", where)
    return marks_from_fields([row.get(f) or "" for f in FIELD_NAMES], path, where,
                             prefix=f"trial {row['trial_id']}: ")  # fmt: skip


def cut_clip(source: Path, dest: Path, start: int, end: int, crf: int) -> int:
    """Write frames ``start..end`` (inclusive) of ``source`` to ``dest``; return frames written."""
    info = probe(source)
    written = seen = 0
    with atomic_path(dest) as tmp:
        # PyAV picks the muxer from the name: keep the .mp4 suffix on the temp file.
        tmp_mp4 = tmp.with_suffix(".mp4")
        try:
            with MediaWriter(tmp_mp4, round(info.fps), info.width, info.height, None, crf) as w:
                for i, frame in enumerate(iter_frames(source)):
                    seen = i + 1
                    if i > end:
                        break
                    if i >= start:
                        w.write_frame(frame)
                        written += 1
            if written != end - start + 1:  # raised inside: nothing is left at dest
                raise InputError(source, f"has {seen} frames, marks end at frame {end}")
            tmp_mp4.replace(tmp)
        finally:
            tmp_mp4.unlink(missing_ok=True)
    return written


def read_sources(valid_csv: Path, trials_dir: Path, reviewed: Path | None
                 ) -> list[tuple[dict[str, str], Marks, Path]]:  # fmt: skip
    """(row, marks, trial folder) of the validated trials, then of the reviewed clips
    (``emoflow review accept``: ``<reviewed>/reviewed.csv``, clips in ``<reviewed>/clips``)."""
    sources = [(valid_csv, trials_dir, read_valid_trials(valid_csv))]
    if reviewed is not None:
        table = reviewed / REVIEWED_CSV
        sources.append((table, reviewed / REVIEWED_CLIPS,
                        read_table(table, NEEDED, "no reviewed.csv (emoflow review accept)")))
    out, seen = [], {}
    for path, folder, rows in sources:
        for n, row in enumerate(rows, start=2):
            m = row_marks(path, n, row)
            tid = row["trial_id"]
            if tid in seen:  # the two sources must not share a trial id
                raise InputError(path, f"trial_id {tid} is also in {seen[tid]}", f"row {n}")
            seen[tid] = path
            out.append((row, m, folder))
    return out


def trim_trials(valid_csv: Path, trials_dir: Path, out_dir: Path, params: TrimParams,
                reviewed: Path | None = None) -> list[dict]:  # fmt: skip
    """Cut each valid, unexcluded trial (and reviewed clip) into
    ``out_dir/<label>/<trial_id>.mp4`` + clips.csv."""
    inputs = {"valid": valid_csv, "trials": trials_dir, **params_inputs(params)}
    if reviewed is not None:
        inputs["reviewed"] = reviewed
    check_outputs(inputs, {"out": out_dir})
    found = read_sources(valid_csv, trials_dir, reviewed)
    rows = [row for row, _, _ in found]
    excluded: Counter[str] = Counter()
    clips: list[dict] = []
    with atomic_dir(out_dir) as tmp:
        for row, m, folder in tqdm(found, desc="trim", unit="clip"):
            hits = [f for f in params.exclude_flags if m.flags[f]]
            if hits:
                excluded.update(hits)
                continue
            start, end, peak = m.start, m.end, m.peak
            source = folder / f"{row['trial_id']}.mp4"
            label = row["emotion"]
            dest = tmp / label / f"{row['trial_id']}.mp4"
            dest.parent.mkdir(exist_ok=True)
            frames = cut_clip(source, dest, start, end, params.crf)
            clips.append({
                "trial_id": row["trial_id"], "participant": row["participant"], "label": label,
                "frames": frames, "peak": peak - start, **m.flags,
                "start": start, "end": end, "source": str(source),
            })  # fmt: skip
        why = (f"all {len(rows)} valid trials excluded by trim.exclude_flags" if rows
               else f"{valid_csv} has no rows")  # fmt: skip
        keep_nonempty("trim", out_dir / CLIPS_CSV, len(clips), why)
        write_table(tmp / CLIPS_CSV, CLIPS_COLUMNS, clips)
    per_label = Counter(c["label"] for c in clips)
    log.info("trim: read %d valid trials, wrote %d clips to %s (%s); excluded %d by flags (%s)",
             len(rows), len(clips), out_dir,
             ", ".join(f"{k} {v}" for k, v in sorted(per_label.items())),
             len(rows) - len(clips), ", ".join(f"{k} {v}" for k, v in sorted(excluded.items()))
             or "none")  # fmt: skip
    return clips
