"""Per-clip media checks: the video decodes to the end, and an audio track is there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emoflow.errors import InputError
from emoflow.media.video import iter_frames, probe, read_audio


@dataclass(frozen=True)
class ClipCheck:
    """What decoding one clip found; an error is ``None`` when that part is fine."""

    decoded_frames: int | None
    video_error: str | None
    audio_error: str | None


def check_clip(path: Path) -> ClipCheck:
    """Decode every frame and the audio of ``path``.

    A file that cannot be opened at all is reported once, as a video error, so that a
    text file named ``.mp4`` is one failure and not two.
    """
    if not path.is_file():
        return ClipCheck(None, f"{path}: clip file not found", None)
    try:
        info = probe(path)
    except InputError as exc:
        return ClipCheck(None, str(exc), None)
    decoded = 0
    video_error = None
    try:
        for _ in iter_frames(path):
            decoded += 1
    except InputError as exc:
        video_error = f"{exc} after {decoded} frames"
    if decoded == 0 and video_error is None:
        video_error = f"{path}: video stream holds no frames"
    return ClipCheck(decoded, video_error, _audio_error(path, info.has_audio))


def _audio_error(path: Path, has_audio: bool) -> str | None:
    if not has_audio:
        return f"{path}: no audio stream"
    try:
        samples, _ = read_audio(path)
    except InputError as exc:
        return str(exc)
    return None if samples.size else f"{path}: audio stream holds no samples"
