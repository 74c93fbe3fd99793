"""An uploaded video, saved under a name of our own in a private temp folder, and checked.

The client's file name only contributes its extension (from a fixed list): ``../../etc/x.mp4``
is saved as ``<tmp>/clip.mp4``. The folder goes when the request ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from starlette.datastructures import UploadFile

from emoflow.errors import InputError
from emoflow.media.video import LimitError, VideoInfo, demuxed_duration, probe
from emoserve.errors import Rejected
from emoserve.settings import VIDEO_EXTENSIONS

CHUNK = 1 << 20
ALLOWED_TYPES = ("video/", "application/octet-stream")


def client_extension(filename: str | None) -> str:
    """The lower-case extension of a client's file name, whatever its path syntax."""
    if not filename:
        return ""
    name = PureWindowsPath(PurePosixPath(filename).name).name
    return PurePosixPath(name).suffix.lower()


def check_declared(upload: UploadFile) -> str:
    """Refuse by name or declared type before reading: 415 for what cannot be a video."""
    ext = client_extension(upload.filename)
    if ext and ext not in VIDEO_EXTENSIONS:
        raise Rejected(415, "unsupported_type", f"{ext} files are not accepted: send one of "
                       f"{', '.join(VIDEO_EXTENSIONS)}")  # fmt: skip
    ctype = (upload.content_type or "").split(";")[0].strip().lower()
    if ctype and not ctype.startswith(ALLOWED_TYPES):
        raise Rejected(415, "unsupported_type",
                       f"content type {ctype} is not a video (video/*)")  # fmt: skip
    return ext or ".mp4"


@contextlib.asynccontextmanager
async def saved_upload(upload: UploadFile, limit: int) -> AsyncIterator[Path]:
    """The upload copied to ``<private tmp>/clip<ext>``; the folder is removed on exit."""
    ext = check_declared(upload)
    folder = Path(tempfile.mkdtemp(prefix="emoflow-upload-"))
    try:
        path = folder / f"clip{ext}"
        size = 0
        with path.open("wb") as f:
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > limit:  # the guard checks the request; this is the file itself
                    raise Rejected(413, "too_large", f"upload larger than the limit of "
                                   f"{limit / (1024 * 1024):g} MB")  # fmt: skip
                f.write(chunk)
        if size == 0:
            raise Rejected(422, "not_video", "the uploaded file is empty")
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_video(path: Path, max_duration_s: float, max_pixels: int) -> VideoInfo:
    """From the headers, before decoding: 415 for what is not a video, 422 for one longer or
    larger than the limits. (Decoding checks both again: headers can lie.)"""
    try:
        info = probe(path, max_pixels=max_pixels)
    except LimitError as exc:
        raise Rejected(422, "too_large_frames", exc.rule.replace(str(path), path.name)) from exc
    except InputError as exc:
        rule = exc.rule.replace(str(path), path.name)  # our temp path means nothing to a client
        raise Rejected(415, "not_video", f"not a video: {rule}") from exc
    try:
        duration = info.duration_s or demuxed_duration(path)
    except InputError as exc:
        raise Rejected(422, "corrupt", exc.rule.replace(str(path), path.name)) from exc
    if duration > max_duration_s:
        raise Rejected(422, "too_long", f"video is {duration:.1f} s long; the limit is "
                       f"{max_duration_s:g} s")  # fmt: skip
    if info.width <= 0 or info.height <= 0:
        raise Rejected(422, "corrupt", "video stream has no frame size")
    return info
