"""``emoflow export`` on tiny trained models: parity with PyTorch, what gets written, and the
torch and ONNX Runtime backends agreeing through the inference core."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from emoflow.config import load_params
from emoflow.datasets.clips import read_manifest
from emoflow.errors import EmoflowError
from emoflow.inference import Predictor
from emoflow.inference.model_dir import EXPORT_JSON, ONNX_FILE
from emoflow.release.export import ParityError, export_model
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
    for a, b in zip(t.predict_face_batches(clips), o.predict_face_batches(clips), strict=True):
        assert a.label == b.label
        pa, pb = (np.array(list(r.probabilities.values())) for r in (a, b))
        assert np.abs(pa - pb).max() < 1e-4
        wa, wb = (np.array([f.weight for f in r.frames]) for r in (a, b))
        assert np.abs(wa - wb).max() < 1e-4


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
