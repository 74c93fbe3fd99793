"""``emoflow import``: a public labelled dataset, in the shape it is published, → processed faces.

The output is exactly what ``emoflow faces`` writes (``<label>/<trial_id>.faces.zip`` +
``faces.csv`` with :data:`~emoflow.faces.stage.FACES_COLUMNS`) plus ``classes.txt``, so
``emoflow split`` and training read an imported dataset like the lab's own.

The steps, each in its own module: a reader (:mod:`emoflow.datasets.sources`) reduces the
dataset's shape to clip rows (label, subject, frames); :mod:`~emoflow.datasets.labelmap` maps
labels to classes; every clip gets its trial id and the splits are checked before any face
work; :mod:`~emoflow.datasets.import_faces` runs on the clips in parallel, each finished clip
recorded by :mod:`~emoflow.datasets.resume` so a killed import resumes; the tables and the
splits (:mod:`~emoflow.datasets.given` where the dataset ships its own) come last, and the
whole output appears in one rename. See ``docs/importer.md``.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from emoflow.config import FacesParams, Params
from emoflow.datasets.given import given_plan, read_folds
from emoflow.datasets.import_faces import ImportOptions, auto_crop_padding, import_clip
from emoflow.datasets.labelmap import apply_label_map, load_label_map
from emoflow.datasets.resume import Journal, fingerprint
from emoflow.datasets.sources import Found, SourceClip, read_source
from emoflow.datasets.sources.base import frame_prefix, natural_key, parse_exts
from emoflow.datasets.splits import Plan
from emoflow.errors import InputError
from emoflow.faces.stage import FACES_COLUMNS, FACES_CSV, warn_short_clips
from emoflow.fsio import atomic_write_text
from emoflow.guards import check_outputs, params_inputs
from emoflow.media.video import probe
from emoflow.parallel import parallel_imap, worker_count
from emoflow.tables import write_table

__all__ = ["ImportOptions", "check_crop_padding", "check_peak", "find_clips", "frame_prefix",
           "import_dataset", "natural_key", "order_classes", "parse_exts"]  # fmt: skip

log = logging.getLogger(__name__)

CLASSES_TXT = "classes.txt"
SPLITS_DIR = "splits"
SUMMARY_JSON = "import_summary.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def check_peak(text: str) -> Literal["none", "last"]:
    """The ``--peak`` choice: ``last`` for onset→apex sequences (CK+), else ``none``."""
    if text not in ("none", "last"):
        raise InputError("--peak", f"{text!r}: must be none or last")
    return "last" if text == "last" else "none"


def check_crop_padding(text: str) -> float | None:
    """The ``--crop-padding`` choice: ``auto`` (None: from faces.padding) or a margin in [0, 1]."""
    if text == "auto":
        return None
    try:
        margin = float(text)
    except ValueError:
        margin = -1.0
    if not 0.0 <= margin <= 1.0:
        raise InputError("--crop-padding", f"{text!r}: must be auto or a number from 0 to 1 "
                         "(the margin on each side, as a fraction of the crop's side)")  # fmt: skip
    return margin


def find_clips(root: Path | None, opts: ImportOptions, manifest: Path | None = None) -> Found:
    """Every clip of the dataset, in a deterministic order, with its label and subject."""
    return read_source(root, opts.read(), layout=opts.layout, name_pattern=opts.name_pattern,
                       manifest=manifest)  # fmt: skip


def sanitize(text: str) -> str:
    """Only ``[A-Za-z0-9_-]``: trial ids become file names and CSV keys."""
    return _UNSAFE.sub("_", text).strip("_") or "clip"


def _base_id(subject: str, name: str) -> str:
    """``<subject>_<name>``, unless the name already starts with the subject (CK+)."""
    s, n = sanitize(subject), sanitize(re.sub(r"\.[^./]+$", "", name))
    return n if n == s or n.startswith((f"{s}_", f"{s}-")) else f"{s}_{n}"


def assign_ids(clips: list[SourceClip]) -> list[SourceClip]:
    """A trial id for each clip, unique in the dataset (all set before any face work)."""
    taken: set[str] = set()
    out = []
    for c in clips:
        base = _base_id(c.subject, c.name)
        tid, n = base, 1
        while tid in taken:  # the same clip name under two labels, or names that sanitize alike
            tid = f"{base}_{sanitize(c.label)}" if n == 1 else f"{base}_{sanitize(c.label)}{n}"
            n += 1
        if tid != base:
            log.warning("import: trial id %s is taken; %s becomes %s", base, c.where, tid)
        taken.add(tid)
        out.append(replace(c, trial_id=tid))
    return out


def order_classes(labels: set[str], known: tuple[str, ...]) -> list[str]:
    """params.classes order when every label is one of them (only those present), else sorted."""
    if labels <= set(known):
        return [c for c in known if c in labels]
    return sorted(labels)


def _check_folds(folds: int, where: Path) -> None:
    if folds == 1 or folds < 0:
        raise InputError(where, f"--folds {folds}: must be 0 (none) or at least 2")


def _given_splits(clips: list[SourceClip], folds: int, folds_from: Path | None
                  ) -> tuple[Plan | None, int]:  # fmt: skip
    """The dataset's own sets (a manifest's ``split``) and folds (``--folds-from``), if any."""
    set_of = {c.trial_id: c.split for c in clips} if any(c.split for c in clips) else None
    fold_of = read_folds(folds_from, clips) if folds_from is not None else None
    if fold_of:
        given = len(set(fold_of.values()))
        if folds not in (0, given):
            raise InputError(folds_from, f"lists {given} folds; --folds says {folds}")
        folds = given
    if set_of is None and fold_of is None:
        return None, folds
    log.info("import: the dataset's own splits: %s%s", "train/val/test from the manifest's "
             "split column" if set_of else "train/val/test drawn",
             f", {folds} folds from {folds_from}" if fold_of else "")  # fmt: skip
    return given_plan(set_of, fold_of), folds


def _check_split_plan(clips: list[SourceClip], params: Params, folds: int, plan: Plan | None,
                      where: Path, finder: str) -> None:  # fmt: skip
    """The splits the found subjects allow, checked before any face work.

    Clips excluded later can still spoil them; too few subjects should not cost an hour first.
    """
    if not folds and plan is None:
        return
    from emoflow.datasets.splits import plan_splits

    rows = [{"trial_id": c.trial_id, "participant": c.subject, "label": c.label} for c in clips]
    try:
        (plan or plan_splits)(rows, params.split.model_copy(update={"folds": folds}))
    except InputError as exc:
        subjects = sorted({c.subject for c in clips}, key=natural_key)
        shown = ", ".join(subjects[:10]) + (", ..." if len(subjects) > 10 else "")
        raise InputError(where, f"--folds {folds}: {exc.rule} ({finder} {len(subjects)} "
                         f"subjects: {shown}); nothing imported") from None  # fmt: skip


def static_params(fp: FacesParams, opts: ImportOptions) -> FacesParams:
    """``--static``: a clip is one image, so one frame with a face is all a clip can have."""
    if opts.static and fp.min_face_frames > 1:
        log.info("import --static: each clip is one image: faces.min_face_frames %d -> 1",
                 fp.min_face_frames)  # fmt: skip
        return fp.model_copy(update={"min_face_frames": 1})
    return fp


@dataclass
class _Tally:
    """What the import did, per class and per subject, counted as rows stream past."""

    dropped: Counter[str] = field(default_factory=Counter)  # by the label map, dataset label
    imported: Counter[str] = field(default_factory=Counter)
    excluded: Counter[str] = field(default_factory=Counter)
    subjects: dict[str, list[int]] = field(default_factory=dict)  # subject → [imported, excl.]
    reasons: dict[str, str] = field(default_factory=dict)  # excluded trial id → why
    longest: int = 0

    def add(self, row: dict[str, Any]) -> None:
        out = self.excluded if row["excluded"] else self.imported
        out[row["label"]] += 1
        self.subjects.setdefault(row["participant"], [0, 0])[1 if row["excluded"] else 0] += 1
        if row["excluded"]:
            self.reasons[row["trial_id"]] = row["excluded"]
        self.longest = max(self.longest, row["frames_decoded"])


def _check_some_kept(t: _Tally, where: Path, fp: FacesParams) -> None:
    """A run that excludes every clip imports nothing: say why and what to change."""
    if t.imported or not t.reasons:
        return
    if t.longest < fp.min_face_frames:
        hint = (f"no clip has more than {t.longest} frames, fewer than faces.min_face_frames "
                f"({fp.min_face_frames}): set faces.min_face_frames: {max(t.longest, 1)} in the "
                "params file (-p)")  # fmt: skip
    else:
        hint = ("no clip shows a face in enough frames: if the frames are already cropped "
                "faces, add --cropped; else lower faces.min_face_frames or check the images")
    tid, why = next(iter(t.reasons.items()))
    raise InputError(where, f"all {len(t.reasons)} clips excluded, nothing imported (e.g. "
                     f"{tid}: {why}): {hint}")  # fmt: skip


def _warn_if_short(clip: SourceClip, row: dict[str, Any]) -> None:
    """A video that decoded to fewer frames than its container (or segment) declares."""
    if clip.kind != "video":
        return
    listed = (clip.end + 1 if clip.end is not None else probe(clip.paths[0]).frames) - clip.start
    decoded = row["frames_decoded"]
    warn_short_clips("import", [(clip.paths[0], decoded, listed if listed > decoded + 1 else None,
                                 None)], "its container")  # fmt: skip


def _summary(found: Found, t: _Tally, out: Path, resumed: int) -> dict[str, Any]:
    classes = sorted({*t.imported, *t.excluded})
    summary = {
        "clips_found": len(found.clips) + sum(t.dropped.values()),
        "files_ignored": len(found.ignored), "files_unmatched": len(found.unmatched),
        "sequences_unlabelled": found.unlabelled, "dropped_by_label_map": dict(t.dropped),
        "resumed_clips": resumed,
        "classes": {c: {"imported": t.imported[c], "excluded": t.excluded[c]} for c in classes},
        "subjects": {s: {"imported": n[0], "excluded": n[1]}
                     for s, n in sorted(t.subjects.items(), key=lambda kv: natural_key(kv[0]))},
        "excluded": t.reasons,
    }  # fmt: skip
    why = Counter(re.sub(r"\d+", "N", r) for r in t.reasons.values())
    log.info(
        "import: %d clips found, %d files ignored, %d unmatched, %d unlabelled sequences, %d "
        "dropped by the label map (%s); imported %d clips of %d subjects (%s); excluded %d (%s);"
        " wrote %s", summary["clips_found"], len(found.ignored), len(found.unmatched),
        found.unlabelled, sum(t.dropped.values()), _counts(t.dropped), sum(t.imported.values()),
        sum(1 for n in t.subjects.values() if n[0]), _counts(t.imported),
        sum(t.excluded.values()), _counts(why), out,
    )  # fmt: skip
    return summary


def _counts(c: Counter[str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(c.items())) or "none"


def _face_rows(clips: list[SourceClip], journal: Journal, done: int, fp: FacesParams,
               opts: ImportOptions) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Run the face step on the clips not yet done, recording each row as it comes."""
    jobs = ((c, journal.dir, fp, opts) for c in clips[done:])
    rows = parallel_imap(import_clip, jobs, len(clips), fp.workers, "import", "clip", done)
    for clip, row in zip(clips[done:], rows, strict=True):
        journal.append(row)
        _warn_if_short(clip, row)
        yield row


def import_dataset(root: Path | None, out: Path, params: Params, opts: ImportOptions,
                   folds: int = 0, *, manifest: Path | None = None, label_map: Path | None = None,
                   folds_from: Path | None = None, keep_rows: bool = True
                   ) -> list[dict[str, Any]]:  # fmt: skip
    """Import the dataset under ``root`` (or listed in ``manifest``) into ``out``.

    Every clip is found, labelled and given its subject before any face work, so a bad row or
    an unmapped label fails in seconds, not after an hour of detection. With ``folds`` ≥ 2, or
    splits the dataset gives, ``out/splits/`` is written in the same step: the import is
    complete with its splits or absent. Returns the faces.csv rows (none without
    ``keep_rows``: the command line does not hold a large dataset's rows for nothing).
    """
    inputs = {"root": root, "manifest": manifest, "label map": label_map, "folds": folds_from}
    check_outputs({**inputs, **params_inputs(params)}, {"out": out})
    where = Path(root if root is not None else manifest or ".")
    _check_folds(folds, where)
    if opts.crop_padding is not None and not opts.cropped:
        raise InputError("--crop-padding", "applies to --cropped faces only (detected faces "
                         "are framed by faces.padding)")  # fmt: skip
    if opts.cropped and opts.crop_padding is None:
        opts = replace(opts, crop_padding=auto_crop_padding(params.faces.padding))
    found = find_clips(root, opts, manifest)
    t = _Tally()
    clips = found.clips
    if label_map is not None:
        clips, t.dropped = apply_label_map(clips, load_label_map(label_map, params.classes),
                                           label_map)  # fmt: skip
        if not clips:
            raise InputError(label_map, f"drops every one of the {len(found.clips)} clips")
    found.clips = clips = assign_ids(clips)
    plan, folds = _given_splits(clips, folds, folds_from)
    finder = ("--subject-regex found" if manifest is None and not opts.name_pattern and
              opts.layout == "labels" else "found")  # fmt: skip
    _check_split_plan(clips, params, folds, plan, where, finder)
    classes = order_classes({c.label for c in clips}, params.classes)
    fp = static_params(params.faces, opts)
    journal = Journal(out, fingerprint(clips, f"{opts!r}\n{fp.model_dump_json()}"))
    done = journal.open()
    log.info("import: %d clips from %s (%s), classes %s, %d workers%s", len(clips), where,
             f"cropped mode, margin {opts.crop_padding}" if opts.cropped else "detect mode",
             classes,
             worker_count(fp.workers, len(clips) - done),
             f"; resuming: {done} clips done in {journal.dir}" if done else "")  # fmt: skip
    try:
        for row in journal.rows():
            t.add(row)
        for row in _face_rows(clips, journal, done, fp, opts):
            t.add(row)
    except BaseException:
        journal.close()
        n = sum(t.imported.values()) + sum(t.excluded.values())
        log.warning("import: stopped; the %d clips done are kept in %s: the same command "
                    "resumes from there", n, journal.dir)  # fmt: skip
        raise
    try:
        _check_some_kept(t, where, fp)
        tmp = journal.dir
        write_table(tmp / FACES_CSV, FACES_COLUMNS, journal.rows())
        atomic_write_text(tmp / CLASSES_TXT, "".join(f"{c}\n" for c in classes))
        if folds or plan is not None:
            from emoflow.datasets.splits import make_splits

            split = params.split.model_copy(update={"folds": folds})
            make_splits(tmp / FACES_CSV, tmp / SPLITS_DIR, split, plan)
        summary = _summary(found, t, out, done)
        atomic_write_text(tmp / SUMMARY_JSON, json.dumps(summary, indent=1))
    except BaseException:
        journal.discard()
        raise
    rows = list(journal.rows()) if keep_rows else []
    journal.finish()
    return rows
