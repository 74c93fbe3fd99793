"""One compact file per clip of aligned faces: an uncompressed zip of JPEGs plus ``meta.json``.

A zip gives random access to any single frame (its central directory is an index), keeps a
clip to one file (DVC and file systems suffer from hundreds of thousands of small files), and
opens with any unzip tool. JPEGs are not recompressed by zip (``ZIP_STORED``). The JPEG round
trip lives here alone: inference passes its chips through ``as_stored`` so that the model sees
them as training read them.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from emoflow.errors import EmoflowError, InputError
from emoflow.fsio import atomic_path

SUFFIX = ".faces.zip"
META = "meta.json"


def frame_name(i: int) -> str:
    return f"{i:05d}.jpg"


def write_face_clip(path: Path, faces: list[np.ndarray], meta: dict[str, Any],
                    quality: int = 95) -> None:  # fmt: skip
    """Write RGB (or grayscale) face images and their metadata atomically."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for i, face in enumerate(faces):
            z.writestr(_entry(frame_name(i)), encode_jpeg(face, quality, f"face {i} of {path}"))
        z.writestr(_entry(META), json.dumps({**meta, "count": len(faces)}, indent=1))


def encode_jpeg(face: np.ndarray, quality: int, what: str = "a face chip") -> bytes:
    """An RGB (or grayscale) image as the JPEG bytes a face file stores."""
    img = face if face.ndim == 2 else cv2.cvtColor(face, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise EmoflowError(f"cannot encode {what} as JPEG")
    return buf.tobytes()


def decode_jpeg(data: bytes, grayscale: bool = False) -> np.ndarray:
    """A stored face as the datasets read it: RGB uint8, or OpenCV's luma for grayscale."""
    buf = np.frombuffer(data, np.uint8)
    if grayscale:
        return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def as_stored(chip: np.ndarray, quality: int, grayscale: bool) -> np.ndarray:
    """A chip as written to a face file and read back by the datasets (JPEG, then RGB or gray)."""
    return decode_jpeg(encode_jpeg(chip, quality), grayscale)


def _entry(name: str) -> zipfile.ZipInfo:
    # A fixed time stamp: the same faces give the same bytes, so DVC sees no change.
    return zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))


class FaceClip:
    """Read access to one clip's faces; a frame decodes on demand (RGB uint8)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
            self.meta: dict[str, Any] = json.loads(self._zip.read(META))
        except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise InputError(self.path, f"not a face clip ({exc})") from exc

    def __len__(self) -> int:
        return int(self.meta["count"])

    def frame(self, i: int, grayscale: bool = False) -> np.ndarray:
        return decode_jpeg(self._zip.read(frame_name(i)), grayscale)

    def frames(self, grayscale: bool = False) -> list[np.ndarray]:
        return [self.frame(i, grayscale) for i in range(len(self))]

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> FaceClip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
