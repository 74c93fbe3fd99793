"""``emoflow import``: a public labelled dataset (CK+, AFEW, DFEW, FER-style) → processed faces.

The output is exactly what ``emoflow faces`` writes (``<label>/<trial_id>.faces.zip`` +
``faces.csv`` with :data:`~emoflow.faces.stage.FACES_COLUMNS`) plus ``classes.txt``, so
``emoflow split`` and training read an imported dataset like the lab's own.

Input tree: ``<root>/<label>/...``; the label is the first-level folder name (lower-cased).
A clip is a video file, a folder of frame images (natural order), or a group of frame images
in the label folder that share a name prefix (CK+: ``S005_001_00000001.png`` → ``S005_001``).
Subject ids come from a regex over the clip's path inside its label folder, because public
datasets encode them in names and never in one agreed way. See ``docs/importer.md``.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from emoflow.config import FacesParams, Params
from emoflow.errors import InputError
from emoflow.faces.pipeline import process_frames
from emoflow.faces.select import select_frames
from emoflow.faces.stage import FACES_COLUMNS, FACES_CSV, faces_row, warn_short_clips
from emoflow.faces.store import SUFFIX, write_face_clip
from emoflow.fsio import atomic_dir, atomic_write_text
from emoflow.guards import check_outputs, params_inputs
from emoflow.media.video import iter_frames, probe
from emoflow.parallel import parallel_map
from emoflow.tables import write_table

log = logging.getLogger(__name__)

VIDEO_EXTS = ("mp4", "avi", "mov", "mkv")
IMAGE_EXTS = ("png", "jpg", "jpeg", "bmp", "tiff")
CLASSES_TXT = "classes.txt"
SPLITS_DIR = "splits"
# "The last frame" for select_frames, which snaps a peak to the nearest face frame: with a
# detector we do not know in advance which frames will have a face, nor a video's exact length.
LAST_FRAME = 2**40
_FRAME_NUMBER = re.compile(r"^(?P<prefix>.*?)[\s._-]*(?P<number>\d+)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_FEATURE_SIDE = 16  # side of the downscaled frames K-means compares in --cropped mode


@dataclass(frozen=True)
class ImportOptions:
    """How to read one dataset: the command line's choices, in one picklable object."""

    subject_regex: str
    cropped: bool = False
    grayscale: bool = False
    peak: Literal["none", "last"] = "none"
    static: bool = False
    video_ext: tuple[str, ...] = VIDEO_EXTS
    image_ext: tuple[str, ...] = IMAGE_EXTS


@dataclass(frozen=True)
class SourceClip:
    """One clip found under the root; ``subject`` and ``trial_id`` are set once ids are known."""

    label: str
    name: str  # path inside the label folder (posix; a video keeps its extension)
    kind: Literal["video", "folder", "group"]
    paths: tuple[Path, ...]  # the video, or the frame images in natural order
    subject: str = ""
    trial_id: str = ""

    @property
    def where(self) -> Path:
        """What an error names: the video, the folder, or the group's first frame."""
        return self.paths[0].parent if self.kind == "folder" else self.paths[0]


@dataclass
class _Found:
    clips: list[SourceClip] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)


def parse_exts(text: str) -> tuple[str, ...]:
    """``"mp4,.AVI"`` → ``("mp4", "avi")``: the command line's extension lists."""
    return tuple(e.strip().lower().lstrip(".") for e in text.split(",") if e.strip())


def check_peak(text: str) -> Literal["none", "last"]:
    """The ``--peak`` choice: ``last`` for onset→apex sequences (CK+), else ``none``."""
    if text not in ("none", "last"):
        raise InputError("--peak", f"{text!r}: must be none or last")
    return "last" if text == "last" else "none"


def natural_key(text: str) -> list[Any]:
    """Sort key where digit runs compare as numbers: ``frame2`` before ``frame10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def frame_prefix(stem: str) -> str:
    """The clip a frame file belongs to: its stem less the trailing frame number and separator.

    ``S005_001_00000001`` → ``S005_001``. A stem without a trailing number, or made of a
    number only, is a clip by itself (its own stem), so unrelated images never merge.
    """
    m = _FRAME_NUMBER.match(stem)
    return m["prefix"] if m and m["prefix"] else stem


def _ext(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _label_folder_clips(label: str, folder: Path, opts: ImportOptions, found: _Found) -> None:
    """Videos and prefix groups of frames lying directly in a label folder."""
    groups: dict[str, list[Path]] = {}
    for p in sorted(filter(_visible, folder.iterdir()), key=lambda q: natural_key(q.name)):
        if p.is_dir():
            _subfolder_clips(label, folder, p, opts, found)
        elif _ext(p) in opts.video_ext:
            found.clips.append(SourceClip(label, p.name, "video", (p,)))
        elif _ext(p) in opts.image_ext:
            groups.setdefault(p.stem if opts.static else frame_prefix(p.stem), []).append(p)
        else:
            found.ignored.append(p)
    for prefix in sorted(groups, key=natural_key):
        paths = sorted(groups[prefix], key=lambda q: natural_key(q.name))
        found.clips.append(SourceClip(label, prefix, "group", tuple(paths)))


def _subfolder_clips(label: str, label_dir: Path, folder: Path, opts: ImportOptions,
                     found: _Found) -> None:  # fmt: skip
    """A folder below a label folder: its images are one clip; videos and subfolders recurse."""
    images: list[Path] = []
    for p in sorted(filter(_visible, folder.iterdir()), key=lambda q: natural_key(q.name)):
        if p.is_dir():
            _subfolder_clips(label, label_dir, p, opts, found)
        elif _ext(p) in opts.video_ext:
            found.clips.append(SourceClip(label, p.relative_to(label_dir).as_posix(), "video",
                                          (p,)))  # fmt: skip
        elif _ext(p) in opts.image_ext:
            images.append(p)
        else:
            found.ignored.append(p)
    if images:
        name = folder.relative_to(label_dir).as_posix()
        found.clips.append(SourceClip(label, name, "folder", tuple(images)))


def find_clips(root: Path, opts: ImportOptions) -> _Found:
    """Every clip under ``root/<label>/``, in a deterministic (natural) order."""
    if not root.is_dir():
        raise InputError(root, "dataset root is not a folder")
    found = _Found()
    for p in sorted(filter(_visible, root.iterdir()), key=lambda q: natural_key(q.name)):
        if p.is_dir():
            _label_folder_clips(p.name.lower(), p, opts, found)
        else:
            found.ignored.append(p)  # a README or a label file beside the label folders
    if not found.clips:
        raise InputError(root, "no clips found: expected <root>/<label>/ with videos "
                         f"({', '.join(opts.video_ext)}) or frame images "
                         f"({', '.join(opts.image_ext)})")  # fmt: skip
    return found


def compile_subject_regex(pattern: str) -> re.Pattern[str]:
    """The ``--subject-regex``; it must capture the subject (group ``subject`` or group 1)."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise InputError("--subject-regex", f"{pattern!r} is not a valid regex ({exc})") from exc
    if rx.groups < 1:
        raise InputError("--subject-regex", f"{pattern!r} has no capture group for the subject")
    return rx


def subject_of(clip: SourceClip, rx: re.Pattern[str]) -> str:
    """The subject id in the clip's path inside its label folder, or an error naming the file."""
    m = rx.search(clip.name)
    subject = None
    if m is not None:
        subject = m["subject"] if "subject" in rx.groupindex else m[1]
    if not subject:
        raise InputError(clip.where, f"--subject-regex {rx.pattern!r} does not match (or "
                         f"captures nothing in) the clip name {clip.name!r}")  # fmt: skip
    return subject


def sanitize(text: str) -> str:
    """Only ``[A-Za-z0-9_-]``: trial ids become file names and CSV keys."""
    return _UNSAFE.sub("_", text).strip("_") or "clip"


def _base_id(subject: str, name: str) -> str:
    """``<subject>_<name>``, unless the name already starts with the subject (CK+)."""
    s, n = sanitize(subject), sanitize(re.sub(r"\.[^./]+$", "", name))
    return n if n == s or n.startswith((f"{s}_", f"{s}-")) else f"{s}_{n}"


def assign_ids(clips: list[SourceClip], rx: re.Pattern[str]) -> list[SourceClip]:
    """Set each clip's subject and a trial id unique in the dataset (all checked before work)."""
    taken: set[str] = set()
    out = []
    for c in clips:
        subject = subject_of(c, rx)
        base = _base_id(subject, c.name)
        tid, n = base, 1
        while tid in taken:  # the same clip name under two labels, or names that sanitize alike
            tid = f"{base}_{sanitize(c.label)}" if n == 1 else f"{base}_{sanitize(c.label)}{n}"
            n += 1
        if tid != base:
            log.warning("import: trial id %s is taken; %s becomes %s", base, c.where, tid)
        taken.add(tid)
        out.append(replace(c, subject=subject, trial_id=tid))
    return out


def order_classes(labels: set[str], known: tuple[str, ...]) -> list[str]:
    """params.classes order when every label is one of them (only those present), else sorted."""
    if labels <= set(known):
        return [c for c in known if c in labels]
    return sorted(labels)


def read_image(path: Path) -> np.ndarray:
    """One frame as 8-bit RGB, or 2-D gray when the file has one channel."""
    img = cv2.imread(str(path), cv2.IMREAD_ANYCOLOR)
    if img is None:
        raise InputError(path, "cannot read as an image")
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class _Frames:
    """A clip's frames as they come (gray or RGB), remembering whether any was in colour."""

    def __init__(self, clip: SourceClip) -> None:
        self.clip = clip
        self.all_gray = True

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.clip.kind == "video":
            self.all_gray = False
            yield from iter_frames(self.clip.paths[0], rgb=True)
            return
        for p in self.clip.paths:
            img = read_image(p)
            self.all_gray &= img.ndim == 2
            yield img

    def rgb(self) -> Iterator[np.ndarray]:
        """For the detector, which wants three channels."""
        for f in self:
            yield cv2.cvtColor(f, cv2.COLOR_GRAY2RGB) if f.ndim == 2 else f


def _to_gray(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[:2] == (size, size):
        return img
    shrink = max(img.shape[:2]) > size
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if shrink else
                      cv2.INTER_CUBIC)  # fmt: skip


def pixel_features(frames: list[np.ndarray]) -> np.ndarray:
    """Downscaled, contrast-normalised gray pixels: K-means's view of pre-cropped faces.

    There are no landmarks without a detector; small gray thumbnails still separate
    expressions (mouth and brows move) while ignoring noise and JPEG artefacts.
    """
    rows = []
    for f in frames:
        x = cv2.resize(_to_gray(f), (_FEATURE_SIDE, _FEATURE_SIDE),
                       interpolation=cv2.INTER_AREA).astype(np.float32).ravel()  # fmt: skip
        rows.append((x - x.mean()) / (x.std() + 1e-6))
    return np.stack(rows)


@dataclass
class _Result:
    """What either mode found in a clip; becomes a faces.csv row and a face file."""

    decoded: int
    with_face: int
    selected: list[int]
    faces: list[np.ndarray]
    sources: list[str]
    counts: Counter[str]
    gray_source: bool
    landmarks: list[Any] | None = None


def _detected(clip: SourceClip, params: FacesParams, peak: int | None) -> _Result:
    """The ``emoflow faces`` pipeline over the clip's frames."""
    frames = _Frames(clip)
    r = process_frames(frames.rgb(), params, peak)
    return _Result(r.frames_decoded, len(r.points), r.selected, r.chips,
                   [r.sources[i] for i in r.selected], r.counts, frames.all_gray,
                   [np.round(r.points[i], 2).tolist() for i in r.selected])  # fmt: skip


def _cropped(clip: SourceClip, params: FacesParams, peak: int | None) -> _Result:
    """Frames taken as faces; K-means on pixels when there are more than ``faces.frames``."""
    frames = _Frames(clip)
    imgs = list(frames)
    ids = list(range(len(imgs)))
    if peak is not None:
        peak = min(peak, len(imgs) - 1)
    selected = (select_frames(pixel_features(imgs), ids, params.frames, peak, params.seed)
                if imgs else [])  # fmt: skip
    faces = [_resize(imgs[i], params.size) for i in selected]
    return _Result(len(imgs), len(imgs), selected, faces, ["cropped"] * len(selected),
                   Counter(), frames.all_gray)  # fmt: skip


def import_clip(job: tuple[SourceClip, Path, FacesParams, ImportOptions]) -> dict[str, Any]:
    """Process one clip, write its face file under ``out_dir``; return its faces.csv row."""
    clip, out_dir, params, opts = job
    peak = LAST_FRAME if opts.peak == "last" else None
    r = (_cropped if opts.cropped else _detected)(clip, params, peak)
    row, peak_pos = faces_row(clip.trial_id, clip.subject, clip.label, r.decoded, r.with_face,
                              r.counts, r.selected, peak, params.min_face_frames)  # fmt: skip
    if row["excluded"]:
        return row
    gray = opts.grayscale or r.gray_source
    faces = [_to_gray(f) for f in r.faces] if gray else r.faces
    rel = Path(clip.label) / f"{clip.trial_id}{SUFFIX}"
    meta = {
        "trial_id": clip.trial_id, "participant": clip.subject, "label": clip.label,
        "source": str(clip.where), "frames": r.selected, "peak_position": peak_pos,
        "detectors": r.sources, "size": params.size, "padding": params.padding,
        "landmarks": r.landmarks, "imported": True, "cropped": opts.cropped, "grayscale": gray,
    }  # fmt: skip
    if opts.cropped:
        meta["padding"] = None  # the dataset's own crop
    (out_dir / clip.label).mkdir(parents=True, exist_ok=True)
    write_face_clip(out_dir / rel, faces, meta, params.jpeg_quality)
    row["file"] = rel.as_posix()
    return row


def _run(jobs: list[tuple[SourceClip, Path, FacesParams, ImportOptions]], workers: int
         ) -> list[dict[str, Any]]:  # fmt: skip
    return parallel_map(import_clip, jobs, workers, "import", "clip")


def _check_folds(folds: int, root: Path) -> None:
    if folds == 1 or folds < 0:
        raise InputError(root, f"--folds {folds}: must be 0 (none) or at least 2")


def _check_split_plan(clips: list[SourceClip], params: Params, folds: int, root: Path) -> None:
    """With ``--folds``, the splits the found subjects allow, checked before any face work.

    Clips excluded later can still spoil them; too few subjects should not cost an hour first.
    """
    if not folds:
        return
    from emoflow.datasets.splits import plan_splits

    rows = [{"trial_id": c.trial_id, "participant": c.subject, "label": c.label} for c in clips]
    try:
        plan_splits(rows, params.split.model_copy(update={"folds": folds}))
    except InputError as exc:
        subjects = sorted({c.subject for c in clips}, key=natural_key)
        shown = ", ".join(subjects[:10]) + (", ..." if len(subjects) > 10 else "")
        raise InputError(root, f"--folds {folds}: {exc.rule} (--subject-regex found "
                         f"{len(subjects)} subjects: {shown}); nothing imported") from None


def static_params(fp: FacesParams, opts: ImportOptions) -> FacesParams:
    """``--static``: a clip is one image, so one frame with a face is all a clip can have."""
    if opts.static and fp.min_face_frames > 1:
        log.info("import --static: each clip is one image: faces.min_face_frames %d -> 1",
                 fp.min_face_frames)  # fmt: skip
        return fp.model_copy(update={"min_face_frames": 1})
    return fp


def _check_some_kept(rows: list[dict[str, Any]], root: Path, fp: FacesParams) -> None:
    """A run that excludes every clip imports nothing: say why and what to change."""
    if not rows or any(not r["excluded"] for r in rows):
        return
    longest = max(r["frames_decoded"] for r in rows)
    if longest < fp.min_face_frames:
        hint = (f"no clip has more than {longest} frames, fewer than faces.min_face_frames "
                f"({fp.min_face_frames}): set faces.min_face_frames: {max(longest, 1)} in the "
                "params file (-p)")  # fmt: skip
    else:
        hint = ("no clip shows a face in enough frames: if the frames are already cropped "
                "faces, add --cropped; else lower faces.min_face_frames or check the images")
    raise InputError(root, f"all {len(rows)} clips excluded, nothing imported (e.g. "
                     f"{rows[0]['trial_id']}: {rows[0]['excluded']}): {hint}")  # fmt: skip


def _warn_short_videos(clips: list[SourceClip], rows: list[dict[str, Any]]) -> None:
    """Videos that decoded to fewer frames than their container declares (beyond rounding)."""
    checks = []
    for c, r in zip(clips, rows, strict=True):
        if c.kind == "video":
            declared = probe(c.paths[0]).frames
            checks.append((c.paths[0], r["frames_decoded"],
                           declared if declared > r["frames_decoded"] + 1 else None, None))
    warn_short_clips("import", checks, "its container")


def _summary(found: _Found, rows: list[dict[str, Any]], out: Path) -> None:
    per_label = Counter(c.label for c in found.clips)
    excluded = [r for r in rows if r["excluded"]]
    kept = [r for r in rows if not r["excluded"]]
    why = "".join(f"; {r['trial_id']}: {r['excluded']}" for r in excluded)
    log.info(
        "import: %d clips found (%s), %d files ignored; imported %d clips of %d subjects, "
        "excluded %d%s; wrote %s", len(found.clips),
        ", ".join(f"{k} {v}" for k, v in sorted(per_label.items())), len(found.ignored),
        len(kept), len({r["participant"] for r in kept}), len(excluded), why, out,
    )  # fmt: skip


def import_dataset(root: Path, out: Path, params: Params, opts: ImportOptions,
                   folds: int = 0) -> list[dict[str, Any]]:  # fmt: skip
    """Import the dataset under ``root`` into ``out`` (replaced whole, atomically).

    Every clip is found and given its subject before any face work, so a name the regex does
    not match fails in seconds, not after an hour of detection. With ``folds`` ≥ 2 the split
    stage writes ``out/splits/`` (manifests + k subject-independent folds) in the same atomic
    step: the import is complete with its splits or absent.
    """
    check_outputs({"root": root, **params_inputs(params)}, {"out": out})
    _check_folds(folds, root)
    rx = compile_subject_regex(opts.subject_regex)
    found = find_clips(Path(root), opts)
    clips = assign_ids(found.clips, rx)
    found.clips = clips
    _check_split_plan(clips, params, folds, root)
    classes = order_classes({c.label for c in clips}, params.classes)
    fp = static_params(params.faces, opts)
    workers = min(fp.workers or os.cpu_count() or 1, len(clips))
    log.info("import: %d clips under %s (%s mode), classes %s, %d workers", len(clips), root,
             "cropped" if opts.cropped else "detect", classes, workers)  # fmt: skip
    with atomic_dir(out) as tmp:
        rows = _run([(c, tmp, fp, opts) for c in clips], workers)
        _warn_short_videos(clips, rows)
        _check_some_kept(rows, root, fp)
        write_table(tmp / FACES_CSV, FACES_COLUMNS, rows)
        atomic_write_text(tmp / CLASSES_TXT, "".join(f"{c}\n" for c in classes))
        if folds:
            from emoflow.datasets.splits import make_splits

            split = params.split.model_copy(update={"folds": folds})
            make_splits(tmp / FACES_CSV, tmp / SPLITS_DIR, split)
    _summary(found, rows, out)
    return rows
