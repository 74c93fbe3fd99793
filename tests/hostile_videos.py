"""Videos as phones, odd tools and hostile clients make them, generated for the tests.

Real photographs (scikit-image's astronaut, matplotlib's Grace Hopper) drift across the frame;
the file's quirk is what each builder adds: an odd size, a display rotation, variable frame
timing, undecodable metadata bytes, a cut-off tail, a header that lies about the duration.
Nothing here is committed as a file.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import imageio_ffmpeg
import numpy as np
import skimage.data
from matplotlib import cbook


def astronaut(size: tuple[int, int]) -> np.ndarray:
    """The astronaut's head and shoulders, RGB, at ``size`` (w, h)."""
    return cv2.resize(skimage.data.astronaut()[0:300, 80:480], size)


def framed(size: tuple[int, int]) -> np.ndarray:
    """The astronaut's face, undistorted, filling most of a grey ``size`` (w, h) frame:
    portrait or landscape."""
    w, h = size
    side = min(w, h) * 9 // 10
    face = cv2.resize(skimage.data.astronaut()[10:250, 120:360], (side, side))
    canvas = np.full((h, w, 3), 110, np.uint8)
    y, x = (h - side) // 2, (w - side) // 2
    canvas[y : y + side, x : x + side] = face
    return canvas


def hopper(size: tuple[int, int]) -> np.ndarray:
    img = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)[60:420, 80:440], size)


def drifting(image: np.ndarray, n: int, step: int = 2) -> list[np.ndarray]:
    return [np.roll(image, step * i, axis=1) for i in range(n)]


def write_video(path: Path, frames: Sequence[np.ndarray], fps: int = 30,
                times_ms: Sequence[int] | None = None, rotation: int = 0,
                options: dict[str, str] | None = None) -> Path:  # fmt: skip
    """H.264 MP4 of RGB ``frames``; ``times_ms`` gives each frame's time (variable frame
    rate), ``rotation`` a display matrix (degrees counter-clockwise), ``options`` the muxer's
    (``{"movflags": "faststart"}`` puts the index first)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", format="mp4", options=options or {}) as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "superfast", "g": str(fps)}
        base = Fraction(1, 1000) if times_ms is not None else Fraction(1, fps)
        s.codec_context.time_base = base
        if rotation:
            s.set_display_rotation(rotation)
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            f.pts, f.time_base = (times_ms[i] if times_ms is not None else i), base
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    return path


def remux(src: Path, dst: Path, *args: str | bytes) -> Path:
    """``ffmpeg -i src <args> -c copy dst`` (the ffmpeg binary of imageio-ffmpeg)."""
    cmd: list[str | bytes] = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y",
                              "-i", str(src), *args, "-c", "copy", str(dst)]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=120)
    return dst


def with_raw_title(src: Path, dst: Path, title: bytes = b"caf\xff\xfe clip") -> Path:
    """A copy whose title tag holds bytes that are not UTF-8."""
    return remux(src, dst, b"-metadata", b"title=" + title)


def truncated(src: Path, dst: Path, share: float = 0.3) -> Path:
    """The first ``share`` of the file's bytes (an upload cut off; index first or not)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * share)])
    return dst


def lying_duration(src: Path, dst: Path, seconds: float = 1.0) -> Path:
    """A copy of an MP4 whose headers (mvhd, tkhd, mdhd) claim ``seconds``; the samples and
    their timestamps are untouched, so a decoder still plays the whole clip."""
    data = bytearray(src.read_bytes())
    for box in (b"mvhd", b"mdhd"):
        at = data.find(box)
        if data[at + 4] == 0:  # version 0: 32-bit times; timescale, then duration
            scale = struct.unpack(">I", data[at + 16 : at + 20])[0]
            data[at + 20 : at + 24] = struct.pack(">I", int(seconds * scale))
    at = data.find(b"tkhd")
    if data[at + 4] == 0:  # version 0: duration after creation, modification, track id, 0
        mvhd = data.find(b"mvhd")
        scale = struct.unpack(">I", data[mvhd + 16 : mvhd + 20])[0]
        data[at + 24 : at + 28] = struct.pack(">I", int(seconds * scale))
    dst.write_bytes(bytes(data))
    return dst
