"""A refused request: its HTTP status, a stable reason (metrics label) and a one-line message."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """What every refused request gets back."""

    error: str = Field(description="what was wrong, in one line")
    reason: str = Field(description="a stable code: unauthorized, too_large, too_long, "
                        "too_large_frames, too_large_image, unsupported_type, not_video, "
                        "not_image, corrupt, no_face, too_many_faces, invalid_request, "
                        "overloaded, timeout, internal")  # fmt: skip


class Rejected(Exception):  # a response to give, not a failure of the service
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message

    def body(self) -> ErrorBody:
        return ErrorBody(error=self.message, reason=self.reason)
