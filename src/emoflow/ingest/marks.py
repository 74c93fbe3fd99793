"""The marks file: one line of 8 tab-separated integers per trial (see docs/formats.md).

``start end peak non_correlating abnormal_limb low_occlusion heavy_occlusion other``

Frames are 0-based indices into the trial clip, ``start <= peak <= end < frame count``, and
the five flags are 0 or 1. Anything else is rejected with the file, the line and the rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields, make_dataclass
from pathlib import Path

from emoflow.config import FLAG_NAMES
from emoflow.errors import InputError
from emoflow.fsio import atomic_write_text

FIELD_NAMES: tuple[str, ...] = ("start", "end", "peak", *FLAG_NAMES)
MARKS_SUFFIX = ".txt"
# ASCII digits only: str.isdigit() also takes "²" and "٣", which int() then refuses or reads.
# 18 digits at most: any frame index fits, and the gate's float columns never overflow.
_INTEGER = re.compile(r"-?[0-9]{1,18}")
INTEGER_RULE = "an integer (optional minus sign, at most 18 ASCII digits)"


def parse_int(text: str) -> int | None:
    """The integer ``text`` spells (optional minus, ASCII digits, blanks around), else ``None``.

    The one integer rule of marks fields, wherever they are read (marks files, the gate's
    table, valid_trials.csv in ``emoflow trim``).
    """
    token = text.strip()
    return int(token) if _INTEGER.fullmatch(token) else None


@dataclass(frozen=True)
class _Frames:
    """``Marks`` without its flags (their fields come from ``FLAG_NAMES``, below)."""

    start: int
    end: int
    peak: int

    def problems(self, frame_count: int | None = None) -> list[str]:
        """The rules this marks record breaks (empty when valid)."""
        out: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                out.append(f"{f.name} must be an integer, got {value!r}")
        if out:
            return out
        if self.start < 0:
            out.append(f"start must be >= 0, got {self.start}")
        if not self.start <= self.peak <= self.end:
            out.append(
                f"frames must satisfy start <= peak <= end, got start={self.start} "
                f"peak={self.peak} end={self.end}"
            )
        if frame_count is not None and self.end >= frame_count:
            out.append(f"end must be < frame count {frame_count}, got end={self.end}")
        for name in FLAG_NAMES:
            if getattr(self, name) not in (0, 1):
                out.append(f"flag {name} must be 0 or 1, got {getattr(self, name)}")
        return out

    @property
    def flags(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FLAG_NAMES}

    def to_line(self) -> str:
        return "\t".join(str(v) for v in astuple(self))


# Start, end and peak frame of the expressed emotion in a trial clip, plus the quality flags
# (0 or 1 each, default 0): ``Marks(1, 8, 4, heavy_occlusion=1)``.
Marks = make_dataclass("Marks", [(name, int, 0) for name in FLAG_NAMES], bases=(_Frames,),
                       frozen=True)  # fmt: skip
Marks.__module__ = __name__  # pickles by name, like a class written here
Marks.__doc__ = "Start, end and peak frame of the expressed emotion in a trial clip, plus flags."


def parse_marks(text: str, path: str | Path = "<marks>", frame_count: int | None = None) -> Marks:
    """Parse the content of a marks file; raise :class:`InputError` naming the broken rule."""
    lines = text.splitlines()
    content = [(i, line) for i, line in enumerate(lines, start=1) if line.strip()]
    if not content:
        raise InputError(path, "empty marks file: expected one line of 8 tab-separated integers")
    if len(content) > 1:
        raise InputError(
            path, f"expected exactly one line, found {len(content)} non-empty lines",
            where=f"line {content[1][0]}",
        )
    lineno, line = content[0]
    where = f"line {lineno}"
    parts = line.rstrip("\r\n").split("\t")
    if len(parts) != len(FIELD_NAMES):
        raise InputError(
            path,
            f"expected {len(FIELD_NAMES)} tab-separated fields "
            f"({' '.join(FIELD_NAMES)}), found {len(parts)}",
            where=where,
        )
    return marks_from_fields(parts, path, where, frame_count)


def marks_from_fields(texts: Sequence[str], path: str | Path, where: str | None = None,
                      frame_count: int | None = None, prefix: str = "") -> Marks:  # fmt: skip
    """The 8 fields (``FIELD_NAMES`` order) as written, checked against every marks rule.

    Raise :class:`InputError` naming ``path``, ``where`` and the rule (after ``prefix``).
    """
    values: list[int] = []
    for name, raw in zip(FIELD_NAMES, texts, strict=True):
        value = parse_int(raw)
        if value is None:
            raise InputError(path, f"{prefix}field {name} must be {INTEGER_RULE}, got {raw!r}",
                             where)  # fmt: skip
        values.append(value)
    marks = Marks(*values)
    problems = marks.problems(frame_count)
    if problems:
        raise InputError(path, prefix + "; ".join(problems), where=where)
    return marks


def read_marks(path: str | Path, frame_count: int | None = None) -> Marks:
    """Read and check one marks file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text ({exc.reason})") from exc
    return parse_marks(text, path, frame_count)


def write_marks(path: str | Path, marks: Marks, frame_count: int | None = None) -> None:
    """Check ``marks`` and write it atomically (temp file + rename)."""
    problems = marks.problems(frame_count)
    if problems:
        raise InputError(path, "refusing to write invalid marks: " + "; ".join(problems))
    atomic_write_text(path, marks.to_line() + "\n")


def marks_path(marks_dir: str | Path, trial_id: str) -> Path:
    return Path(marks_dir) / f"{trial_id}{MARKS_SUFFIX}"
