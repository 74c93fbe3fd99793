"""Helpers of the service tests: start/stop a real ``bentoml serve``, train a tiny model,
render clips from a photograph."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SERVICE_DIR = ROOT / "services" / "emotion"
API_KEY = "test-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    tmp: Path  # the server's TMPDIR: no request may leave a file here
    log: Path

    def client(self, key: str | None = API_KEY, timeout: float = 60.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)


@contextlib.contextmanager
def serve(root: Path, env: dict[str, str], ready_s: float = 120.0) -> Iterator[Server]:
    """``bentoml serve service:Emotion`` in its own process group, stopped by its PID."""
    port = free_port()
    tmp = root / "tmp"
    home = root / "bentoml"
    tmp.mkdir(parents=True, exist_ok=True)
    log = root / "serve.log"
    full_env = {**os.environ, "TMPDIR": str(tmp), "BENTOML_HOME": str(home),
                "BENTOML_DO_NOT_TRACK": "true", "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1", **env}  # fmt: skip
    bentoml = Path(sys.executable).with_name("bentoml")
    with log.open("wb") as out:
        cmd = [str(bentoml), "serve", "service:Emotion", "--host", "127.0.0.1", "--port", str(port)]
        proc = subprocess.Popen(cmd, cwd=SERVICE_DIR, env=full_env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited {proc.returncode}:\n"
                                   f"{log.read_text()[-3000:]}")  # fmt: skip
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready in {ready_s} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Server(url, proc, tmp, log)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (its workers), SIGKILL if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def train_tiny(arch: str, tiny_faces: Path, tiny_params: Path, out: Path) -> Path:
    """A tiny trained model folder; exported to ONNX when the release code can."""
    from emoflow.config import load_params
    from emoflow.training.trainer import train_model

    folder = train_model(arch, load_params(tiny_params), tiny_faces / "faces",
                         tiny_faces / "splits", out).model_file.parent  # fmt: skip
    from emoflow.release.export import export_model

    export_model(folder, tiny_faces / "faces", tiny_faces / "splits")  # `auto` serves ONNX
    return folder


def face_frames(n: int, size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    """The astronaut photograph drifting across a ``size`` frame (BGR): one real face."""
    import cv2
    import skimage.data

    w, h = size
    # The head and shoulders enlarged to the frame's height: a face big enough for HOG at the
    # faces stage's default detect_scale (0.5), as a webcam clip would show it.
    img = cv2.cvtColor(skimage.data.astronaut()[0:300, 100:400], cv2.COLOR_RGB2BGR)
    img = cv2.resize(img, (h, h))
    frames = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        x = 20 + (2 * i) % max(1, w - img.shape[1] - 20)
        f[: img.shape[0], x : x + img.shape[1]] = img
        frames.append(f)
    return frames


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    from emoflow.media.video import MediaWriter

    h, w = frames[0].shape[:2]
    with MediaWriter(path, fps=fps, width=w, height=h) as mw:
        for f in frames:
            mw.write_frame(f)
    return path
