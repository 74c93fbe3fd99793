"""The ``emoflow`` command: thin wrappers that parse arguments, load params and call a stage."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from emoflow.config import DEFAULT_PARAMS, load_params
from emoflow.errors import EmoflowError

app = typer.Typer(
    help="emoflow: from raw lab recordings to a served facial-expression model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOption = typer.Option(DEFAULT_PARAMS, "--params", "-p", help="The params.yaml to read.")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@app.command()
def sample(
    params: Path = ParamsOption,
    out: Path = typer.Option(Path("data"), help="Data root: writes raw/, marks/, sample_truth/."),
) -> None:
    """Generate lab-like session recordings, their protocol and ground-truth marks."""
    from emoflow.sample.generate import generate_sample

    generate_sample(load_params(params).sample, out)


@app.command("contact-sheet")
def contact_sheet(
    participant: str = typer.Option("p001", help="Participant id, e.g. p001."),
    data: Path = typer.Option(Path("data"), help="Data root written by `emoflow sample`."),
    out: Path = typer.Option(Path("docs/img/sample_contact_sheet.png"), help="PNG to write."),
) -> None:
    """A PNG of one participant's expressions at their peaks, read from the sample videos."""
    from emoflow.sample.contact_sheet import write_contact_sheet

    write_contact_sheet(data, participant, out)


@app.command()
def mark(
    trials: Path = typer.Argument(..., help="A folder of trial clips (*.mp4) or a trials.csv."),
    marks_dir: Path = typer.Option(Path("data/marks"), "--marks-dir", help="Where marks go."),
    redo: bool = typer.Option(False, "--all", help="Also open clips that already have marks."),
    jump: int = typer.Option(10, min=1, help="Frames per F/B (and Up/Down) jump."),
) -> None:
    """The labelling GUI: mark start, end, peak and quality flags per clip (docs/labelling.md)."""
    from emoflow.labelling.app import mark_trials

    mark_trials(trials, marks_dir, redo=redo, jump=jump)


def run() -> None:
    """Entry point: a user error is one line on stderr and exit code 2, not a traceback."""
    try:
        app()
    except EmoflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
