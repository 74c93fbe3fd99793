import subprocess
import sys
from pathlib import Path

import pytest

from emoflow.config import EMOTIONS, load_params
from emoflow.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


def test_repo_params_load_and_hold_the_contract_keys() -> None:
    p = load_params(ROOT / "params.yaml")
    assert p.classes == EMOTIONS
    assert p.sample.participants >= 8
    assert p.sample.trials_per_participant >= 7
    assert isinstance(p.sample.seed, int)


@pytest.mark.parametrize(
    ("yaml_text", "key", "rule"),
    [
        ("sample:\n  participantz: 3\n", "sample.participantz", "unknown key"),
        ("sample:\n  participants: many\n", "sample.participants", "valid integer"),
        ("sample:\n  answer_s: {min: 3, max: 1}\n", "sample.answer_s", "must not exceed"),
        ("sampel: {}\n", "sampel", "unknown key"),
    ],
)
def test_bad_params_name_key_and_file(tmp_path: Path, yaml_text: str, key: str, rule: str) -> None:
    f = tmp_path / "params.yaml"
    f.write_text(yaml_text)
    with pytest.raises(InputError) as err:
        load_params(f)
    msg = str(err.value)
    assert str(f) in msg and f"key {key}" in msg and rule in msg
    assert "\n" not in msg


def test_cli_reports_a_bad_param_in_one_line_and_exits_nonzero(tmp_path: Path) -> None:
    f = tmp_path / "params.yaml"
    f.write_text("sample:\n  seeed: 1\n")
    out = subprocess.run(
        [sys.executable, "-m", "emoflow.cli", "sample", "--params", str(f), "--out",
         str(tmp_path / "data")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: {f}:key sample.seeed: unknown key (typo?)"]
    assert not (tmp_path / "data").exists()


def test_every_command_has_help() -> None:
    from typer.testing import CliRunner

    from emoflow.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    import typer

    commands = list(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert "sample" in commands
    for name in commands:
        r = runner.invoke(app, [name, "--help"])
        assert r.exit_code == 0 and "Usage" in r.output, name
