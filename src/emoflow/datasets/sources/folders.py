"""One folder per label: ``<root>/<label>/<clips>``, subjects by ``--subject-regex``.

A clip is a video file, a folder of frame images (natural order), or a group of frame images
in the label folder that share a name prefix (CK+: ``S005_001_00000001.png`` → ``S005_001``).
Subject ids come from a regex over the clip's path inside its label folder, because public
datasets encode them in names and never in one agreed way.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from emoflow.datasets.sources.base import (
    Found,
    ReadOptions,
    SourceClip,
    compile_regex,
    ext,
    frame_prefix,
    listing,
    natural_key,
    no_clips,
)
from emoflow.errors import InputError


def _label_folder_clips(label: str, folder: Path, opts: ReadOptions, found: Found) -> None:
    """Videos and prefix groups of frames lying directly in a label folder."""
    groups: dict[str, list[Path]] = {}
    for p in listing(folder):
        if p.is_dir():
            _subfolder_clips(label, folder, p, opts, found)
        elif ext(p) in opts.video_ext:
            found.clips.append(SourceClip(label, p.name, "video", (p,)))
        elif ext(p) in opts.image_ext:
            groups.setdefault(p.stem if opts.static else frame_prefix(p.stem), []).append(p)
        else:
            found.ignored.append(p)
    for prefix in sorted(groups, key=natural_key):
        paths = sorted(groups[prefix], key=lambda q: natural_key(q.name))
        kind = "image" if len(paths) == 1 and (opts.static or prefix == paths[0].stem) else "group"
        found.clips.append(SourceClip(label, prefix, kind, tuple(paths)))


def _subfolder_clips(label: str, label_dir: Path, folder: Path, opts: ReadOptions,
                     found: Found) -> None:  # fmt: skip
    """A folder below a label folder: its images are one clip; videos and subfolders recurse."""
    images: list[Path] = []
    for p in listing(folder):
        if p.is_dir():
            _subfolder_clips(label, label_dir, p, opts, found)
        elif ext(p) in opts.video_ext:
            found.clips.append(SourceClip(label, p.relative_to(label_dir).as_posix(), "video",
                                          (p,)))  # fmt: skip
        elif ext(p) in opts.image_ext:
            images.append(p)
        else:
            found.ignored.append(p)
    if images:
        name = folder.relative_to(label_dir).as_posix()
        found.clips.append(SourceClip(label, name, "folder", tuple(images)))


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


def compile_subject_regex(pattern: str) -> re.Pattern[str]:
    """The ``--subject-regex``; it must capture the subject (group ``subject`` or group 1)."""
    if not pattern:
        raise InputError("--subject-regex", "required for a <root>/<label>/ tree (or give "
                         "--manifest, --name-pattern or --layout ckplus)")  # fmt: skip
    rx = compile_regex("--subject-regex", pattern)
    if rx.groups < 1:
        raise InputError("--subject-regex", f"{pattern!r} has no capture group for the subject")
    return rx


def read_label_folders(root: Path, opts: ReadOptions) -> Found:
    """Every clip under ``root/<label>/``, in a deterministic (natural) order, with subjects."""
    rx = compile_subject_regex(opts.subject_regex)
    if not root.is_dir():
        raise InputError(root, "dataset root is not a folder")
    found = Found()
    for p in listing(root):
        if p.is_dir():
            _label_folder_clips(p.name.lower(), p, opts, found)
        else:
            found.ignored.append(p)  # a README or a label file beside the label folders
    if not found.clips:
        raise no_clips(root, opts, "<root>/<label>/")
    found.clips = [replace(c, subject=subject_of(c, rx)) for c in found.clips]
    return found
