"""``emoflow faces``: every labelled clip → one file of aligned faces + ``faces.csv``."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emoflow.config import FacesParams
from emoflow.errors import InputError
from emoflow.faces.detect import DETECTORS
from emoflow.faces.pipeline import process_clip
from emoflow.faces.store import SUFFIX, write_face_clip
from emoflow.fsio import atomic_dir
from emoflow.guards import check_outputs, keep_nonempty, params_inputs
from emoflow.ingest.marks import INTEGER_RULE, parse_int
from emoflow.parallel import parallel_map, worker_count
from emoflow.tables import read_table, write_table

log = logging.getLogger(__name__)

FACES_CSV = "faces.csv"
FACES_COLUMNS = ("trial_id", "participant", "label", "file", "frames_decoded", "frames_with_face",
                 *DETECTORS, "tracked", "selected", "peak_position", "excluded")  # fmt: skip
CLIP_COLUMNS = ("trial_id", "participant", "label", "peak")


def read_clips_table(path: Path) -> list[dict[str, str]]:
    """clips.csv, its peaks checked before any clip is decoded (empty: peak unknown)."""
    rows = read_table(path, CLIP_COLUMNS, "no clips table: run `emoflow trim` first")
    for n, r in enumerate(rows, start=2):
        text = r["peak"] or ""
        peak = parse_int(text)
        if text.strip() and (peak is None or peak < 0):
            raise InputError(path, f"peak must be empty or a frame index >= 0, {INTEGER_RULE}; "
                             f"got {text!r}", f"row {n}")  # fmt: skip
    return rows


def warn_short_clips(stage: str, clips: Iterable[tuple[Path, int, int | None, int | None]],
                     listed_in: str) -> list[Path]:  # fmt: skip
    """Warn about each clip that decoded to fewer frames than ``listed_in`` says it has.

    ``clips``: (file, frames decoded, frames listed or None, peak or None). Decoding stops
    quietly where a damaged or cut file ends, so only this comparison tells; the clip's faces
    then come from the decoded part only. Returns the short clips, for the stage's summary.
    """
    short = []
    for path, decoded, listed, peak in clips:
        if listed is None or decoded >= listed:
            continue
        lost = f"; its peak (frame {peak}) is past that end" if peak is not None and \
            peak >= decoded else ""  # fmt: skip
        log.warning("%s: %s decodes to %d frames but %s lists %d: the clip ends early (a "
                    "damaged or cut file?), its faces come from those %d frames only%s", stage,
                    path, decoded, listed_in, listed, decoded, lost)  # fmt: skip
        short.append(path)
    return short


def keep_faces(stage: str, out_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Refuse to replace a faces.csv that has usable clips with one that has none."""
    excluded = [r["excluded"] for r in rows if r["excluded"]]
    why = f"all {len(rows)} clips excluded; first: {excluded[0]}" if excluded else "no clips"
    keep_nonempty(stage, out_dir / FACES_CSV, len(rows) - len(excluded), why,
                  lambda r: bool(r.get("file")) and not r.get("excluded"))


def faces_row(trial_id: str, participant: str, label: str, decoded: int, with_face: int,
              counts: Mapping[str, int], selected: list[int], peak: int | None,
              min_face_frames: int) -> tuple[dict[str, Any], int | None]:  # fmt: skip
    """A clip's faces.csv row (``excluded`` when it has too few face frames) and the peak's
    position among the selected frames (None when unknown or excluded)."""
    row: dict[str, Any] = {
        "trial_id": trial_id, "participant": participant, "label": label, "file": "",
        "frames_decoded": decoded, "frames_with_face": with_face,
        **{d: counts.get(d, 0) for d in DETECTORS}, "tracked": counts.get("tracked", 0),
        "selected": " ".join(map(str, selected)), "peak_position": "", "excluded": "",
    }  # fmt: skip
    if with_face < min_face_frames:
        row["excluded"] = (f"face in {with_face} of {decoded} frames "
                           f"(faces.min_face_frames: {min_face_frames})")  # fmt: skip
        return row, None
    if peak is None:
        return row, None
    position = int(np.argmin(np.abs(np.array(selected) - peak)))
    row["peak_position"] = position
    return row, position


def clip_faces(args: tuple[dict[str, str], Path, Path, FacesParams]) -> dict:
    """Process one clip and write its face file; return its faces.csv row."""
    row, video, out_dir, params = args
    peak = int(row["peak"]) if row.get("peak", "") not in ("", None) else None
    r = process_clip(video, params, peak)
    result, peak_pos = faces_row(row["trial_id"], row["participant"], row["label"],
                                 r.frames_decoded, r.face_frames, r.counts, r.selected, peak,
                                 params.min_face_frames)  # fmt: skip
    if result["excluded"]:
        return result
    rel = Path(row["label"]) / f"{row['trial_id']}{SUFFIX}"
    meta = {
        "trial_id": row["trial_id"], "participant": row["participant"], "label": row["label"],
        "source": str(video), "frames": r.selected, "peak_position": peak_pos,
        "detectors": [r.sources[i] for i in r.selected], "size": params.size,
        "padding": params.padding,
        "landmarks": [np.round(r.points[i], 2).tolist() for i in r.selected],
    }  # fmt: skip
    (out_dir / row["label"]).mkdir(parents=True, exist_ok=True)
    write_face_clip(out_dir / rel, r.chips, meta, params.jpeg_quality)
    result["file"] = str(rel)
    return result


def extract_faces(clips_csv: Path, out_dir: Path, params: FacesParams) -> list[dict]:
    """Run the face pipeline over every clip of ``clips_csv``, in parallel, atomically.

    Clips are found as ``<clips_csv folder>/<label>/<trial_id>.mp4`` (``emoflow trim``'s
    layout) unless the table has a ``path`` column.
    """
    rows = read_clips_table(clips_csv)
    base = clips_csv.parent
    videos = [base / r["path"] if r.get("path") else base / r["label"] / f"{r['trial_id']}.mp4"
              for r in rows]  # fmt: skip
    check_outputs({"clips": clips_csv, **params_inputs(params),
                   **{f"clip of row {n}": v for n, v in enumerate(videos, start=2)}},
                  {"out": out_dir})  # fmt: skip
    log.info("faces: %d clips from %s, %d workers", len(rows), clips_csv,
             worker_count(params.workers, len(rows)))  # fmt: skip
    with atomic_dir(out_dir) as tmp:
        jobs = [(r, v, tmp, params) for r, v in zip(rows, videos, strict=True)]
        results = parallel_map(clip_faces, jobs, params.workers, "faces", "clip")
        keep_faces("faces", out_dir, results)
        write_table(tmp / FACES_CSV, FACES_COLUMNS, results)
    short = warn_short_clips("faces", (
        (v, res["frames_decoded"], parse_int(r.get("frames") or ""), parse_int(r["peak"] or ""))
        for r, v, res in zip(rows, videos, results, strict=True)), clips_csv.name)  # fmt: skip
    decoded = sum(r["frames_decoded"] for r in results)
    found = sum(r["frames_with_face"] for r in results)
    excluded = [r for r in results if r["excluded"]]
    by = {d: sum(r[d] for r in results) for d in (*DETECTORS, "tracked")}
    why = "".join(f"; {r['trial_id']}: {r['excluded']}" for r in excluded)
    log.info(
        "faces: %d clips, %d frames decoded, face in %d (%.1f %%; %s); wrote %d face files, "
        "excluded %d clips%s; %d clips shorter than %s lists%s", len(results), decoded, found,
        100 * found / max(decoded, 1), ", ".join(f"{k} {v}" for k, v in by.items()),
        len(results) - len(excluded), len(excluded), why, len(short), clips_csv.name,
        "".join(f"; {p}" for p in short),
    )  # fmt: skip
    return results
