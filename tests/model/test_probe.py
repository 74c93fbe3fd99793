"""``emoflow probe``: a logistic regression on FAN's frozen features, the floor its heads must
beat, on the split and on every fold; a trainable backbone is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from stage_cli import assert_one_line_error, emoflow

ROOT = Path(__file__).resolve().parents[2]


def _params(tmp_path: Path, **fan: object) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["split"]["folds"] = 2  # tiny_faces has two
    params["train"]["fan"].update(image_size=150, backbone="dlib_resnet29",
                                  backbone_lr_scale=0.0, features="appearance")  # fmt: skip
    params["train"]["fan"].update(fan)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def workspace(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Metrics land in the test's folder; features in one cache shared by these tests."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMOFLOW_WEIGHTS_CACHE",
                       str(tmp_path_factory.getbasetemp() / "probe-cache"))  # fmt: skip


@pytest.mark.slow  # dlib features of 24 clips, then 3 × 5 fits: 30-100 s here
def test_probe_separates_the_tiny_classes_on_the_split_and_the_folds(
    tiny_faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    params = str(_params(tmp_path))
    where = ["--faces", str(tiny_faces / "faces"), "--splits", str(tiny_faces / "splits")]
    code, err = emoflow(monkeypatch, capsys, "probe", "--params", params, *where)
    assert code == 0, err
    split = json.loads((tmp_path / "metrics" / "fan_probe.json").read_text())
    # two real portraits and one upside down: dlib's features tell them apart
    assert split["test"]["war"] >= 0.9 and split["test"]["n"] > 0
    assert split["feature_dim"] == 256 and split["C"] in (0.001, 0.01, 0.1, 1.0, 10.0)
    assert split["train_frames"] % 12 == 0  # 6 frames and their mirrors per clip

    code, err = emoflow(monkeypatch, capsys, "probe", "--params", params, *where, "--folds")
    assert code == 0, err
    cv = json.loads((tmp_path / "metrics" / "fan_probe_cv.json").read_text())
    assert cv["folds"] == 2 and len(cv["per_fold"]) == 2
    assert cv["war"]["mean"] == pytest.approx(sum(f["test"]["war"] for f in cv["per_fold"]) / 2)


def test_a_trainable_backbone_is_refused_in_one_line(
    tiny_faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    params = _params(tmp_path, backbone="resnet18", backbone_lr_scale=1.0, image_size=32)
    where = ["--faces", str(tiny_faces / "faces"), "--splits", str(tiny_faces / "splits")]
    code, err = emoflow(monkeypatch, capsys, "probe", "--params", str(params), *where)
    assert_one_line_error(code, err, str(params), "train.fan", "no frozen features")
    assert not (tmp_path / "metrics").exists()  # nothing written


def test_a_clips_probabilities_are_its_frames_mean_over_every_class() -> None:
    from sklearn.linear_model import LogisticRegression

    from emoflow.training.probe import Frames, clip_probabilities

    x = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    model = LogisticRegression().fit(x, [0, 0, 2, 2])  # class 1 never seen in training
    frames = Frames(np.array([[-2.0], [2.0], [1.0]]), np.zeros(3), np.array([0, 0, 1]))
    probs = clip_probabilities(model, frames, n_clips=2, n_classes=3)
    per_frame = model.predict_proba(frames.x)
    assert np.allclose(probs[0, [0, 2]], per_frame[:2].mean(0))
    assert np.allclose(probs[1, [0, 2]], per_frame[2]) and probs[1, 2] > 0.5
    assert np.all(probs[:, 1] == 0) and np.allclose(probs.sum(1), 1)
