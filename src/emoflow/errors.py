"""Errors a user can act on: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations

from pathlib import Path


class EmoflowError(Exception):
    """Base of the errors the CLI reports as one line (no traceback)."""


class InputError(EmoflowError):
    """Bad input: names the file, the place in it (row or line) and the rule it breaks."""

    def __init__(self, path: str | Path, rule: str, where: str | None = None) -> None:
        self.path = Path(path)
        self.where = where
        self.rule = rule
        place = f"{self.path}:{where}" if where else str(self.path)
        super().__init__(f"{place}: {rule}")

    def __reduce__(self) -> tuple:
        # Rebuild from the parts, so the error crosses a process boundary (worker → stage).
        return (type(self), (self.path, self.rule, self.where))
