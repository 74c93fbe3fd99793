"""The video containers emoflow takes, named once (by extension, without the dot)."""

from __future__ import annotations

# What the service accepts and the client uploads, with the MIME type the client sends.
MIME_TYPES: dict[str, str] = {"mp4": "video/mp4", "avi": "video/x-msvideo",
                              "mov": "video/quicktime", "mkv": "video/x-matroska",
                              "webm": "video/webm"}  # fmt: skip
# Session recordings (`emoflow segment`) and datasets (`emoflow import`): all but WebM.
VIDEO_EXTS: tuple[str, ...] = tuple(e for e in MIME_TYPES if e != "webm")


def dotted(exts: tuple[str, ...] | dict[str, str]) -> tuple[str, ...]:
    """``("mp4", …)`` → ``(".mp4", …)``: how ``Path.suffix`` spells them."""
    return tuple(f".{e}" for e in exts)
