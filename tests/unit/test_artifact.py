"""The model folder's one owner: model.pt's versioned metadata, written by training and read by
everyone; files of the format main wrote before it was versioned still load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emoflow.artifact import (
    FORMAT,
    MODEL_FILE,
    ModelMeta,
    load_model,
    load_state,
    read_model_file,
    read_spec,
    save_model_file,
    save_state,
)
from emoflow.config import FacesParams
from emoflow.errors import InputError
from emoflow.inference.graph import example_inputs, load_clip_model
from emoflow.models import build_model

CLASSES = ["anger", "happiness", "surprise"]


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("deep_emotion", len(CLASSES)).eval()


def _main_file(path: Path, net: torch.nn.Module) -> None:
    """model.pt exactly as main's trainer (``_save_model``) and ``emoflow train``'s MLflow step
    wrote it before the format was recorded: a plain dict, no ``format`` key."""
    save_state(path, {
        "preprocessing": FacesParams().model_dump(exclude={"workers", "track_points"}),
        "arch": "deep_emotion", "classes": CLASSES, "model_config": {},
        "state_dict": net.state_dict(), "epoch": 4,
        "val": {"war": 0.5, "uar": 0.4, "macro_f1": 0.3, "loss": 1.2},
        "image_size": 48, "grayscale": True, "frames_per_clip": None, "backbone": None,
        "mlflow_run_id": "0123abcd",
    })  # fmt: skip


def test_a_model_file_written_by_main_still_loads(tmp_path: Path) -> None:
    net = _net()
    _main_file(tmp_path / MODEL_FILE, net)
    spec = read_spec(tmp_path)
    assert spec.meta.format == 1 and spec.arch == "deep_emotion" and spec.classes == CLASSES
    assert (spec.image_size, spec.grayscale, spec.channels) == (48, True, 1)
    assert spec.meta.epoch == 4 and spec.meta.val == {"war": 0.5, "uar": 0.4, "macro_f1": 0.3,
                                                      "loss": 1.2}  # fmt: skip
    assert spec.meta.mlflow_run_id == "0123abcd"
    # Main's faces stage tracked with the chips' 68 points: a file without the key still does.
    assert spec.preprocessing == FacesParams(track_points=68)
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(load_model(spec.meta, spec.state_dict)(x), net(x))
        probs, weights = load_clip_model(spec)(*example_inputs(spec))
    assert probs.shape == (2, len(CLASSES)) and weights.shape == (2, 4)


def test_what_training_writes_is_plain_data_of_the_current_format(tmp_path: Path) -> None:
    net = _net()
    meta = ModelMeta(arch="deep_emotion", classes=CLASSES, config={}, image_size=48,
                     grayscale=True, epoch=2, val={"war": 1.0})  # fmt: skip
    save_model_file(tmp_path / MODEL_FILE, meta, net.state_dict())
    raw = torch.load(tmp_path / MODEL_FILE, weights_only=True)  # nothing but plain values
    assert raw["format"] == FORMAT and raw["model_config"] == {} and "config" not in raw
    again, weights = read_model_file(tmp_path / MODEL_FILE)
    assert again == meta
    assert all(torch.equal(weights[k], v) for k, v in net.state_dict().items())


def test_a_newer_format_is_refused_naming_both(tmp_path: Path) -> None:
    net = _net()
    _main_file(tmp_path / MODEL_FILE, net)
    state = load_state(tmp_path / MODEL_FILE)
    save_state(tmp_path / MODEL_FILE, {**state, "format": FORMAT + 1})
    with pytest.raises(InputError, match=f"model file format {FORMAT + 1}: this emoflow reads "
                                         f"up to {FORMAT}"):  # fmt: skip
        read_spec(tmp_path)


@pytest.mark.parametrize(("change", "rule"), [
    ({"arch": None}, r"not an emoflow model file \(no 'arch'\)"),
    ({"state_dict": None}, r"not an emoflow model file \(no 'state_dict'\)"),
    ({"image_size": "large"}, r"not an emoflow model file \(image_size: "),
    ({"colour": True}, r"not an emoflow model file \(colour: "),
])  # fmt: skip
def test_what_is_not_a_model_file_is_one_line_naming_the_file(
        tmp_path: Path, change: dict, rule: str) -> None:  # fmt: skip
    _main_file(tmp_path / MODEL_FILE, _net())
    state = load_state(tmp_path / MODEL_FILE)
    state = {k: v for k, v in {**state, **change}.items() if v is not None}
    save_state(tmp_path / MODEL_FILE, state)
    with pytest.raises(InputError, match=rule) as err:
        read_spec(tmp_path)
    assert str(err.value).startswith(str(tmp_path / MODEL_FILE))
