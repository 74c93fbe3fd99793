"""``emoflow export`` refuses what it cannot do before exporting anything: a model folder of
another architecture than ``--model``, an opset the model does not export at; and an exporter
failure is one line, without the Torch IR graph the exporter prints on its own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from emoflow.artifact import MODEL_FILE, ONNX_FILE, read_spec, save_state
from emoflow.cli import app
from emoflow.errors import EmoflowError, InputError
from emoflow.inference.graph import load_clip_model
from emoflow.models import build_model
from emoflow.release import export


@pytest.fixture(scope="module")
def deep_emotion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained Deep-Emotion model folder (48 px, gray: a small graph to trace)."""
    folder = tmp_path_factory.mktemp("models") / "deep_emotion"
    folder.mkdir()
    torch.manual_seed(0)
    save_state(folder / MODEL_FILE, {
        "arch": "deep_emotion", "classes": ["a", "b", "c"], "model_config": {},
        "state_dict": build_model("deep_emotion", 3).state_dict(), "epoch": 1, "val": {},
        "image_size": 48, "grayscale": True, "frames_per_clip": None})  # fmt: skip
    return folder


def test_a_folder_of_another_model_is_refused(deep_emotion: Path, tmp_path: Path) -> None:
    args = ["export", "--model", "fan", "--model-dir", str(deep_emotion),
            "--faces", str(tmp_path), "--splits", str(tmp_path)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, InputError), result.output
    assert str(result.exception) == (f"{deep_emotion / MODEL_FILE}: holds a deep_emotion "
                                     "model, not fan: give --model deep_emotion, or the folder "
                                     "of a fan model")  # fmt: skip
    assert not (deep_emotion / ONNX_FILE).exists()


def test_an_opset_the_model_does_not_export_at_is_refused_first(deep_emotion: Path,
                                                                 tmp_path: Path) -> None:
    # Before the test manifest is read (there is none here): the opset is the problem to report.
    with pytest.raises(EmoflowError,
                       match=r"^--opset 13: deep_emotion exports at opset 16 to 20$"):  # fmt: skip
        export.export_model(deep_emotion, tmp_path, tmp_path, opset=13)
    with pytest.raises(EmoflowError, match=r"^--opset 21: fan exports at opset 12 to 20$"):
        export.check_opset("fan", 21)
    export.check_opset("fan", 12)


def test_an_exporter_failure_is_one_line_without_the_graph_dump(
        deep_emotion: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    # Let opset 15 through the range check: the exporter itself then fails (GridSample is in
    # opset 16), as any exporter failure the range does not foresee would.
    monkeypatch.setitem(export.OPSETS, "deep_emotion", range(15, 21))
    spec = read_spec(deep_emotion)
    with pytest.raises(EmoflowError) as caught:
        export.export_onnx(load_clip_model(spec), spec, tmp_path / "m.onnx", 15)
    assert str(caught.value).startswith("ONNX export of deep_emotion at opset 15 failed: "
                                        "Exporting the operator 'aten::grid_sampler'")
    assert "\n" not in str(caught.value)
    out, err = capfd.readouterr()
    assert "Torch IR graph" not in out + err and len(out) < 1000, out[:500]
