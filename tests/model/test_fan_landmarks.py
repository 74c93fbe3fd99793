"""FAN on MediaPipe's normalised landmarks (``expression: landmarks``): trained on cached
features, recorded in model.pt, and the inference core and the ONNX export computing the same
features from the chips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from fan_training import core_against_evaluation, train_tiny

from emoflow.artifact import load_state

pytest.importorskip("mediapipe")
from emoflow.faces import blendshapes as bs

ROOT = Path(__file__).resolve().parents[2]


def _params(tmp_path: Path) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(workers=0)
    params["train"]["fan"].update(epochs=3, batch_size=4, image_size=32, backbone="resnet18",
                                  pretrained=None, backbone_lr_scale=1.0,
                                  features="blendshapes", expression="landmarks")  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def trained(tiny_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("landmarks")
    return train_tiny(tiny_faces, _params(folder), folder)


@pytest.mark.slow  # MediaPipe on the tiny data's chips and mirrors, training, export: ~30 s
def test_landmark_fan_records_predicts_and_exports(
    trained: tuple[Path, Path], tiny_faces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    from emoflow.release.export import export_model

    folder, cache = trained
    monkeypatch.setenv("EMOFLOW_WEIGHTS_CACHE", str(cache))
    meta = load_state(folder / "model.pt")
    assert meta["model_config"]["expression"] == "landmarks"
    info = meta["backbone"]["expression"]
    assert info["kind"] == "landmarks" and info["dim"] == 1434
    assert info["landmarks"]["eye_corners"] == list(bs.EYE_CORNERS)
    files = list((cache / "features" / bs.expression_fingerprint("landmarks")).glob("*.pt"))
    assert files and torch.load(files[0], weights_only=True).shape[1:] == (2, 1434)
    # evaluation (cached features) = the inference core (the extractor on the chips) = ONNX
    _results, diff = core_against_evaluation(folder, _params(folder), tiny_faces, "test")
    assert diff <= 1e-5
    export_model(folder, tiny_faces / "faces", tiny_faces / "splits")
    exported = json.loads((folder / "export.json").read_text())
    assert exported["inputs"]["expression"]["shape"] == ["clips", "frames", 1434]
    assert exported["parity"]["max_abs_diff"] <= 1e-4


@pytest.mark.slow
def test_a_model_of_another_landmark_normalisation_is_refused(trained: tuple[Path, Path],
                                                              tmp_path: Path) -> None:  # fmt: skip
    import shutil

    from emoflow.artifact import read_spec, save_state
    from emoflow.errors import InputError
    from emoflow.inference.graph import load_clip_model

    folder, _ = trained
    assert load_state(folder / "model.pt")["backbone"]["expression"]["fingerprint"] == (
        bs.expression_fingerprint("landmarks"))
    other = tmp_path / "other"
    shutil.copytree(folder, other, ignore=shutil.ignore_patterns("model.onnx", "export.json"))
    meta = load_state(other / "model.pt")
    meta["backbone"]["expression"]["fingerprint"] = f"{bs.fingerprint()}-landmarks-iod0"
    save_state(other / "model.pt", meta)
    load_clip_model(read_spec(folder))
    with pytest.raises(InputError, match="iod0"):
        load_clip_model(read_spec(other))
