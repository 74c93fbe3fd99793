"""What a built Bento's container holds: BentoML 1.4's runtime image (``bentoml.images.Image``).

The Python packages are the project's pins (pyproject.toml's dependencies and constraints.txt's
transitive pins) plus emoflow itself as a local wheel (``wheels/``, made by ``build.sh``), not
locked again: the pins already resolve together, and locking the 7 GB stack would take minutes.
The pinned wheels of dlib (dlib-bin), OpenCV (headless), PyAV and imageio-ffmpeg carry their
own native libraries; the system packages are what those link against from the system, and
ffmpeg to inspect clips inside the container. ``--arg variant=cuda`` builds on NVIDIA's CUDA
runtime with cuDNN (the one docker/emoflow.Dockerfile uses) and adds the ``gpu`` extra
(TensorRT).
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path
from typing import Literal

import bentoml
from pydantic import BaseModel, ConfigDict

PYTHON_VERSION = "3.11"
CUDA_IMAGE = "nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04"
# libegl1/libgles2: MediaPipe's native library links libEGL and libGLESv2 (the blendshapes
# extractor of a FAN on expression features) even when it runs on the CPU.
SYSTEM_PACKAGES = ("libstdc++6", "zlib1g", "libgomp1", "ffmpeg", "libegl1", "libgles2")
WHEELS_DIR = "wheels"  # inside the build context (services/emotion), copied into the Bento


class BuildArgs(BaseModel):
    """``bentoml build --arg variant=cuda``: the GPU image; the default is the CPU one.
    ``--arg model=<tag>``: the model the Bento carries (build.sh passes the release's)."""

    model_config = ConfigDict(extra="forbid")

    variant: Literal["cpu", "cuda"] = "cpu"
    model: str | None = None


def project_root(start: Path = Path(__file__)) -> Path | None:
    """The emoflow checkout this service sits in; None inside a built Bento (no pyproject)."""
    for folder in start.resolve().parents:
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "emoflow"' in pyproject.read_text():
            return folder
    return None


def pinned_requirements(root: Path, extras: tuple[str, ...] = ()) -> list[str]:
    """pyproject.toml's dependencies (and ``extras``), then constraints.txt's pins."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    for line in (root / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and line not in reqs:
            reqs.append(line)
    return reqs


def no_deps_requirements(root: Path) -> list[str]:
    """pyproject.toml's ``[tool.emoflow] no-deps``: pins installed without their declared
    dependencies (MediaPipe for FAN's expression features; pyproject.toml says why)."""
    tool = tomllib.loads((root / "pyproject.toml").read_text()).get("tool", {})
    return list(tool.get("emoflow", {}).get("no-deps", []))


def emoflow_wheel() -> str:
    """The requirement line of emoflow's own wheel, relative to the Bento's src/."""
    return f"./{WHEELS_DIR}/emoflow-{metadata.version('emoflow')}-py3-none-any.whl"


def service_image(args: BuildArgs) -> bentoml.images.Image | None:
    """The image of ``args.variant``; None inside a Bento, where nothing is built."""
    root = project_root()
    if root is None:
        return None
    cuda = args.variant == "cuda"
    image = bentoml.images.Image(
        python_version=PYTHON_VERSION,
        base_image=CUDA_IMAGE if cuda else "",  # "" = BentoML's python:3.11-slim
        distro="debian",  # apt on Debian and on NVIDIA's Ubuntu images alike
        lock_python_packages=False,
    )
    image.system_packages(*SYSTEM_PACKAGES)
    image.python_packages(*pinned_requirements(root, ("gpu",) if cuda else ()), emoflow_wheel())
    if extra := no_deps_requirements(root):  # after the pinned stack, into the Bento's venv
        image.run(f"uv pip install --python /app/.venv/bin/python --no-deps {' '.join(extra)}")
    return image
