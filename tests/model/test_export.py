"""``emoflow export`` on tiny trained models: parity with PyTorch, what gets written, and the
torch and ONNX Runtime backends agreeing through the inference core."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from emoflow.artifact import EXPORT_JSON, ONNX_FILE, read_spec
from emoflow.config import load_params
from emoflow.datasets.clips import read_manifest
from emoflow.errors import EmoflowError
from emoflow.inference import Predictor
from emoflow.inference.backends import onnx_has_cuda, onnx_session
from emoflow.inference.graph import load_clip_model
from emoflow.release.export import ParityError, export_model, export_onnx, run_clips
from emoflow.training.trainer import train_model

ARCHS = ("fan", "deep_emotion")
# What auto serves a current export with: ONNX Runtime, except on a GPU machine whose
# onnxruntime has no CUDA provider (then PyTorch on the GPU, not a CPU runtime).
AUTO_EXPORT = "torch" if torch.cuda.is_available() and not onnx_has_cuda() else "onnx"


@pytest.fixture(scope="module")
def exported(tiny_faces: Path, tiny_params: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, Path]:  # fmt: skip
    """Both models trained on the tiny data and exported (the parity check runs in export)."""
    root, p, data = tmp_path_factory.mktemp("exported"), load_params(tiny_params), tiny_faces
    dirs = {a: train_model(a, p, data / "faces", data / "splits", root / a).model_file.parent
            for a in ARCHS}  # fmt: skip
    for d in dirs.values():
        export_model(d, data / "faces", data / "splits")
    return dirs


@pytest.mark.parametrize("arch", ARCHS)
def test_export_writes_a_checked_single_file_graph(arch: str, exported: dict[str, Path],
                                                   tiny_faces: Path) -> None:  # fmt: skip
    folder = exported[arch]
    info = json.loads((folder / EXPORT_JSON).read_text())
    assert not list(folder.glob("*.onnx.data"))  # one self-contained file
    graph = onnx.load(str(folder / ONNX_FILE))
    assert [i.name for i in graph.graph.input] == ["frames", "mask"]
    assert [o.name for o in graph.graph.output] == ["probabilities", "weights"]
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims[:2] == ["clips", "frames"] and info["inputs"]["frames"]["dtype"] == "uint8"
    test_clips = len(read_manifest(tiny_faces / "splits" / "test.csv", tiny_faces / "faces",
                                   info["classes"]))  # fmt: skip
    par = info["parity"]
    assert par["clips"] == test_clips > 0 and par["argmax_agree"] == test_clips
    assert par["max_abs_diff"] <= 1e-4 and par["weights_max_abs_diff"] <= 1e-4
    assert info["opset"] == 20 and info["preprocessing"]["size"] == 224
    assert len(info["source_sha256"]) == 64


@pytest.mark.parametrize("arch", ARCHS)
def test_torch_and_onnx_backends_agree_on_the_same_clips(arch: str, exported: dict[str, Path],
                                                         tiny_faces: Path) -> None:  # fmt: skip
    t = Predictor.from_dir(exported[arch], backend="torch")
    o = Predictor.from_dir(exported[arch], backend="onnx")
    assert Predictor.from_dir(exported[arch]).backend == AUTO_EXPORT
    files = sorted((tiny_faces / "faces").rglob("*.faces.zip"))
    clips = [c[: 1 + i % 6] for i, c in enumerate(_read(files, t.spec.grayscale))]  # 1..6 frames
    # On a GPU the torch backend's convolutions run in TF32 (PyTorch's default for cuDNN):
    # measured 2.8e-4 against the CPU's ONNX Runtime on an H200; labels still agree.
    tol = 1e-3 if torch.cuda.is_available() else 1e-4
    for a, b in zip(t.predict_face_batches(clips), o.predict_face_batches(clips), strict=True):
        assert a.label == b.label
        pa, pb = (np.array(list(r.probabilities.values())) for r in (a, b))
        assert np.abs(pa - pb).max() < tol
        wa, wb = (np.array([f.weight for f in r.frames]) for r in (a, b))
        assert np.abs(wa - wb).max() < tol


def _read(files: list[Path], gray: bool) -> list[list[np.ndarray]]:
    from emoflow.faces.store import FaceClip

    out = []
    for f in files:
        with FaceClip(f) as fc:
            out.append(fc.frames(grayscale=gray))
    return out


def test_a_model_failing_parity_is_not_written(exported: dict[str, Path], tiny_faces: Path,
                                               tmp_path: Path) -> None:  # fmt: skip
    folder = tmp_path / "fan"
    folder.mkdir()
    shutil.copy(exported["fan"] / "model.pt", folder)
    # No real graph matches a ResNet bit for bit: a zero tolerance must fail, with the figures.
    with pytest.raises(ParityError, match=r"max \|Δp\| [0-9.e-]+ \(tolerance 0\)"):
        export_model(folder, tiny_faces / "faces", tiny_faces / "splits", tolerance=0.0)
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt"]


def test_a_stale_export_is_refused(exported: dict[str, Path], tiny_faces: Path, tmp_path: Path
                                   ) -> None:  # fmt: skip
    folder = tmp_path / "de"
    shutil.copytree(exported["deep_emotion"], folder)
    other = tmp_path / "other"
    train_model("deep_emotion", load_params(_params(tmp_path)), tiny_faces / "faces",
                tiny_faces / "splits", other)  # fmt: skip
    shutil.copy(other / "model.pt", folder / "model.pt")  # retrained, not re-exported
    with pytest.raises(EmoflowError, match=r"exported from another model\.pt"):
        Predictor.from_dir(folder, backend="onnx")
    assert Predictor.from_dir(folder).backend == "torch"  # auto falls back


def _params(tmp_path: Path) -> Path:
    import yaml

    root = Path(__file__).resolve().parents[2]
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"].update(workers=0, seed=5)
    params["train"]["deep_emotion"].update(epochs=1, batch_size=16)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_the_fp16_graph_for_tensorrt_stays_within_its_tolerance(
    exported: dict[str, Path], tiny_faces: Path, tmp_path: Path
) -> None:
    """What ``convert --precision fp16`` hands TensorRT, run by ONNX Runtime on the CPU."""
    spec = read_spec(exported["fan"])
    path = tmp_path / "model.fp16.onnx"
    export_onnx(load_clip_model(spec, half=True), spec, path)
    graph = onnx.load(str(path))
    halves = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) > 20  # the trunk's weights are float16
    assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    refs = read_manifest(tiny_faces / "splits" / "test.csv", tiny_faces / "faces", spec.classes)
    runs = []
    for p in (path, exported["fan"] / ONNX_FILE):
        s = onnx_session(p)
        runs.append(run_clips(lambda f, m, s=s: s.run(None, {"frames": f, "mask": m}), refs,
                              spec)[0])  # fmt: skip
    diff = np.abs(runs[0] - runs[1]).max()
    assert 0 < diff <= 1e-2 and (runs[0].argmax(1) == runs[1].argmax(1)).all()


@pytest.mark.parametrize("half", [False, True])
def test_deep_emotion_exports_without_affine_grid_and_in_fp16(
    half: bool, exported: dict[str, Path], tiny_faces: Path, tmp_path: Path
) -> None:
    """TensorRT's ONNX parser has no AffineGrid: the STN's grid is a MatMul (fp32 and the fp16
    graph ``convert`` builds from), and both run and agree with the fp32 export."""
    spec = read_spec(exported["deep_emotion"])
    path = exported["deep_emotion"] / ONNX_FILE
    if half:
        path = tmp_path / "model.fp16.onnx"
        export_onnx(load_clip_model(spec, half=True), spec, path)
    graph = onnx.load(str(path))
    ops = {n.op_type for n in graph.graph.node}
    assert "AffineGrid" not in ops and {"MatMul", "GridSample"} <= ops
    if half:
        halves = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
        assert len(halves) >= 10  # the convolutions' and FC layers' weights
    refs = read_manifest(tiny_faces / "splits" / "test.csv", tiny_faces / "faces", spec.classes)
    runs = []
    for p in (path, exported["deep_emotion"] / ONNX_FILE):
        s = onnx_session(p)
        runs.append(run_clips(lambda f, m, s=s: s.run(None, {"frames": f, "mask": m}), refs,
                              spec)[0])  # fmt: skip
    diff = np.abs(runs[0] - runs[1]).max()
    assert diff <= 1e-2 and (runs[0].argmax(1) == runs[1].argmax(1)).all()
    assert (diff > 0) == half


def _has_tensorrt() -> bool:
    import importlib.util

    import torch

    return importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT and a GPU are here")
def test_convert_without_tensorrt_names_what_is_missing(exported: dict[str, Path],
                                                        tiny_faces: Path) -> None:  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "emoflow.cli", "convert", "--model", "fan",
                          "--model-dir", str(exported["fan"]), "--faces",
                          str(tiny_faces / "faces"), "--splits", str(tiny_faces / "splits")],
                         capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "pip install tensorrt-cu13" in lines[0]
    assert not (exported["fan"] / "model.engine").exists()


def test_convert_refuses_a_profile_smaller_than_what_the_predictor_sends(
    exported: dict[str, Path], tiny_faces: Path
) -> None:
    """Checked before TensorRT is needed: the same refusal here and on a GPU."""
    from emoflow.release.convert import convert_model

    args = (exported["fan"], tiny_faces / "faces", tiny_faces / "splits", "fp16")
    with pytest.raises(EmoflowError, match=r"--max-batch 8 is smaller than the 16 clips"):
        convert_model(*args, (1, 4, 8))
    frames = read_spec(exported["fan"]).preprocessing.frames
    with pytest.raises(EmoflowError, match=rf"--max-frames 2 is smaller than the {frames} frames"):
        convert_model(*args, (1, 16, 64), max_frames=2)
    assert not (exported["fan"] / "model.engine").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ARCHS)
def test_tensorrt_engine_agrees_with_onnx_runtime(
    arch: str, exported: dict[str, Path], tiny_faces: Path, tmp_path: Path
) -> None:
    """Both models become engines (the uint8 frames input, Deep-Emotion's spatial transformer)
    that agree with ONNX Runtime through the predictor's own chunks."""
    if not _has_tensorrt():
        pytest.skip("needs TensorRT and a CUDA GPU")
    from emoflow.release.convert import convert_model

    folder = tmp_path / arch
    shutil.copytree(exported[arch], folder)
    info = convert_model(folder, tiny_faces / "faces", tiny_faces / "splits", "fp16")
    assert info["parity"]["argmax_agreement"] >= 0.99 and info["parity"]["max_abs_diff"] <= 1e-2
    assert info["profile"]["clips"] == [1, 16, 64] and info["profile"]["frames"][2] == 64
    t = Predictor.from_dir(folder)
    assert t.backend == "tensorrt"
    o = Predictor.from_dir(folder, backend="onnx")
    gray = t.spec.grayscale
    clips = _read(sorted((tiny_faces / "faces").rglob("*.faces.zip")), gray)
    clips = (clips * (1 + 40 // len(clips)))[:40]  # more clips than one predictor chunk (16)
    for a, b in zip(t.predict_face_batches(clips), o.predict_face_batches(clips), strict=True):
        assert a.label == b.label
    # An engine from another GPU or TensorRT: refused with a message, never a crash.
    meta = json.loads((folder / "engine.json").read_text())
    (folder / "engine.json").write_text(json.dumps({**meta, "gpu": "Some Other GPU"}))
    with pytest.raises(EmoflowError, match="rebuild it here"):
        Predictor.from_dir(folder, backend="tensorrt")
    fallback = Predictor.from_dir(folder)
    assert fallback.backend == AUTO_EXPORT
    assert "rebuild it here" in fallback.info()["backend_reason"]


@pytest.mark.gpu
def test_an_engine_smaller_than_the_batch_splits_it_and_refuses_long_clips(
    exported: dict[str, Path], tiny_faces: Path
) -> None:
    """A profile of at most 4 clips and faces.frames frames, sent 16 clips and then a longer
    clip: split into calls that each fit (results row for row as ONNX Runtime's), and a clear
    refusal instead of -1 shapes or another batch's results."""
    if not _has_tensorrt():
        pytest.skip("needs TensorRT and a CUDA GPU")
    from emoflow.inference.trt import EngineRunner, import_tensorrt
    from emoflow.release.convert import build_engine

    folder = exported["fan"]
    spec = read_spec(folder)
    frames = spec.preprocessing.frames
    engine = build_engine(import_tensorrt(), folder / ONNX_FILE, spec, "fp32", (2, 4, 4), frames)
    runner = EngineRunner(engine, "small engine", "fan")
    # its own stream, not torch's legacy default one (extra synchronisation, TensorRT warns)
    assert runner._stream is not None and runner._stream != torch.cuda.default_stream()
    assert runner.profile.clips == (2, 4, 4) and runner.profile.frames == (1, frames, frames)
    session = onnx_session(folder / ONNX_FILE)
    rng = np.random.default_rng(0)
    s, c = spec.image_size, spec.channels
    x = rng.integers(0, 256, (16, 3, s, s, c), dtype=np.uint8)
    mask = np.ones((16, 3), dtype=bool)
    mask[::2, 2] = False
    for n in (16, 1, 5):  # over the max, under the min, neither a multiple
        got, got_w = runner.run(x[:n], mask[:n])
        want, want_w = session.run(None, {"frames": x[:n], "mask": mask[:n]})
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-3
        assert np.abs(got_w - want_w).max() < 1e-3
    long = np.zeros((1, frames + 1, s, s, c), np.uint8)
    with pytest.raises(EmoflowError, match=rf"clip of {frames + 1} frames"):
        runner.run(long, np.ones((1, frames + 1), bool))
