"""``emoflow trim``: validated trials → labelled clips cut to the marked [start, end]."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from emoflow.config import TrimParams
from emoflow.errors import InputError
from emoflow.fsio import atomic_dir, atomic_path
from emoflow.ingest.marks import FLAG_NAMES
from emoflow.media.video import MediaWriter, iter_frames, probe
from emoflow.tables import read_table, write_table

log = logging.getLogger(__name__)

CLIPS_CSV = "clips.csv"
CLIPS_COLUMNS = ("trial_id", "participant", "label", "frames", "peak", *FLAG_NAMES, "start",
                 "end", "source")  # fmt: skip
NEEDED = ("trial_id", "participant", "emotion", "start", "end", "peak", *FLAG_NAMES)


def read_valid_trials(path: Path) -> list[dict[str, str]]:
    """The validation gate's ``valid_trials.csv``: only rows that passed every expectation."""
    return read_table(path, NEEDED, "no validated trials: run `emoflow validate` first")


def cut_clip(source: Path, dest: Path, start: int, end: int, crf: int) -> int:
    """Write frames ``start..end`` (inclusive) of ``source`` to ``dest``; return frames written."""
    info = probe(source)
    written = 0
    with atomic_path(dest) as tmp:
        # PyAV picks the muxer from the name: keep the .mp4 suffix on the temp file.
        tmp_mp4 = tmp.with_suffix(".mp4")
        try:
            with MediaWriter(tmp_mp4, round(info.fps), info.width, info.height, None, crf) as w:
                for i, frame in enumerate(iter_frames(source)):
                    if i > end:
                        break
                    if i >= start:
                        w.write_frame(frame)
                        written += 1
            tmp_mp4.replace(tmp)
        finally:
            tmp_mp4.unlink(missing_ok=True)
    if written != end - start + 1:
        dest.unlink(missing_ok=True)
        raise InputError(source, f"has {start + written} frames, marks end at frame {end}")
    return written


def trim_trials(valid_csv: Path, trials_dir: Path, out_dir: Path, params: TrimParams
                ) -> list[dict]:  # fmt: skip
    """Cut each valid, unexcluded trial into ``out_dir/<label>/<trial_id>.mp4`` + clips.csv."""
    rows = read_valid_trials(valid_csv)
    excluded: Counter[str] = Counter()
    clips: list[dict] = []
    with atomic_dir(out_dir) as tmp:
        for row in tqdm(rows, desc="trim", unit="clip"):
            hits = [f for f in params.exclude_flags if row[f] == "1"]
            if hits:
                excluded.update(hits)
                continue
            start, end, peak = int(row["start"]), int(row["end"]), int(row["peak"])
            source = trials_dir / f"{row['trial_id']}.mp4"
            label = row["emotion"]
            dest = tmp / label / f"{row['trial_id']}.mp4"
            dest.parent.mkdir(exist_ok=True)
            frames = cut_clip(source, dest, start, end, params.crf)
            clips.append({
                "trial_id": row["trial_id"], "participant": row["participant"], "label": label,
                "frames": frames, "peak": peak - start, **{f: row[f] for f in FLAG_NAMES},
                "start": start, "end": end, "source": str(source),
            })  # fmt: skip
        write_table(tmp / CLIPS_CSV, CLIPS_COLUMNS, clips)
    per_label = Counter(c["label"] for c in clips)
    log.info("trim: read %d valid trials, wrote %d clips to %s (%s); excluded %d by flags (%s)",
             len(rows), len(clips), out_dir,
             ", ".join(f"{k} {v}" for k, v in sorted(per_label.items())),
             len(rows) - len(clips), ", ".join(f"{k} {v}" for k, v in sorted(excluded.items()))
             or "none")  # fmt: skip
    return clips
