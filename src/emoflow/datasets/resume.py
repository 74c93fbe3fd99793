"""A resumable import: finished clips are kept in a work folder beside the output.

``.<out>.partial/`` holds the face files written so far, ``import.plan.json`` (a fingerprint of
the clips and of every option that shapes a face file) and ``import.rows.jsonl``, one faces.csv
row per finished clip, in clip order (a line is appended only after its face file is complete).
A run killed at any point leaves a folder the same command resumes from: the rows it lists are
not redone. A run of other clips or options starts afresh. On success the folder, less the two
files, becomes ``<out>`` in one rename, so the output is still complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from emoflow.datasets.sources.base import SourceClip
from emoflow.fsio import atomic_write_text, replace_dir

log = logging.getLogger(__name__)

PLAN = "import.plan.json"
JOURNAL = "import.rows.jsonl"
_VERSION = 1  # bump when a face file's content changes for the same inputs


def fingerprint(clips: Iterable[SourceClip], settings: str) -> str:
    """What a finished clip's face file depends on: the clip list and the face options."""
    h = hashlib.sha256(f"{_VERSION}\n{settings}\n".encode())
    for c in clips:
        h.update(json.dumps([c.trial_id, c.label, c.subject, c.kind, [str(p) for p in c.paths],
                             c.start, c.end, c.peak, c.peak_last]).encode())  # fmt: skip
    return h.hexdigest()


def work_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


class Journal:
    """The work folder of one import into ``out``."""

    def __init__(self, out: Path, key: str) -> None:
        self.out, self.key, self.dir = out, key, work_dir(out)
        self._fd: int | None = None

    def open(self) -> int:
        """Prepare the folder; return how many clips (from the first) are already done."""
        done = self._resumable()
        if done is None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir.mkdir(parents=True)
            atomic_write_text(self.dir / PLAN, json.dumps({"fingerprint": self.key}))
            done = 0
        self._fd = os.open(self.dir / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return done

    def _resumable(self) -> int | None:
        try:
            plan = json.loads((self.dir / PLAN).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if plan.get("fingerprint") != self.key:
            log.info("import: %s holds another import's clips (other clips or options): "
                     "starting afresh", self.dir)  # fmt: skip
            return None
        path = self.dir / JOURNAL
        data = path.read_bytes() if path.exists() else b""
        whole = data[: data.rfind(b"\n") + 1]  # a kill can cut the last line short
        if len(whole) != len(data):
            with path.open("r+b") as f:
                f.truncate(len(whole))
        return whole.count(b"\n")

    def append(self, row: dict[str, Any]) -> None:
        """Record a finished clip (its face file already written): one write, one line."""
        assert self._fd is not None
        os.write(self._fd, (json.dumps(row) + "\n").encode())

    def rows(self) -> Iterator[dict[str, Any]]:
        with (self.dir / JOURNAL).open(encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def finish(self) -> None:
        """The folder, less the journal, becomes ``out`` (replacing it whole)."""
        self.close()
        (self.dir / JOURNAL).unlink()
        (self.dir / PLAN).unlink()
        replace_dir(self.dir, self.out)

    def discard(self) -> None:
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)
