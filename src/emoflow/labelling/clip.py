"""Decode a whole trial clip into memory once (a 6 s clip is ~180 frames) for instant seeking."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emoflow.errors import InputError

DEFAULT_FPS = 30.0


@dataclass(frozen=True)
class Clip:
    frames: list[np.ndarray]  # BGR, as OpenCV draws and shows them
    fps: float

    @property
    def frame_count(self) -> int:
        return len(self.frames)


def load_clip(path: str | Path) -> Clip:
    # Imported here, after cv2: PyAV's wheel bundles libxcb-shm/-shape/-xfixes under the same
    # file names as opencv-python's but linked to its own libxcb; loaded first, they make the Qt
    # window hang in cv2.namedWindow.
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(path, "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.base_rate
            frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
    except (av.FFmpegError, OSError) as exc:
        raise InputError(path, f"cannot decode video ({exc})") from exc
    if not frames:
        raise InputError(path, "video has no frames")
    return Clip(frames=frames, fps=float(rate) if rate else DEFAULT_FPS)
