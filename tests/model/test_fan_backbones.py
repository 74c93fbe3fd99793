"""FAN with dlib's face descriptor as its frame encoder: the input it gets, the frozen route on
cached features, fine-tuning with a warm-up, and what model.pt records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fan_training import train_tiny

from emoflow.artifact import load_model_file, load_state
from emoflow.config import load_params
from emoflow.datasets.clips import normalise, read_manifest
from emoflow.errors import InputError
from emoflow.faces import dlib_models
from emoflow.models import build_fan
from emoflow.models.dlib_resnet import DlibTrunk, dlib_input, dlib_resnet29, load_weights
from emoflow.training.tasks import FanTask, group_lr, param_groups
from emoflow.training.trainer import train_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def weights_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                  ) -> Path:  # fmt: skip
    """Converted weights and cached features go to a test folder, not ~/.cache."""
    folder = tmp_path_factory.getbasetemp() / "weights-cache"
    monkeypatch.setenv("EMOFLOW_WEIGHTS_CACHE", str(folder))
    return folder


def _chips() -> np.ndarray:
    import dlib
    import matplotlib
    import skimage.data
    from PIL import Image

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    out = []
    for img in (skimage.data.astronaut(), np.asarray(Image.open(hopper).convert("RGB"))):
        box = dlib_models.hog_detector()(img, 0)[0]
        out.append(dlib.get_face_chip(img, dlib_models.shape_predictor_5()(img, box), 150, 0.25))
    return np.stack(out)


def _params(tmp_path: Path, **fan: object) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(workers=0)
    params["train"]["fan"].update(epochs=3, batch_size=4, image_size=150,
                                  backbone="dlib_resnet29", pretrained=None,
                                  backbone_lr_scale=0.0, backbone_warmup_epochs=0,
                                  features="appearance")  # fmt: skip
    params["train"]["fan"].update(fan)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_trunk_feeds_dlib_its_own_normalisation() -> None:
    """The datasets' ImageNet-normalised input, re-normalised inside the trunk, gives dlib's
    pooled features of the same chips."""
    chips = _chips()
    with torch.no_grad():
        ours = DlibTrunk(pretrained=True).eval()(normalise(torch.from_numpy(chips), False))
        reference = dlib_resnet29().features(dlib_input(chips))
    assert ours.shape == (2, 256)
    assert float((ours - reference).abs().max()) <= 1e-4


def test_features_in_give_what_frames_in_give() -> None:
    torch.manual_seed(0)
    fan = build_fan(3, backbone="dlib_resnet29").eval()
    x = torch.randn(2, 3, 3, 150, 150)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    with torch.no_grad():
        feats = fan.trunk(x.flatten(0, 1)).reshape(2, 3, -1)
        feats[0, 2] = 7.0  # padding: whatever it holds, it must not count
        a = fan(x, mask, return_weights=True)
        b = fan(feats, mask, return_weights=True)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert torch.allclose(a.frame_weights, b.frame_weights, atol=1e-6)
    assert fan.classifier.in_features == 512  # [f_i : f_v], 2 × 256


def test_feature_standardisation_ignores_padding() -> None:
    """BatchNorm over the frames' features sees real frames only, in training too."""
    torch.manual_seed(0)
    fan = build_fan(3, backbone="dlib_resnet29").train()
    f = torch.rand(2, 3, 256) + 1.0
    mask = torch.tensor([[True, True, False], [True, True, True]])
    padded = f.clone()
    padded[0, 2] = 100.0
    with torch.no_grad():
        out = fan.normalise_features(padded, mask)
    assert float(out[0, 2].abs().max()) == 0.0
    real = torch.cat([f[0, :2], f[1]])
    expected = (real - real.mean(0)) / torch.sqrt(real.var(0, unbiased=False) + 1e-5)
    assert torch.allclose(torch.cat([out[0, :2], out[1]]), expected, atol=1e-4)
    assert isinstance(build_fan(3).feature_norm, torch.nn.Identity)  # resnet18: as before


def test_param_groups_scale_and_warm_up_the_backbone() -> None:
    fan = build_fan(3, backbone="dlib_resnet29")
    groups = param_groups(fan, fan.trunk, lr_scale=0.1, frozen_epochs=2)
    assert len(groups) == 2 and groups[1]["params"][0] is next(fan.trunk.parameters())
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(
        p.numel() for p in fan.parameters())  # fmt: skip
    assert [group_lr(groups[1], 1e-3, e) for e in (0, 1, 2)] == [0.0, 0.0, pytest.approx(1e-4)]
    assert [group_lr(groups[0], 1e-3, e) for e in (0, 2)] == [1e-3, 1e-3]
    fan.trunk.requires_grad_(False)  # frozen: the trunk is not in the optimiser at all
    assert len(param_groups(fan, fan.trunk, 0.0)) == 1


@pytest.mark.parametrize(("fan", "faces", "rule"), [
    ({"image_size": 96}, {}, "image_size must be 150"),
    ({"pretrained": "weights.pt"}, {}, "set it to null"),
    ({}, {"padding": 0.4}, "faces.padding 0.25"),
])  # fmt: skip
def test_dlib_backbone_needs_its_own_input(tmp_path: Path, fan: dict, faces: dict,
                                           rule: str) -> None:  # fmt: skip
    path = _params(tmp_path, **fan)
    params = yaml.safe_load(path.read_text())
    params["faces"].update(faces)
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(InputError, match=rule) as info:
        load_params(path)
    assert str(path) in str(info.value)


@pytest.fixture(scope="module")
def frozen(tiny_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """FAN heads trained on the tiny data over frozen dlib features: (model folder, cache)."""
    folder = tmp_path_factory.mktemp("frozen")
    return train_tiny(tiny_faces, _params(folder), folder)


@pytest.mark.slow  # trains (features of 18 clips at 150 px, then the heads): 25-50 s here
def test_frozen_route_trains_only_the_heads(frozen: tuple[Path, Path], tiny_faces: Path) -> None:
    folder, cache = frozen
    meta = load_state(folder / "model.pt")
    dlib = load_weights()
    trunk = {k.removeprefix("trunk.net."): v for k, v in meta["state_dict"].items()
             if k.startswith("trunk.")}  # fmt: skip
    assert trunk.keys() == {k for k in dlib if not k.startswith("fc.")}
    assert all(torch.equal(trunk[k], dlib[k]) for k in trunk)  # dlib's weights, untouched
    assert meta["model_config"]["backbone"] == "dlib_resnet29"
    info = meta["backbone"]
    assert info["name"] == "dlib_resnet29" and info["image_size"] == 150
    assert info["chip_padding"] == 0.25 and info["input_scale"] == 256.0
    assert meta["preprocessing"]["padding"] == 0.25
    # One cached feature file per face file that training and validation read.
    refs = [r for split in ("train", "val") for r in read_manifest(
        tiny_faces / "splits" / f"{split}.csv", tiny_faces / "faces", meta["classes"])]  # fmt: skip
    features = list(cache.glob("features/*/*.pt"))
    assert len(features) == len({r.path for r in refs})
    first = torch.load(features[0], weights_only=True)
    assert first.shape[1:] == (2, 256)  # each frame and its mirror image


@pytest.mark.slow
def test_a_warm_cache_trains_the_model_a_cold_one_trained(frozen: tuple[Path, Path],
                                                          tiny_faces: Path) -> None:  # fmt: skip
    """The fixture trained on an empty cache (weights converted, features computed); training
    again on what it cached must give the same model, epoch by epoch."""
    folder, cache = frozen
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOFLOW_WEIGHTS_CACHE", str(cache))
        again = train_model("fan", load_params(_params(folder.parent)), tiny_faces / "faces",
                            tiny_faces / "splits", folder.parent / "warm")  # fmt: skip
    history = [[{k: v for k, v in row.items() if k not in ("train_seconds", "samples_per_s")}
                for row in json.loads((f / "history.json").read_text())]
               for f in (folder, again.model_file.parent)]  # fmt: skip
    assert history[0] == history[1]
    cold, warm = load_state(folder / "model.pt"), load_state(again.model_file)
    assert all(torch.equal(cold["state_dict"][k], warm["state_dict"][k])
               for k in cold["state_dict"])  # fmt: skip


@pytest.mark.slow
def test_frozen_model_predicts_from_images_as_from_cached_features(
    frozen: tuple[Path, Path], tiny_faces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kept model on face images (evaluate, predict, export) gives what training saw."""
    folder, cache = frozen
    monkeypatch.setenv("EMOFLOW_WEIGHTS_CACHE", str(cache))
    model, meta = load_model_file(folder / "model.pt")
    refs = read_manifest(tiny_faces / "splits" / "val.csv", tiny_faces / "faces",
                         meta.classes)  # fmt: skip
    p = load_params(_params(folder))
    on_images = FanTask(p.train.fan, 0).predict(model, refs, torch.device("cpu"), 0)
    task = FanTask(p.train.fan, 0)
    task.prepare(model, torch.device("cpu"))
    on_features = task.predict(model, refs, torch.device("cpu"), 0)
    assert np.abs(on_images - on_features).max() <= 1e-4


@pytest.mark.slow
def test_frozen_dlib_fan_exports_to_onnx(frozen: tuple[Path, Path], tiny_faces: Path) -> None:
    from emoflow.release.export import export_model

    folder, _ = frozen
    export_model(folder, tiny_faces / "faces", tiny_faces / "splits")
    info = json.loads((folder / "export.json").read_text())
    assert info["inputs"]["frames"]["shape"][2:] == [150, 150, 3]
    assert info["parity"]["max_abs_diff"] <= 1e-4
    assert info["parity"]["argmax_agree"] == info["parity"]["clips"] > 0


@pytest.mark.slow
def test_fine_tuning_warms_up_with_the_backbone_frozen(tiny_faces: Path, tmp_path: Path) -> None:
    def trunk_after(epochs: int) -> dict[str, torch.Tensor]:
        p = load_params(_params(tmp_path, epochs=epochs, backbone_lr_scale=0.1,
                                backbone_warmup_epochs=1))  # fmt: skip
        r = train_model("fan", p, tiny_faces / "faces", tiny_faces / "splits", tmp_path / "m")
        return {k.removeprefix("net."): v.clone() for k, v in r.model.trunk.state_dict().items()}

    dlib = load_weights()
    warm = trunk_after(1)  # the warm-up epoch: heads only
    assert all(torch.equal(v, dlib[k]) for k, v in warm.items())
    tuned = trunk_after(2)  # resumes the checkpoint; the backbone now trains, at lr × 0.1
    assert any(not torch.equal(v, dlib[k]) for k, v in tuned.items())


def test_the_feature_cache_key_follows_the_trunks_input_normalisation() -> None:
    from emoflow.training.features import weights_fingerprint

    trunk = DlibTrunk()
    before = weights_fingerprint(trunk)
    assert weights_fingerprint(trunk) == before  # the same trunk, the same key
    trunk.scale.mul_(1.01)  # a non-persistent buffer: not in the state dict
    assert weights_fingerprint(trunk) != before
