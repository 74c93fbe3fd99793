"""Reading and writing MP4 files (H.264 video, AAC audio) with PyAV."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from emoflow.errors import InputError


class MediaWriter:
    """Write BGR frames and mono float audio into one MP4, interleaved as they arrive.

    Audio is written up to the time of the last video frame so the muxer never buffers the
    whole file.
    """

    def __init__(
        self,
        path: str | Path,
        fps: int,
        width: int,
        height: int,
        sample_rate: int | None = None,
        crf: int = 23,
        preset: str = "superfast",
    ) -> None:
        self.path = Path(path)
        self.fps = fps
        # Deterministic output: no creation time in the container, one encoder thread order.
        self._container = av.open(str(self.path), mode="w", format="mp4")
        self._video = self._container.add_stream("libx264", rate=fps)
        self._video.width = width
        self._video.height = height
        self._video.pix_fmt = "yuv420p"
        self._video.options = {"crf": str(crf), "preset": preset, "g": str(fps)}
        self._audio = None
        self._audio_pts = 0
        if sample_rate:
            self._audio = self._container.add_stream("aac", rate=sample_rate, layout="mono")
            self._audio.bit_rate = 128_000
        self._frames = 0

    def write_frame(self, bgr: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
        frame.pts = self._frames
        frame.time_base = Fraction(1, self.fps)
        self._container.mux(self._video.encode(frame))
        self._frames += 1

    def write_audio(self, samples: np.ndarray) -> None:
        """Append mono float samples in [-1, 1]."""
        if self._audio is None:
            raise ValueError("writer was opened without audio")
        if samples.size == 0:
            return
        data = np.clip(samples, -1.0, 1.0).astype(np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout="mono")
        frame.sample_rate = self._audio.rate
        frame.pts = self._audio_pts
        frame.time_base = Fraction(1, self._audio.rate)
        self._audio_pts += data.shape[1]
        self._container.mux(self._audio.encode(frame))

    def close(self) -> None:
        self._container.mux(self._video.encode(None))
        if self._audio is not None:
            self._container.mux(self._audio.encode(None))
        self._container.close()

    def __enter__(self) -> MediaWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._container.close()


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, read from its streams."""

    fps: float
    frames: int
    width: int
    height: int
    duration_s: float
    has_audio: bool
    sample_rate: int | None


def _open(path: str | Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(path, f"cannot open as a media file ({exc})") from exc


def _video_stream(container: av.container.InputContainer, path: str | Path
                  ) -> av.video.stream.VideoStream:  # fmt: skip
    """The first video stream; an audio-only file is an input error naming it."""
    if not container.streams.video:
        raise InputError(path, "no video stream")
    return container.streams.video[0]


def probe(path: str | Path) -> VideoInfo:
    """Stream facts of a video file; frame count from the container (decode to be exact)."""
    with _open(path) as container:
        vs = _video_stream(container, path)
        fps = float(vs.average_rate or vs.guessed_rate or 0)
        duration = float(vs.duration * vs.time_base) if vs.duration else 0.0
        frames = vs.frames or round(duration * fps)
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            fps=fps,
            frames=int(frames),
            width=vs.codec_context.width,
            height=vs.codec_context.height,
            duration_s=duration,
            has_audio=audio is not None,
            sample_rate=audio.rate if audio is not None else None,
        )


def iter_frames(path: str | Path, rgb: bool = False) -> Iterator[np.ndarray]:
    """Decode every video frame of ``path`` as a BGR (or RGB) uint8 array."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24" if rgb else "bgr24")
        except av.error.FFmpegError as exc:
            raise InputError(path, f"video stream cannot be decoded ({exc})") from exc


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream as mono float32 samples and its sample rate.

    Samples are placed by their timestamps so that time 0 of the array is time 0 of the file
    (the AAC encoder's priming samples are dropped by the decoder via the edit list).
    """
    with _open(path) as container:
        if not container.streams.audio:
            raise InputError(path, "no audio stream")
        stream = container.streams.audio[0]
        rate = stream.rate
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)
        chunks: list[np.ndarray] = []
        first_time: float | None = None
        try:
            for frame in container.decode(stream):
                if first_time is None and frame.time is not None:
                    first_time = frame.time
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray()[0])
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray()[0])
        except av.error.FFmpegError as exc:
            raise InputError(path, f"audio stream cannot be decoded ({exc})") from exc
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    lead = round((first_time or 0.0) * rate)
    if lead > 0:
        samples = np.concatenate([np.zeros(lead, np.float32), samples])
    elif lead < 0:
        samples = samples[-lead:]
    return samples.astype(np.float32, copy=False), rate
