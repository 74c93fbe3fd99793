"""A manifest (CSV, or TSV by its extension): ``path, label, subject[, start, end, peak, split]``.

The general shape every other one reduces to. ``path`` is a video, a folder of frame images or
a single image, relative to the manifest's folder (or absolute); ``start``/``end`` (inclusive)
cut a segment out of it and ``peak`` marks its apex, all frame indices of the source; ``split``
(train/val/test) is the dataset's own assignment, used instead of drawing one.
"""

from __future__ import annotations

import csv
from pathlib import Path

from emoflow.datasets.sources.base import Found, ReadOptions, SourceClip, ext, listing
from emoflow.errors import InputError
from emoflow.ingest.marks import INTEGER_RULE, parse_int

REQUIRED = ("path", "label", "subject")
OPTIONAL = ("start", "end", "peak", "split")
SPLITS = ("train", "val", "test")


def _frame(path: Path, row: dict[str, str], col: str, where: str) -> int | None:
    text = (row.get(col) or "").strip()
    if not text:
        return None
    n = parse_int(text)
    if n is None or n < 0:
        raise InputError(path, f"{col} must be empty or a frame index >= 0, {INTEGER_RULE}; "
                         f"got {text!r}", where)  # fmt: skip
    return n


def _clip(manifest: Path, row: dict[str, str], where: str, opts: ReadOptions) -> SourceClip:
    text = (row["path"] or "").strip()
    label, subject = (row["label"] or "").strip().lower(), (row["subject"] or "").strip()
    for col, value in (("path", text), ("label", label), ("subject", subject)):
        if not value:
            raise InputError(manifest, f"{col} is empty", where)
    src = manifest.parent / text  # an absolute path stays absolute
    if src.is_dir():
        frames = tuple(p for p in listing(src) if p.is_file() and ext(p) in opts.image_ext)
        if not frames:
            raise InputError(manifest, f"{text!r} is a folder without frame images "
                             f"({', '.join(opts.image_ext)})", where)  # fmt: skip
        kind, paths = "folder", frames
    elif src.is_file() and ext(src) in opts.video_ext:
        kind, paths = "video", (src,)
    elif src.is_file() and ext(src) in opts.image_ext:
        kind, paths = "image", (src,)
    elif src.exists():
        raise InputError(manifest, f"{text!r} is neither a video ({', '.join(opts.video_ext)}), "
                         f"an image ({', '.join(opts.image_ext)}) nor a folder", where)
    else:
        raise InputError(manifest, f"{text!r} does not exist (relative paths are read from "
                         f"{manifest.parent})", where)  # fmt: skip
    start, end = _frame(manifest, row, "start", where), _frame(manifest, row, "end", where)
    peak = _frame(manifest, row, "peak", where)
    if start is not None and end is not None and end < start:
        raise InputError(manifest, f"end ({end}) is before start ({start})", where)
    if peak is not None and not (start or 0) <= peak <= (end if end is not None else peak):
        raise InputError(manifest, f"peak ({peak}) is outside [start, end]", where)
    if kind == "image" and (start or end or peak):
        raise InputError(manifest, "a single image has frame 0 only", where)
    split = (row.get("split") or "").strip().lower()
    if "split" in row and split not in SPLITS:
        raise InputError(manifest, f"split must be one of {', '.join(SPLITS)}; got {split!r}",
                         where)  # fmt: skip
    # An absolute path under the manifest's folder names its clip as a relative one would.
    name = src.relative_to(manifest.parent).as_posix() if src.is_relative_to(manifest.parent) \
        else text  # fmt: skip
    if kind != "folder" and "." in Path(name).name:
        name = name.rsplit(".", 1)[0]
    if start is not None or end is not None:
        name += f"_{start or 0}-{'' if end is None else end}"
    return SourceClip(label, name, kind, paths, subject, start=start or 0, end=end, peak=peak,
                      split=split, row=where)  # fmt: skip


def read_manifest(manifest: Path, opts: ReadOptions) -> Found:
    if not manifest.is_file():
        raise InputError(manifest, "no manifest file here")
    delimiter = "\t" if ext(manifest) in ("tsv", "tab") else ","
    found = Found()
    with manifest.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            sep = "tab" if delimiter == "\t" else "comma"
            raise InputError(manifest, f"missing columns {missing} ({sep}-separated, header "
                             f"{', '.join(REQUIRED)}[, {', '.join(OPTIONAL)}])", "row 1")
        reader.fieldnames = columns
        for n, row in enumerate(reader, start=2):
            if None in row:  # more fields than the header names: a shifted row
                raise InputError(manifest, f"{len(columns) + len(row[None])} fields, the header "
                                 f"has {len(columns)}", f"row {n}")  # fmt: skip
            found.clips.append(_clip(manifest, row, f"row {n}", opts))
    if not found.clips:
        raise InputError(manifest, "the manifest lists no clips")
    return found
