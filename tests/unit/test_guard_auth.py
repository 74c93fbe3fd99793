"""The service's front door (``emoserve.guard.Guard``) on its own, over ASGI: the Bearer scheme
is case-insensitive (RFC 9110 §11.1), the key is not, and the API's documentation (the UI at
``/``, its schema and static files) needs no key. tests/service checks the same on a real server.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

# The service's package lives beside its service.py, not in src/ (bentoml serves that folder).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services" / "emotion"))
from emoserve.guard import Guard

KEY = "s3cret-0123"


async def _echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.url.path)


APP = Guard(Starlette(routes=[Route("/{path:path}", _echo)]), api_key=KEY,
            max_upload_bytes=1 << 20)  # fmt: skip


def _status(path: str, authorization: str | None = None) -> int:
    async def call() -> int:
        headers = {"authorization": authorization} if authorization is not None else {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP),
                                     base_url="http://svc") as client:  # fmt: skip
            return (await client.get(path, headers=headers)).status_code

    return anyio.run(call)


@pytest.mark.parametrize(("authorization", "status"), [
    (f"Bearer {KEY}", 200), (f"bearer {KEY}", 200), (f"BEARER {KEY}", 200),
    (f"Bearer  {KEY}", 200),  # more than one space (RFC 9110: 1*SP)
    (None, 401), ("", 401), (KEY, 401), (f"Basic {KEY}", 401), (f"Bearer {KEY.upper()}", 401),
    (f"Bearer {KEY}x", 401), (f"Bearer{KEY}", 401), ("Bearer", 401),
])  # fmt: skip
def test_the_scheme_is_case_insensitive_the_key_is_not(authorization: str | None,
                                                       status: int) -> None:  # fmt: skip
    assert _status("/info", authorization) == status


@pytest.mark.parametrize(("path", "status"), [
    ("/", 200), ("/docs.json", 200), ("/docs", 200), ("/openapi.json", 200),
    ("/static_content/swagger-initializer.js", 200), ("/livez", 200), ("/metrics", 200),
    ("/info", 401), ("/predict", 401), ("/static_content/../info", 401), ("/docs.json/x", 401),
])  # fmt: skip
def test_documentation_and_probes_need_no_key_the_api_does(path: str, status: int) -> None:
    assert _status(path) == status
