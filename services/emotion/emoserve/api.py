"""The public API's request handling: uploads → the core's faces → the model service → a result.

Pure functions of their inputs and the served model, so ``service.py`` stays wiring.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from emoflow.artifact import ModelSpec
from emoflow.errors import InputError
from emoflow.inference import NoFaceError
from emoflow.inference.predictor import FoundFaces, find_faces
from emoflow.media.video import DecodeLimits, LimitError
from emoserve.errors import ErrorBody, Rejected
from emoserve.upload import check_video

IMAGE_TYPES = ("image/jpeg", "image/png", "image/bmp", "image/webp")
MAX_FACE_PIXELS = 2048 * 2048

ERROR_RESPONSES: dict[int | str, dict] = {
    400: {"model": ErrorBody, "description": "malformed request (reason invalid_request)"},
    401: {"model": ErrorBody, "description": "missing or wrong API key"},
    413: {"model": ErrorBody, "description": "upload larger than the limit"},
    415: {"model": ErrorBody, "description": "not a video / not an image"},
    422: {"model": ErrorBody, "description": "too long, frames too large, corrupt, or no "
          "usable face"},
    500: {"model": ErrorBody, "description": "a fault of the service (reason internal)"},
    503: {"model": ErrorBody, "description": "model service overloaded (reason overloaded)"},
    504: {"model": ErrorBody, "description": "the clip took longer than the service's "
          "time limit to analyse (reason timeout)"},
}
FEEDBACK_RESPONSES: dict[int | str, dict] = {
    400: ERROR_RESPONSES[400], 401: ERROR_RESPONSES[401],
    404: {"model": ErrorBody, "description": "no kept prediction with this id "
          "(reason unknown_prediction)"},
    409: {"model": ErrorBody, "description": "the service keeps no predictions "
          "(reason capture_off)"},
    422: {"model": ErrorBody, "description": "a label the model does not have "
          "(reason unknown_label)"},
    503: {"model": ErrorBody, "description": "the capture store cannot be reached "
          "(reason store_unavailable)"},
}


class ModelInfo(BaseModel):
    name: str
    version: str
    alias: str | None
    tag: str = Field(description="BentoML model store tag of the served files")
    backend: str
    backend_reason: str
    loaded_at: float = Field(description="Unix time the served version was loaded")


class Info(BaseModel):
    """``GET /info``: what is served and with which settings."""

    model: ModelInfo
    arch: str
    classes: list[str]
    image_size: int
    grayscale: bool
    preprocessing: dict
    source: str = Field(description="models:/… URI, a model folder, or the store tag")
    reload_s: float
    batching: bool
    limits: dict[str, float]


def faces_of_video(spec: ModelSpec, path: Path, max_duration_s: float, max_pixels: int,
                   stop: Callable[[], bool] | None = None) -> FoundFaces:  # fmt: skip
    """Check the video, then find and align its faces as the model was trained; decoding stops
    at the limits (whatever the headers said) and when ``stop`` says so."""
    check_video(path, max_duration_s, max_pixels)
    limits = DecodeLimits(max_seconds=max_duration_s, max_pixels=max_pixels)
    try:
        return find_faces(spec, path, name="upload", limits=limits, stop=stop)
    except NoFaceError as exc:
        raise Rejected(422, "no_face", str(exc)) from exc
    except LimitError as exc:
        reason = "too_long" if exc.limit == "duration" else "too_large_frames"
        raise Rejected(422, reason, exc.rule) from exc
    except InputError as exc:
        raise Rejected(422, "corrupt", f"video cannot be decoded: {exc.rule}") from exc


def _declared_size(name: str, data: bytes) -> tuple[int, int]:
    """An image's width and height as its header declares them (nothing is decoded)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Image.DecompressionBombError as exc:
        raise Rejected(422, "too_large_image", f"{name}: larger than a face crop may be "
                       f"({exc})") from exc  # fmt: skip
    except (OSError, ValueError, SyntaxError) as exc:  # what PIL raises for what it cannot read
        raise Rejected(415, "not_image", f"{name}: not a JPEG/PNG image") from exc


async def read_face_uploads(files: list[UploadFile], spec: ModelSpec, max_faces: int,
                            limit: int) -> list[np.ndarray]:  # fmt: skip
    """Face crops from image parts, or from one zip of images (a face file of ``emoflow faces``)."""
    blobs: list[tuple[str, bytes]] = []
    for f in files:
        data = await f.read(limit + 1)
        name = f.filename or "face"
        if zipfile.is_zipfile(io.BytesIO(data)):
            blobs.extend(_zip_members(data, name, max_faces, limit))
        else:
            ctype = (f.content_type or "").split(";")[0].strip().lower()
            if ctype and not (ctype in IMAGE_TYPES or ctype == "application/octet-stream"):
                raise Rejected(415, "unsupported_type", f"{ctype} is not an image or a zip")
            blobs.append((name, data))
        if len(blobs) > max_faces:
            raise Rejected(422, "too_many_faces", f"more than {max_faces} face crops")
    if not blobs:
        raise Rejected(422, "no_face", "no face crops in the request")
    return [_decode_face(name, data, spec.grayscale, spec.image_size) for name, data in blobs]


def _zip_members(data: bytes, name: str, max_faces: int, limit: int) -> list[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = [i for i in z.infolist() if not i.is_dir()
                       and i.filename.lower().endswith((".jpg", ".jpeg", ".png"))]  # fmt: skip
            if len(members) > max_faces:
                raise Rejected(422, "too_many_faces", f"{name}: more than {max_faces} images")
            if sum(i.file_size for i in members) > 4 * limit:  # a zip bomb stops here
                raise Rejected(413, "too_large", f"{name}: images too large once unpacked")
            # Read in memory, in name order (frame order); nothing is extracted to disk.
            return [(i.filename, z.read(i)) for i in sorted(members, key=lambda i: i.filename)]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise Rejected(422, "corrupt", f"{name}: unreadable zip ({exc})") from exc


def _decode_face(name: str, data: bytes, grayscale: bool, size: int) -> np.ndarray:
    """The crop at the model's input size, as the datasets resize (``to_uint8``): memory stays
    that of one decoded image, however many crops a request holds."""
    # The size from the header first: a small PNG can declare 30000×30000 pixels (2.7 GB).
    w, h = _declared_size(name, data)
    if w * h > MAX_FACE_PIXELS:
        raise Rejected(422, "too_large_image", f"{name}: {w}×{h} is larger than a face crop "
                       "may be")  # fmt: skip
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None:
        raise Rejected(415, "not_image", f"{name}: not a JPEG/PNG image")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY if grayscale else cv2.COLOR_BGR2RGB)
    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


