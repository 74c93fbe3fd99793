"""params files that used to crash or mean something silently: one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from stage_cli import assert_one_line_error, emoflow

from emoflow.config import Params, load_params
from emoflow.errors import InputError

# Each seed goes to numpy (default_rng refuses negatives), scikit-learn or torch.
SEEDS = {"sample": "sample", "faces": "faces", "split": "split", "train": "train"}


@pytest.mark.parametrize(("section", "command"), list(SEEDS.items()))
@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_out_of_range_is_a_params_error(
    section: str, command: str, seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({section: {"seed": seed}}))
    code, err = emoflow(monkeypatch, capsys, command, "-p", str(path), "--out",
                        str(tmp_path / "out"))  # fmt: skip
    assert_one_line_error(code, err, f"{path}:key {section}.seed", "than or equal to")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("classes", "words"),
    [
        ([], "needs at least 2 classes"),
        (["anger"], "needs at least 2 classes"),
        (["anger", "fear", "anger"], "listed more than once: ['anger']"),
        (["anger", " "], "must not be blank"),
    ],
)
def test_classes_must_be_two_or_more_distinct_names(classes: list[str], words: str,
                                                     tmp_path: Path) -> None:  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"classes": classes}))
    with pytest.raises(InputError, match="key classes") as exc:
        load_params(path)
    assert words in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_an_empty_params_file_is_refused_with_what_to_write(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(text)
    code, err = emoflow(monkeypatch, capsys, "split", "-p", str(path))
    assert_one_line_error(code, err, f"{path}: params file is empty", "write `{}`")


def test_an_explicit_empty_mapping_means_every_default(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("{}\n")
    params = load_params(path)
    assert params.model_dump() == Params().model_dump()
    assert params.source_file == path and params.split.source_file == path


def test_a_params_file_that_is_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_bytes("split:\n  seed: 1  # caf\u00e9\n".encode("latin-1"))
    code, err = emoflow(monkeypatch, capsys, "split", "-p", str(path))
    assert_one_line_error(code, err, f"{path}: not UTF-8 text")


def test_a_folder_given_as_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    code, err = emoflow(monkeypatch, capsys, "split", "-p", str(tmp_path))
    assert_one_line_error(code, err, f"{tmp_path}: is a folder")
