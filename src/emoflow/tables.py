"""The CSV tables that pass between stages: checked on read, written atomically."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from emoflow.errors import InputError
from emoflow.fsio import atomic_path


def read_table(path: Path, required: Sequence[str], absent: str) -> list[dict[str, str]]:
    """Rows of ``path``; a missing file (``absent`` says what to run) or column is an error."""
    if not path.exists():
        raise InputError(path, absent)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(path, f"missing columns {missing}", "row 1")
        return list(reader)


def write_table(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write ``rows`` (extra keys ignored) under a header of ``columns``, atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
