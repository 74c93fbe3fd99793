"""FAN over expression features: MediaPipe's blendshapes alone, or fused with dlib's frozen
features; the same extractor in training (cached) and in the inference path (Predictor, ONNX)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fan_training import core_against_evaluation, train_tiny

from emoflow.artifact import load_model_file, load_state, read_spec, save_state
from emoflow.config import load_params
from emoflow.datasets.clips import read_manifest
from emoflow.errors import InputError
from emoflow.models import build_fan
from emoflow.training.tasks import FanTask

ROOT = Path(__file__).resolve().parents[2]


def _params(tmp_path: Path, **fan: object) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(workers=0)
    params["train"]["fan"].update(epochs=3, batch_size=4, image_size=32, backbone="resnet18",
                                  pretrained=None, backbone_lr_scale=1.0,
                                  features="blendshapes", expression="blendshapes")  # fmt: skip
    params["train"]["fan"].update(fan)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_fused_frames_with_expression_give_what_features_give() -> None:
    torch.manual_seed(0)
    fan = build_fan(3, backbone="dlib_resnet29", features="fused").eval()
    assert fan.feature_dim == 256 + 52 and fan.classifier.in_features == 2 * 308
    x = torch.randn(2, 3, 3, 150, 150)
    e = torch.rand(2, 3, 52)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    with torch.no_grad():
        feats = torch.cat([fan.trunk(x.flatten(0, 1)).reshape(2, 3, -1), e], -1)
        feats[0, 2] = 7.0  # padding: whatever it holds, it must not count
        a = fan(x, mask, return_weights=True, expression=e)
        b = fan(feats, mask, return_weights=True)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert torch.allclose(a.frame_weights, b.frame_weights, atol=1e-6)
    with pytest.raises(ValueError, match="needs expression"):
        fan(x, mask)


def test_blendshapes_fan_has_no_trunk_and_takes_features() -> None:
    fan = build_fan(3, features="blendshapes").eval()
    assert fan.trunk is None and fan.feature_dim == 52
    assert sum(p.numel() for p in fan.parameters()) < 1_000  # 577: heads only
    out = fan(torch.rand(2, 4, 52), torch.ones(2, 4, dtype=torch.bool))
    assert out.shape == (2, 3)
    with pytest.raises(ValueError, match="FAN expects frames"):
        fan(torch.rand(2, 4, 256))
    with pytest.raises(ValueError, match="no trunk"):
        fan(torch.rand(1, 2, 3, 32, 32))


def test_fused_needs_a_frozen_backbone(tmp_path: Path) -> None:
    path = _params(tmp_path, features="fused", backbone="dlib_resnet29", image_size=150)
    with pytest.raises(InputError, match="backbone_lr_scale to 0") as info:
        load_params(path)
    assert str(path) in str(info.value)


pytest.importorskip("mediapipe")


@pytest.fixture(scope="module")
def trained(tiny_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A blendshapes FAN trained on the tiny data (64-px chips): (model folder, feature cache)."""
    folder = tmp_path_factory.mktemp("blendshapes")
    return train_tiny(tiny_faces, _params(folder), folder)


def test_model_file_records_the_extractor(trained: tuple[Path, Path], tiny_faces: Path) -> None:
    from emoflow.faces import blendshapes as bs

    folder, cache = trained
    meta = load_state(folder / "model.pt")
    assert meta["model_config"]["features"] == "blendshapes"
    assert not any(k.startswith("trunk.") for k in meta["state_dict"])
    info = meta["backbone"]
    assert info["features"] == "blendshapes" and info["name"] is None
    assert info["expression"]["fingerprint"] == bs.fingerprint()
    assert info["expression"]["sha256"] == bs.task_sha256() and info["expression"]["dim"] == 52
    # one cached file per face file read in training, under the extractor's own key
    refs = {r.path for split in ("train", "val") for r in read_manifest(
        tiny_faces / "splits" / f"{split}.csv", tiny_faces / "faces", meta["classes"])}  # fmt: skip
    files = list((cache / "features" / bs.fingerprint()).glob("*.pt"))
    assert len(files) == len(refs)
    first = torch.load(files[0], weights_only=True)
    assert first.shape[1:] == (2, 52) and first.dtype == torch.float32
    assert float(first.abs().sum()) > 0  # faces were found in the 64-px chips (upscaled)


def test_predictor_reproduces_training_features(
    trained: tuple[Path, Path], tiny_faces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inference core (chips → the extractor → the model) gives evaluate's numbers."""

    folder, cache = trained
    monkeypatch.setenv("EMOFLOW_WEIGHTS_CACHE", str(cache))
    results, diff = core_against_evaluation(folder, _params(folder), tiny_faces, "test")
    assert diff <= 1e-5
    assert all(abs(sum(f.weight for f in r.frames) - 1) < 1e-5 for r in results)


def test_blendshapes_fan_exports_with_an_expression_input(
    trained: tuple[Path, Path], tiny_faces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emoflow.inference.predictor import Predictor
    from emoflow.release.export import export_model

    folder, cache = trained
    monkeypatch.setenv("EMOFLOW_WEIGHTS_CACHE", str(cache))
    export_model(folder, tiny_faces / "faces", tiny_faces / "splits")
    info = json.loads((folder / "export.json").read_text())
    assert info["frame_features"] == "blendshapes"
    assert info["inputs"]["expression"]["shape"] == ["clips", "frames", 52]
    assert info["parity"]["max_abs_diff"] <= 1e-4
    assert info["parity"]["argmax_agree"] == info["parity"]["clips"] > 0
    refs = read_manifest(tiny_faces / "splits" / "test.csv", tiny_faces / "faces",
                         json.loads((folder / "export.json").read_text())["classes"])  # fmt: skip
    onnx = Predictor.from_dir(folder, "onnx").predict_face_files([r.path for r in refs])
    eager = Predictor.from_dir(folder, "torch").predict_face_files([r.path for r in refs])
    assert [r.label for r in onnx] == [r.label for r in eager]


def test_tensorrt_conversion_refuses_expression_models(trained: tuple[Path, Path],
                                                       tiny_faces: Path) -> None:  # fmt: skip
    from emoflow.errors import EmoflowError
    from emoflow.release.convert import convert_model, engine_refusal

    folder, _ = trained
    with pytest.raises(EmoflowError, match="expression input"):
        convert_model(folder, tiny_faces / "faces", tiny_faces / "splits")
    # the retrain flow asks the same question and skips conversion (ONNX serves the model)
    assert "expression input" in (engine_refusal(read_spec(folder)) or "")


def test_test_time_flips_agree_between_evaluation_prediction_and_onnx(
    trained: tuple[Path, Path], tiny_faces: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    """``tta_flip``: evaluation (cached mirror scores), the Predictor (the extractor on mirrored
    chips) and the exported graph average the same two passes."""
    import shutil

    from emoflow.inference.predictor import Predictor
    from emoflow.release.export import export_model

    folder, cache = trained
    monkeypatch.setenv("EMOFLOW_WEIGHTS_CACHE", str(cache))
    flipped = tmp_path / "flipped"
    shutil.copytree(folder, flipped, ignore=shutil.ignore_patterns("model.onnx", "export.json"))
    meta = load_state(flipped / "model.pt")
    save_state(flipped / "model.pt", {**meta, "tta_flip": True})
    model, meta = load_model_file(flipped / "model.pt")
    refs = read_manifest(tiny_faces / "splits" / "test.csv", tiny_faces / "faces",
                         meta.classes)  # fmt: skip
    cfg = load_params(_params(tmp_path, tta_flip=True)).train.fan
    task = FanTask(cfg, 0)
    task.prepare(model, torch.device("cpu"))
    expected = task.predict(model, refs, torch.device("cpu"), 0)
    plain = FanTask(cfg.model_copy(update={"tta_flip": False}), 0)
    plain.prepare(model, torch.device("cpu"))
    assert np.abs(expected - plain.predict(model, refs, torch.device("cpu"), 0)).max() > 1e-4
    results = Predictor.from_dir(flipped, "torch").predict_face_files([r.path for r in refs])
    got = np.array([[r.probabilities[c] for c in meta.classes] for r in results])
    assert np.abs(got - expected).max() <= 1e-5
    info = export_model(flipped, tiny_faces / "faces", tiny_faces / "splits")
    assert info["tta_flip"] and "expression_mirror" in info["inputs"]
    assert info["parity"]["max_abs_diff"] <= 1e-4


def test_another_extractor_model_is_reported(trained: tuple[Path, Path], tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    import shutil

    from emoflow.inference.graph import load_clip_model

    folder, _ = trained
    other = tmp_path / "other"
    shutil.copytree(folder, other, ignore=shutil.ignore_patterns("model.onnx", "export.json"))
    meta = load_state(other / "model.pt")
    meta["backbone"]["expression"]["fingerprint"] = "mediapipe-0000000000000000-min192"
    save_state(other / "model.pt", meta)
    with caplog.at_level("WARNING", logger="emoflow.inference.graph"):
        load_clip_model(read_spec(folder))
        assert not caplog.records
        load_clip_model(read_spec(other))
    assert "predictions may differ" in caplog.text and "mediapipe-0000" in caplog.text
