"""Which failures are worth a retry: a registry or storage call that may pass a minute later.

A retry must never hide a real error: bad data, a failing gate, a missing file or a wrong
parameter fail at once. Only network trouble, timeouts, a busy database and the HTTP statuses a
server uses for "try again" count as transient.
"""

from __future__ import annotations

import errno

# OSError numbers of a connection that failed on the way, not of a wrong path or permission.
_TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT,
                     errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EPIPE,
                     errno.EAGAIN}  # fmt: skip
_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
# MLflow's error codes for a server that is busy or briefly away.
_TRANSIENT_MLFLOW = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED",
                     "ABORTED", "INTERNAL_ERROR"}  # fmt: skip
# Words of drivers and HTTP clients that mean the same when no type or code says it.
_TRANSIENT_WORDS = ("database is locked", "connection reset", "connection refused",
                    "timed out", "temporarily unavailable", "too many requests",
                    "max retries exceeded", "remote end closed connection")  # fmt: skip


def is_transient(exc: BaseException | None) -> bool:
    """True when ``exc`` (or an exception it was raised from) looks like a passing outage."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if _transient_one(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _transient_one(exc: BaseException) -> bool:
    from emoflow.errors import EmoflowError

    if isinstance(exc, EmoflowError):
        return False  # the user's input or a gate: the same next time
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    status = _http_status(exc)
    if status is not None:
        return status in _TRANSIENT_HTTP
    code = getattr(exc, "error_code", None)
    if isinstance(code, str) and code in _TRANSIENT_MLFLOW:
        return True
    text = str(exc).lower()
    return any(w in text for w in _TRANSIENT_WORDS)


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of a requests/httpx/MLflow/Kubernetes-client error, when it has one."""
    response = getattr(exc, "response", None)
    for holder, attr in ((response, "status_code"), (exc, "status_code"), (exc, "status")):
        status = getattr(holder, attr, None)
        if isinstance(status, int) and not isinstance(status, bool):
            return status
    return None
