"""Every command's ``--help`` as a user sees it: bracketed text survives, flags look like flags."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from emoflow.cli import app

COMMAND = typer.main.get_command(app)
NAMES = sorted(COMMAND.commands)  # typer.core.TyperGroup (typer vendors its own click)


def _flat(text: str) -> str:
    """Whitespace folded: help is wrapped to the terminal's width."""
    return " ".join(text.split())


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return result.output


def test_there_are_commands_to_check() -> None:
    assert {"segment", "trim", "import", "train", "evaluate"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_help_keeps_every_bracket_and_shows_flags_as_flags(name: str) -> None:
    out = _help(name)
    flat = _flat(out)
    cmd = COMMAND.commands[name]
    texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
    bracketed = [b for t in texts for b in re.findall(r"\[[^\]]*\]", _flat(t))]
    for b in bracketed:
        assert b in flat, f"{name} --help lost {b!r}:\n{out}"
    assert "<bool>" not in out
    for p in cmd.params:
        if getattr(p, "is_flag", False):
            # A flag takes no value: its name is never followed by a metavar.
            for opt in p.opts:
                assert not re.search(rf"{re.escape(opt)} <\w+>", out), out


def test_the_brackets_the_issue_names_are_shown() -> None:
    assert "[start, end]" in _flat(_help("trim"))
    assert "[default: models/<model>]" in _flat(_help("train"))
    assert "[default: train.processes]" in _flat(_help("train"))
    ev = _flat(_help("evaluate"))
    for text in ("[default: models/<model>]", "[default: metrics/<model>.json]",
                 "[default: plots/<model>]"):  # fmt: skip
        assert text in ev
    assert "--cropped " in _help("import") and "--cropped <bool>" not in _help("import")


def test_top_level_help_lists_every_command() -> None:
    out = _help()
    for name in NAMES:
        assert name in out
