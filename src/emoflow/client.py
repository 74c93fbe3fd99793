"""A small client of the emotion service: ``predict("clip.mp4")`` → the typed ClipResult.

    from emoflow.client import predict
    r = predict("clip.mp4", url="http://127.0.0.1:3000", api_key="...")
    print(r.label, r.confidence)

``url`` and ``api_key`` default to ``EMOFLOW_URL`` and ``EMOFLOW_API_KEY``. A refused request
raises :class:`ServiceError` with the service's status, reason and message.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import httpx

from emoflow.errors import EmoflowError
from emoflow.inference.schema import ClipResult
from emoflow.media.formats import MIME_TYPES, dotted

DEFAULT_URL = "http://127.0.0.1:3000"
VIDEO_TYPES = dict(zip(dotted(MIME_TYPES), MIME_TYPES.values(), strict=True))


class ServiceError(EmoflowError):
    """The service refused a request (4xx) or failed (5xx)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status, self.reason = status, reason
        super().__init__(f"service answered {status} ({reason}): {message}")


class Client:
    """One HTTP connection pool to the service; use as a context manager or call close()."""

    def __init__(self, url: str | None = None, api_key: str | None = None,
                 timeout: float = 120.0) -> None:  # fmt: skip
        key = api_key if api_key is not None else os.environ.get("EMOFLOW_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=url or os.environ.get("EMOFLOW_URL", DEFAULT_URL),
                                  headers=headers, timeout=timeout)  # fmt: skip

    def predict(self, video: str | Path) -> ClipResult:
        path = Path(video)
        ctype = VIDEO_TYPES.get(path.suffix.lower(), "application/octet-stream")
        with path.open("rb") as f:
            r = self._http.post("/predict", files={"video": (path.name, f, ctype)})
        return _result(r)

    def predict_faces(self, images: Sequence[str | Path]) -> ClipResult:
        """Aligned face crops (JPEG/PNG files) of one clip, or one face-file zip."""
        files = []
        for p in map(Path, images):
            ctype = "application/zip" if p.suffix == ".zip" else "image/" + (
                "png" if p.suffix.lower() == ".png" else "jpeg")  # fmt: skip
            files.append(("faces", (p.name, p.read_bytes(), ctype)))
        return _result(self._http.post("/predict_faces", files=files))

    def info(self) -> dict:
        r = self._http.get("/info")
        _raise_for(r)
        return r.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def predict(video: str | Path, url: str | None = None, api_key: str | None = None,
            timeout: float = 120.0) -> ClipResult:  # fmt: skip
    """The emotion of one video clip, from the service at ``url``."""
    with Client(url, api_key, timeout) as c:
        return c.predict(video)


def _raise_for(r: httpx.Response) -> None:
    if r.is_success:
        return
    try:
        body = r.json()
        reason, message = body.get("reason", "error"), body.get("error", r.text)
    except (ValueError, AttributeError):
        reason, message = "error", r.text[:200]
    raise ServiceError(r.status_code, reason, message)


def _result(r: httpx.Response) -> ClipResult:
    _raise_for(r)
    return ClipResult.model_validate(r.json())
