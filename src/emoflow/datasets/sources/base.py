"""What every dataset shape reduces to: clips with a label, a subject and their frames.

A reader (one module per shape) turns a published layout into :class:`SourceClip` rows, the
manifest's row in memory; the importer's face step never knows which shape a clip came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from emoflow.errors import InputError
from emoflow.media.formats import VIDEO_EXTS

IMAGE_EXTS = ("png", "jpg", "jpeg", "bmp", "tiff")
_FRAME_NUMBER = re.compile(r"^(?P<prefix>.*?)[\s._-]*(?P<number>\d+)$")

ClipKind = Literal["video", "folder", "group", "image"]


@dataclass(frozen=True)
class ReadOptions:
    """What a reader needs from the command line (a subset of the importer's options)."""

    subject_regex: str = ""
    static: bool = False
    video_ext: tuple[str, ...] = VIDEO_EXTS
    image_ext: tuple[str, ...] = IMAGE_EXTS


@dataclass(frozen=True, slots=True)  # slots: a dataset of 100,000 clips is held in memory
class SourceClip:
    """One clip of the dataset; ``trial_id`` is set once every clip is known.

    ``start``/``end`` (inclusive) and ``peak`` are frame indices in the source's own numbering
    (the video's frames, or the frame images in natural order); ``end`` None: to the last.
    """

    label: str
    name: str  # how the shape names the clip (a path, posix); the trial id is made from it
    kind: ClipKind
    paths: tuple[Path, ...]  # the video, or the frame images in natural order
    subject: str = ""
    trial_id: str = ""
    start: int = 0
    end: int | None = None
    peak: int | None = None
    peak_last: bool = False  # the shape says the clip ends at its apex (CK+)
    split: str = ""  # the dataset's own train/val/test, where it ships one
    row: str = ""  # where the clip is listed (manifest row), for errors

    @property
    def where(self) -> Path:
        """What an error names: the video, the folder, or the group's first frame."""
        return self.paths[0].parent if self.kind == "folder" else self.paths[0]


@dataclass
class Found:
    """A reader's result: the clips, and what it saw but did not take (with why)."""

    clips: list[SourceClip] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # files of other types
    unmatched: list[Path] = field(default_factory=list)  # media the name pattern did not match
    unlabelled: int = 0  # CK+ sequences without an emotion file


def parse_exts(text: str) -> tuple[str, ...]:
    """``"mp4,.AVI"`` → ``("mp4", "avi")``: the command line's extension lists."""
    return tuple(e.strip().lower().lstrip(".") for e in text.split(",") if e.strip())


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


def ext(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def visible(path: Path) -> bool:
    return not path.name.startswith(".")


def listing(folder: Path) -> list[Path]:
    """A folder's visible entries in natural order (the order frames and clips are taken in)."""
    return sorted(filter(visible, folder.iterdir()), key=lambda q: natural_key(q.name))


def compile_regex(option: str, pattern: str, groups: tuple[str, ...] = ()) -> re.Pattern[str]:
    """A regex from the command line; it must compile and have the named ``groups``."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise InputError(option, f"{pattern!r} is not a valid regex ({exc})") from exc
    missing = [g for g in groups if g not in rx.groupindex]
    if missing:
        raise InputError(option, f"{pattern!r} has no named group "
                         f"{', '.join(f'(?P<{g}>...)' for g in missing)}")  # fmt: skip
    return rx


def no_clips(root: Path, opts: ReadOptions, expected: str) -> InputError:
    return InputError(root, f"no clips found: expected {expected} with videos "
                      f"({', '.join(opts.video_ext)}) or frame images "
                      f"({', '.join(opts.image_ext)})")  # fmt: skip
