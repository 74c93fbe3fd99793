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

from emoflow.config import load_params
from emoflow.datasets.clips import read_manifest
from emoflow.errors import EmoflowError
from emoflow.inference import Predictor
from emoflow.inference.backends import onnx_session
from emoflow.inference.graph import load_clip_model
from emoflow.inference.model_dir import EXPORT_JSON, ONNX_FILE, read_spec
from emoflow.release.export import ParityError, export_model, export_onnx, run_clips
from emoflow.training.trainer import train_model

ARCHS = ("fan", "deep_emotion")


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
    assert Predictor.from_dir(exported[arch]).backend == "onnx"  # auto prefers the export
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


@pytest.mark.gpu
def test_tensorrt_engine_agrees_with_onnx_runtime(exported: dict[str, Path], tiny_faces: Path,
                                                  tmp_path: Path) -> None:  # fmt: skip
    if not _has_tensorrt():
        pytest.skip("needs TensorRT and a CUDA GPU")
    from emoflow.release.convert import convert_model

    folder = tmp_path / "fan"
    shutil.copytree(exported["fan"], folder)
    info = convert_model(folder, tiny_faces / "faces", tiny_faces / "splits", "fp16", (1, 4, 8))
    assert info["parity"]["argmax_agreement"] >= 0.99 and info["parity"]["max_abs_diff"] <= 1e-2
    t = Predictor.from_dir(folder)
    assert t.backend == "tensorrt"
    o = Predictor.from_dir(folder, backend="onnx")
    clips = _read(sorted((tiny_faces / "faces").rglob("*.faces.zip")), False)
    for a, b in zip(t.predict_face_batches(clips), o.predict_face_batches(clips), strict=True):
        assert a.label == b.label
    # An engine from another GPU or TensorRT: refused with a message, never a crash.
    meta = json.loads((folder / "engine.json").read_text())
    (folder / "engine.json").write_text(json.dumps({**meta, "gpu": "Some Other GPU"}))
    with pytest.raises(EmoflowError, match="rebuild it here"):
        Predictor.from_dir(folder, backend="tensorrt")
    assert Predictor.from_dir(folder).backend == "onnx"
