"""Reading the stimulus program's log, ``protocol.csv``: participant, trial, expected emotion."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from emoflow.errors import InputError

PROTOCOL_COLUMNS = ("participant", "trial", "emotion")


@dataclass(frozen=True)
class ProtocolTrial:
    participant: str
    trial: int
    emotion: str
    row: int = field(default=0, compare=False)  # its line in protocol.csv (header = 1)

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
                ProtocolTrial(participant, trial, (row["emotion"] or "").strip(), row_no)
            )
    for trials in out.values():
        trials.sort(key=lambda t: t.trial)
    return out


def describe_rows(trials: list[ProtocolTrial], path: str | Path) -> str:
    """``p002 trial 8 at row 23 of protocol.csv``: where a user finds the trials in the file."""
    rows = ", ".join(str(t.row) for t in trials)
    names = ", ".join(str(t.trial) for t in trials)
    many = "s" if len(trials) > 1 else ""
    return (f"{trials[0].participant} trial{many} {names} at row{many} {rows} of {path}"
            if trials else "none")
