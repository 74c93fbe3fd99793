"""`bentoml build` of the emotion service, without Docker: services/emotion/build.sh (emoflow's
wheel, then `bentoml build`) into a temporary BENTOML_HOME, with a tiny trained and exported
model; the Bento carries the model, the service files and the pinned image definition."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from svc_helpers import SERVICE_DIR

pytestmark = pytest.mark.slow

BENTOML = str(Path(sys.executable).with_name("bentoml"))


def _build(home: Path, model: Path, *args: str) -> str:
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true",
           "EMOFLOW_MODEL_DIR": str(model), "PYTHON": sys.executable}  # fmt: skip
    out = subprocess.run([str(SERVICE_DIR / "build.sh"), "-o", "tag", *args], env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout.strip().rpartition("__tag__:")[2]


def _bentoml(home: Path, *args: str) -> str:
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    return subprocess.run([BENTOML, *args], env=env, capture_output=True, text=True, check=True,
                          timeout=300).stdout  # fmt: skip


def _member(tar: tarfile.TarFile, name: str) -> str:
    f = tar.extractfile(f"./{name}")
    assert f is not None, name
    return f.read().decode()


def test_bentoml_build_packs_the_model_the_service_and_pinned_images(
        tiny_fan: Path, tmp_path_factory: pytest.TempPathFactory) -> None:  # fmt: skip
    home = tmp_path_factory.mktemp("bentoml")
    tag = _build(home, tiny_fan)
    info = json.loads(_bentoml(home, "get", tag, "-o", "json"))
    assert info["service"] == "service:Emotion" and info["entry_service"] == "emoflow"
    model_tags = [m["tag"] for s in info["services"] for m in s["models"]]
    assert len(model_tags) == 1 and model_tags[0].startswith("emoflow-fan:")
    assert info["image"]["base_image"] == "python:3.11-slim"
    assert "ffmpeg" in " ".join(info["image"]["commands"])

    # An exported Bento is what `bentoml containerize` and a deployment get: model included.
    archive = tmp_path_factory.mktemp("export") / "emoflow.tar"
    _bentoml(home, "export", tag, str(archive))
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        folder = f"./models/{model_tags[0].replace(':', '/')}"
        for f in ("model.pt", "model.onnx", "export.json"):
            assert f"{folder}/{f}" in names, f
            assert tar.getmember(f"{folder}/{f}").size == (tiny_fan / f).stat().st_size
        for f in ("service.py", "emoserve/source.py", "emoserve/packaging.py"):
            assert f"./src/{f}" in names, f
        assert not any("__pycache__" in n for n in names)
        reqs = _member(tar, "env/python/requirements.txt").splitlines()
        dockerfile = _member(tar, "env/docker/Dockerfile")
    assert {"torch==2.14.1", "bentoml==1.4.40", "dlib-bin==20.0.1.post1",
            "opentelemetry-sdk==1.45.1"} <= set(reqs)  # fmt: skip
    wheel = next(r for r in reqs if r.startswith("./wheels/emoflow-"))
    assert f"./src/{wheel[2:]}" in names
    assert "FROM python:3.11-slim" in dockerfile

    # The GPU variant: NVIDIA's CUDA runtime with cuDNN, and TensorRT (the `gpu` extra).
    cuda = json.loads(_bentoml(home, "get", _build(home, tiny_fan, "--arg", "variant=cuda"),
                               "-o", "json"))  # fmt: skip
    assert cuda["image"]["base_image"].startswith("nvidia/cuda:") and "cudnn" in cuda[
        "image"]["base_image"]  # fmt: skip
    assert any(r.startswith("tensorrt-cu13==") for r in cuda["image"]["python_requirements"]
               .splitlines())  # fmt: skip
