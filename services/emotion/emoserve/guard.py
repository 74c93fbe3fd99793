"""The front door: API key and upload size, checked before a request body is read.

An ASGI middleware, so it sees every path of the entry service (BentoML's own routes and the
mounted API alike) and can refuse a 50 MB upload from its headers instead of after parsing it.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from emoserve import metrics

log = logging.getLogger("emoflow.service")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Probes and scrapers carry no key: health and metrics stay open. So does the API's
# documentation (BentoML's UI at / loads /docs.json and /static_content/; FastAPI's /docs and
# /openapi.json are the same schema), as most APIs do: it holds no data, and without it the UI
# cannot even load to let a user enter the key (docs/service.md).
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics",
                        "/", "/docs.json", "/docs", "/openapi.json"})  # fmt: skip
OPEN_PREFIXES = ("/static_content/",)


async def send_error(send: Send, status: int, reason: str, message: str,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:  # fmt: skip
    """A JSON ``{"error", "reason"}`` response: the one error shape the API documents."""
    body = json.dumps({"error": message, "reason": reason}).encode()
    head = [(b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """``Authorization: Bearer <key>`` (constant-time compare) and the upload limit.

    The limit holds whatever the headers say: a declared length over it is refused at once,
    a request with both a length and chunked encoding is refused (RFC 9112 §6.3: it smuggles
    one past the other), and the body is counted as it streams in, so a chunked or lying
    request is cut off at the limit instead of read to its end."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_upload_bytes: int) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.limit = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        docs = path.startswith(OPEN_PREFIXES) and ".." not in path  # no way out of the folder
        if scope["type"] != "http" or path in OPEN_PATHS or docs:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.key is not None:
            # The scheme is case-insensitive (RFC 9110 §11.1): "bearer <key>" is as good.
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            # compare_digest takes as long whatever prefix matches: no timing oracle on the key.
            if not (hmac.compare_digest(token.strip(b" "), self.key)
                    and scheme.lower() == b"bearer"):  # fmt: skip
                metrics.rejected("unauthorized")
                await send_error(send, 401, "unauthorized",
                                 "missing or wrong API key (Authorization: Bearer <key>)",
                                 [(b"www-authenticate", b"Bearer")])  # fmt: skip
                return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            length = headers.get(b"content-length")
            if length is not None and b"transfer-encoding" in headers:
                metrics.rejected("invalid_request")
                await send_error(send, 400, "invalid_request", "Content-Length and "
                                 "Transfer-Encoding together are not allowed",
                                 [(b"connection", b"close")])  # fmt: skip
                return
            if length is not None and (not length.isdigit() or int(length) > self.limit):
                await self._too_large(send)
                return
            await self._counted(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app with a body that stops at the limit. Past it, reading raises, and whatever
        the app answers then (frameworks turn a failed read into a 400) becomes the 413."""
        size = 0
        over = False
        answered = False

        async def counting_receive() -> Message:
            nonlocal size, over
            message = await receive()
            size += len(message.get("body", b""))
            if size > self.limit:
                over = True
                raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if over:
                if message["type"] == "http.response.start" and not answered:
                    answered = True
                    await self._too_large(send)
                return  # the app's own answer to the failed read is dropped
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_TooLarge):  # the app let the failed read through
            await self.app(scope, counting_receive, guarded_send)
        if over and not answered:
            await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        metrics.rejected("too_large")
        mb = self.limit / (1024 * 1024)
        await send_error(send, 413, "too_large", f"upload larger than the limit of {mb:g} MB",
                         [(b"connection", b"close")])  # fmt: skip


class _TooLarge(Exception):
    """Raised from the body channel past the limit; the guard turns it into a 413."""
