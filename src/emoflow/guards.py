"""What every stage checks before it replaces an output, so that a run never destroys data.

A stage replaces its output folder whole (:func:`emoflow.fsio.atomic_dir`), so an output that
is, contains or lies inside one of its inputs would delete that input (``--out`` pointing at
the recordings). And a run that produced nothing must not replace an output that held rows:
a wrong ``--sessions`` should not turn 28 good trial clips into an empty table.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from emoflow.errors import EmoflowError

Row = dict[str, str]


class OutputConflict(EmoflowError):
    """An output path overlaps an input (or another output) of the same stage."""


class EmptyResult(EmoflowError):
    """A run produced no rows where the output it would replace has some."""


def _forms(path: Path) -> set[Path]:
    """The path as written (absolute, normalised) and with every symlink resolved.

    Both count: replacing a folder deletes a symlink inside it (the written form) and the
    folder a symlink points at is the same folder (the resolved form).
    """
    return {Path(os.path.abspath(path)), path.resolve()}


RELATIONS = ("is", "contains", "lies inside")


def _relation(out: Path, other: Path) -> str | None:
    for o in _forms(out):
        for i in _forms(other):
            if o == i:
                return "is"
            if i.is_relative_to(o):
                return "contains"
            if o.is_relative_to(i):
                return "lies inside"
    return None


def check_outputs(inputs: Mapping[str, Path | None], outputs: Mapping[str, Path | None]) -> None:
    """Refuse outputs that are, contain or lie inside an input, or overlap each other.

    ``inputs`` and ``outputs`` map a name the user knows (``sessions``, ``out``) to a path;
    ``None`` (an optional path not given) is skipped. Call it before anything is written.
    """
    outs = [(name, Path(p)) for name, p in outputs.items() if p is not None]
    ins = [(name, Path(p)) for name, p in inputs.items() if p is not None]
    for k, (name, out) in enumerate(outs):
        hits = [(RELATIONS.index(rel), in_name, path, rel) for in_name, path in ins
                if (rel := _relation(out, path)) is not None]  # fmt: skip
        if hits:  # the plainest one: "is" before "contains" before "lies inside"
            _, in_name, path, rel = min(hits, key=lambda h: h[0])
            raise OutputConflict(
                f"output {name} {out} {rel} the input {in_name} {path}: the stage replaces its "
                f"output whole, so it would destroy that input; choose an output outside every "
                f"input"
            )
        for other_name, other in outs[k + 1 :]:
            rel = _relation(out, other)
            if rel is not None:
                raise OutputConflict(f"output {name} {out} {rel} the output {other_name} {other}: "
                                     "outputs must not overlap")  # fmt: skip


def params_inputs(params: object) -> dict[str, Path | None]:
    """The params file a config section was loaded from, as an input (none when built in code)."""
    return {"params": getattr(params, "source_file", None)}


def count_rows(table: Path, usable: Callable[[Row], bool] | None = None) -> int:
    """Data rows of a CSV table (those ``usable`` accepts); 0 when absent or unreadable."""
    try:
        with table.open(newline="", encoding="utf-8") as f:
            return sum(1 for r in csv.DictReader(f) if usable is None or usable(r))
    except (OSError, UnicodeDecodeError, csv.Error):
        return 0


def keep_nonempty(stage: str, table: Path, produced: int, why: str = "",
                  usable: Callable[[Row], bool] | None = None) -> None:  # fmt: skip
    """Refuse to replace ``table`` (rows ``usable`` accepts) with a result of ``produced == 0``.

    Call it inside the stage's ``atomic_dir`` block, before leaving it: the error discards the
    new, empty output and keeps the old one.
    """
    if produced:
        return
    old = count_rows(table, usable)
    if old:
        because = f" ({why})" if why else ""
        raise EmptyResult(
            f"{stage} produced nothing{because}, but {table} holds {old} row"
            f"{'s' if old > 1 else ''} from an earlier run: kept it. Fix the inputs, or delete "
            f"{table.parent} to accept an empty result"
        )
