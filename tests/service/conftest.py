"""Fixtures of the service tests: a real ``bentoml serve`` of services/emotion on 127.0.0.1
with a tiny trained model, and real clips rendered from a photograph."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from svc_helpers import API_KEY, Server, face_frames, serve, train_tiny, write_clip


@pytest.fixture(scope="session")
def tiny_fan(tiny_faces: Path, tiny_params: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> Path:  # fmt: skip
    return train_tiny("fan", tiny_faces, tiny_params, tmp_path_factory.mktemp("models") / "fan")


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """face: 2 s with a face; blank: 2 s without; long: 4 s (over the tests' 3 s limit)."""
    d = tmp_path_factory.mktemp("clips")
    blank = [np.full((240, 320, 3), 90, np.uint8)] * 20
    small = [np.full((64, 64, 3), 90, np.uint8)] * 40
    return {"face": write_clip(d / "face.mp4", face_frames(20)),
            "blank": write_clip(d / "blank.mp4", blank),
            "long": write_clip(d / "long.mp4", small)}  # fmt: skip


@pytest.fixture(scope="session")
def face_crops(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """JPEG crops of the astronaut's face (what a client that aligns faces itself sends)."""
    import cv2
    import skimage.data

    img = cv2.cvtColor(skimage.data.astronaut()[30:250, 150:350], cv2.COLOR_RGB2BGR)
    out = []
    for i in range(6):
        m = np.float32([[1, 0, i - 3], [0, 1, 3 - i]])
        crop = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT)
        out.append(cv2.imencode(".jpg", cv2.resize(crop, (96, 96)))[1].tobytes())
    return out


@pytest.fixture(scope="session")
def server(tiny_fan: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serve")
    env = {"EMOFLOW_MODEL_DIR": str(tiny_fan), "EMOFLOW_API_KEY": API_KEY,
           "EMOFLOW_MAX_UPLOAD_MB": "1", "EMOFLOW_MAX_DURATION_S": "3",
           "EMOFLOW_MAX_MEGAPIXELS": "1",
           "EMOFLOW_CPU_WORKERS": "2"}  # fmt: skip
    with serve(root, env) as s:
        yield s
