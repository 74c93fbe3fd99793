"""The public API's request handling: uploads → the core's faces → the model service → a result.

Pure functions of their inputs and the served model, so ``service.py`` stays wiring.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from emoflow.errors import InputError
from emoflow.inference import NoFaceError
from emoflow.inference.model_dir import ModelSpec
from emoflow.inference.predictor import FoundFaces, find_faces
from emoserve.errors import ErrorBody, Rejected
from emoserve.upload import check_video

IMAGE_TYPES = ("image/jpeg", "image/png", "image/bmp", "image/webp")
MAX_FACE_PIXELS = 2048 * 2048

ERROR_RESPONSES: dict[int | str, dict] = {
    400: {"model": ErrorBody, "description": "malformed request (reason invalid_request)"},
    401: {"model": ErrorBody, "description": "missing or wrong API key"},
    413: {"model": ErrorBody, "description": "upload larger than the limit"},
    415: {"model": ErrorBody, "description": "not a video / not an image"},
    422: {"model": ErrorBody, "description": "too long, corrupt, or no usable face"},
    503: {"model": ErrorBody, "description": "model service overloaded (reason overloaded)"},
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


def faces_of_video(spec: ModelSpec, path: Path, max_duration_s: float) -> FoundFaces:
    """Check the video, then find and align its faces as the model was trained."""
    check_video(path, max_duration_s)
    try:
        return find_faces(spec, path, name="upload")
    except NoFaceError as exc:
        raise Rejected(422, "no_face", str(exc)) from exc
    except InputError as exc:
        raise Rejected(422, "corrupt", f"video cannot be decoded: {exc.rule}") from exc


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
    return [_decode_face(name, data, spec.grayscale) for name, data in blobs]


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


def _decode_face(name: str, data: bytes, grayscale: bool) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None:
        raise Rejected(415, "not_image", f"{name}: not a JPEG/PNG image")
    if img.shape[0] * img.shape[1] > MAX_FACE_PIXELS:
        raise Rejected(422, "too_large_image", f"{name}: {img.shape[1]}×{img.shape[0]} is "
                       "larger than a face crop may be")  # fmt: skip
    if grayscale:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


