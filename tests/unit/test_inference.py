"""The inference core on tiny trained models: evaluation's numbers, recorded preprocessing,
per-frame weights, frames with and without a face."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from emoflow.artifact import MODEL_FILE, load_model_file, read_spec
from emoflow.config import load_params
from emoflow.datasets.clips import read_manifest
from emoflow.errors import EmoflowError, InputError
from emoflow.inference import ClipResult, NoFaceError, Predictor
from emoflow.training.tasks import make_task
from emoflow.training.trainer import train_model

ARCHS = ("fan", "deep_emotion")


@pytest.fixture(scope="module")
def tiny_models(tiny_faces: Path, tiny_params: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> dict[str, Path]:  # fmt: skip
    params = load_params(tiny_params)
    root = tmp_path_factory.mktemp("models")
    return {arch: train_model(arch, params, tiny_faces / "faces", tiny_faces / "splits",
                              root / arch).model_file.parent for arch in ARCHS}  # fmt: skip


@pytest.mark.parametrize("arch", ARCHS)
def test_face_clips_get_evaluations_probabilities(
    arch: str, tiny_models: dict[str, Path], tiny_faces: Path, tiny_params: Path
) -> None:
    p = Predictor.from_dir(tiny_models[arch], backend="torch")
    refs = read_manifest(tiny_faces / "splits" / "test.csv", tiny_faces / "faces", p.classes)
    params = load_params(tiny_params)
    task = make_task(arch, params.train, 0)
    model, _ = load_model_file(tiny_models[arch] / MODEL_FILE)
    expected = task.predict(model, refs, torch.device("cpu"), 0)
    results = p.predict_face_files([r.path for r in refs])
    got = np.array([[r.probabilities[c] for c in p.classes] for r in results])
    assert np.abs(got - expected).max() < 1e-5
    assert [r.label for r in results] == [p.classes[i] for i in expected.argmax(1)]
    for r in results:
        weights = [f.weight for f in r.frames]
        assert len(weights) == r.faces_found == 6 and abs(sum(weights) - 1) < 1e-5
        assert r.confidence == max(r.probabilities.values())


def test_fan_weights_are_its_normalised_attention(tiny_models: dict[str, Path],
                                                  tiny_faces: Path) -> None:  # fmt: skip
    from emoflow.faces.store import FaceClip

    p = Predictor.from_dir(tiny_models["fan"], backend="torch")
    path = next((tiny_faces / "faces").rglob("*.faces.zip"))
    with FaceClip(path) as fc:
        chips = fc.frames()
    r = p.predict_faces(chips)
    model, meta = load_model_file(tiny_models["fan"] / MODEL_FILE)
    from emoflow.datasets.clips import normalise, to_uint8

    with torch.no_grad():
        x = normalise(to_uint8(chips, meta.image_size)[None], grayscale=False)
        out = model(x, return_weights=True)
    assert np.allclose([f.weight for f in r.frames], out.frame_weights[0].numpy(), atol=1e-6)
    assert len(set(np.round([f.weight for f in r.frames], 6))) > 1  # not uniform


def test_deep_emotion_weights_are_shares_of_the_winning_class(
    tiny_models: dict[str, Path], tiny_faces: Path
) -> None:
    p = Predictor.from_dir(tiny_models["deep_emotion"], backend="torch")
    path = next((tiny_faces / "faces").rglob("*.faces.zip"))
    r = p.predict_face_files([path])[0]
    singles = [p.predict_faces([c]) for c in _frames(path, gray=True)]
    share = np.array([s.probabilities[r.label] for s in singles])
    assert np.allclose([f.weight for f in r.frames], share / share.sum(), atol=1e-5)
    mean = np.mean([[s.probabilities[c] for c in p.classes] for s in singles], axis=0)
    assert np.allclose([r.probabilities[c] for c in p.classes], mean, atol=1e-6)


def _frames(path: Path, gray: bool) -> list[np.ndarray]:
    from emoflow.faces.store import FaceClip

    with FaceClip(path) as fc:
        return fc.frames(grayscale=gray)


def test_preprocessing_is_recorded_and_read_back(tiny_models: dict[str, Path],
                                                 tiny_params: Path) -> None:  # fmt: skip
    meta = torch.load(tiny_models["fan"] / MODEL_FILE, weights_only=False)
    faces = load_params(tiny_params).faces
    assert meta["preprocessing"] == faces.model_dump(exclude={"workers"})
    p = Predictor.from_dir(tiny_models["fan"], backend="torch")
    assert p.preprocessing["size"] == faces.size and p.preprocessing["frames"] == faces.frames


def test_an_older_model_file_falls_back_to_the_params_with_a_warning(
    tiny_models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    meta = torch.load(tiny_models["fan"] / MODEL_FILE, weights_only=False)
    del meta["preprocessing"]
    (tmp_path / "old").mkdir()
    torch.save(meta, tmp_path / "old" / MODEL_FILE)
    params = tmp_path / "params.yaml"
    params.write_text("faces:\n  size: 112\n  frames: 5\n")
    with caplog.at_level(logging.WARNING):
        spec = read_spec(tmp_path / "old", params)
    assert spec.preprocessing.size == 112 and spec.preprocessing.frames == 5
    assert "records no preprocessing" in caplog.text


def _face_frames(n: int) -> list[np.ndarray]:
    """A real photograph moving a little: the astronaut's face, ~150 px wide, in 640×480."""
    img = cv2.resize(skimage.data.astronaut()[0:300, 80:480], (640, 480))
    return [np.roll(img, 2 * i, axis=1) for i in range(n)]


def test_a_video_given_as_frames_gives_boxes_times_and_weights(tiny_models: dict[str, Path]
                                                               ) -> None:  # fmt: skip
    p = Predictor.from_dir(tiny_models["fan"], backend="torch")
    r = p.predict_video(_face_frames(8), fps=10.0)
    assert isinstance(r, ClipResult) and r.label in p.classes
    assert r.frames_decoded == 8 and r.faces_found == 8
    assert [f.index for f in r.frames] == list(range(8))  # fewer than faces.frames: all kept
    for f in r.frames:
        assert f.time_s == pytest.approx(f.index / 10.0)
        x0, y0, x1, y1 = f.box
        # the face lies around x 155–300 (+ 2 px a frame), y 120–270
        assert 120 < x0 < 200 < 280 < x1 < 360 and 80 < y0 < 160 < 240 < y1 < 320, f.box
        assert f.detector in ("hog", "hog_clahe", "cnn", "tracked")
    assert abs(sum(f.weight for f in r.frames) - 1) < 1e-5
    assert r.timings_ms.total >= r.timings_ms.faces > 0 and r.timings_ms.model > 0
    t = r.timings_ms
    assert t.total == pytest.approx(t.decode + t.faces + t.expression + t.model)
    assert t.expression == 0.0  # an appearance model: no extractor ran
    assert r.model.backend == "torch" and r.model.name == "fan"


def test_frames_without_a_face_raise_no_face(tiny_models: dict[str, Path]) -> None:
    p = Predictor.from_dir(tiny_models["deep_emotion"], backend="torch")
    blank = [np.full((240, 320, 3), 90, np.uint8) for _ in range(6)]
    with pytest.raises(NoFaceError, match=r"no usable face in <frames>: face in 0 of 6 frames"):
        p.predict_video(blank)
    with pytest.raises(InputError, match="RGB uint8"):
        p.predict_video([np.zeros((4, 4), np.float32)])


def test_bytes_that_are_not_a_video_name_the_upload(tiny_models: dict[str, Path]) -> None:
    p = Predictor.from_dir(tiny_models["fan"], backend="torch")
    with pytest.raises(InputError, match=r"clip\.mp4: empty file"):
        p.predict_video(b"", name="clip.mp4")
    with pytest.raises(InputError, match=r"notes\.mp4: cannot open as a media file"):
        p.predict_video(b"hello, not a video", name="notes.mp4")


def test_backends_and_model_uris_are_checked(tiny_models: dict[str, Path], tmp_path: Path
                                             ) -> None:  # fmt: skip
    with pytest.raises(EmoflowError, match="unknown backend 'tpu'"):
        Predictor.from_dir(tiny_models["fan"], backend="tpu")
    with pytest.raises(EmoflowError, match="run `emoflow export` first"):
        Predictor.from_dir(tiny_models["fan"], backend="onnx")
    with pytest.raises(InputError, match="not a model folder"):
        Predictor.from_dir(tmp_path)
    auto = Predictor.from_dir(tiny_models["fan"])
    assert auto.backend == "torch"  # auto, nothing exported: and it says why
    assert "run `emoflow export` first" in auto.info()["backend_reason"]
    with pytest.raises(EmoflowError, match="not a model URI"):  # refused before any lookup
        Predictor.from_uri("runs:/abc/model")
