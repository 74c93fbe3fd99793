"""Reading the stimulus program's log, ``protocol.csv``: participant, trial, expected emotion."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from emoflow.errors import InputError

PROTOCOL_COLUMNS = ("participant", "trial", "emotion")


@dataclass(frozen=True)
class ProtocolTrial:
    participant: str
    trial: int
    emotion: str

    @property
    def trial_id(self) -> str:
        return f"{self.participant}_{self.trial:03d}"


def read_protocol(path: str | Path) -> dict[str, list[ProtocolTrial]]:
    """Trials per participant, in trial order. Emotion names are checked later, by the gate."""
    path = Path(path)
    try:
        f = path.open(newline="", encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(path, "protocol file not found") from exc
    with f:
        reader = csv.DictReader(f)
        missing = [c for c in PROTOCOL_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(path, f"missing columns {missing}; expected {list(PROTOCOL_COLUMNS)}",
                             "row 1")  # fmt: skip
        out: dict[str, list[ProtocolTrial]] = {}
        seen: set[tuple[str, int]] = set()
        for row_no, row in enumerate(reader, start=2):
            where = f"row {row_no}"
            participant = (row["participant"] or "").strip()
            if not participant or "_" in participant:
                raise InputError(path, f"participant must be a non-empty id without '_', got "
                                       f"{participant!r}", where)  # fmt: skip
            try:
                trial = int(row["trial"])
            except (TypeError, ValueError):
                raise InputError(path, f"trial must be an integer, got {row['trial']!r}",
                                 where) from None  # fmt: skip
            if not 0 <= trial <= 999:
                raise InputError(path, f"trial must be in 0..999, got {trial}", where)
            if (participant, trial) in seen:
                raise InputError(path, f"trial {trial} of {participant} listed twice", where)
            seen.add((participant, trial))
            out.setdefault(participant, []).append(
                ProtocolTrial(participant, trial, (row["emotion"] or "").strip())
            )
    for trials in out.values():
        trials.sort(key=lambda t: t.trial)
    return out
