"""Reading and writing MP4 files (H.264 video, AAC audio) with PyAV."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from emoflow.errors import EmoflowError, InputError


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
    """What a video file holds, read from its streams; sizes as displayed (rotation applied)."""

    fps: float
    frames: int
    width: int
    height: int
    duration_s: float
    has_audio: bool
    sample_rate: int | None
    rotation: int = 0  # degrees counter-clockwise the display matrix turns the coded frames


def _open(path: str | Path) -> av.container.InputContainer:
    try:
        # Tags are free text from whatever wrote the file: undecodable bytes become U+FFFD
        # instead of failing the whole file.
        return av.open(str(path), metadata_errors="replace")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot open as a media file ({exc})") from exc


def _video_stream(container: av.container.InputContainer, path: str | Path
                  ) -> av.video.stream.VideoStream:  # fmt: skip
    """The first video stream; an audio-only file is an input error naming it."""
    if not container.streams.video:
        raise InputError(path, "no video stream")
    return container.streams.video[0]


def _rotation(frame: av.VideoFrame) -> int:
    """The display matrix's rotation in quarter turns' degrees (0, 90, 180, 270)."""
    return round((frame.rotation or 0) / 90) % 4 * 90


def _upright(frame: av.VideoFrame, fmt: str, reformatter: VideoReformatter | None = None
             ) -> np.ndarray:  # fmt: skip
    """The frame as a C-contiguous array, turned as the display matrix says (phones film
    portrait video as landscape frames plus a rotation). dlib refuses arrays with padded rows,
    which PyAV returns for widths its decoder aligns.

    A ``reformatter`` kept across the frames of a file keeps swscale's context (and its
    threads): ``to_ndarray`` makes a new one a frame, which cost the sample's 180-frame clip
    more wall time than decoding it (the pixels are the same, bit for bit)."""
    if reformatter is None:
        img = frame.to_ndarray(format=fmt)
    else:
        img = reformatter.reformat(frame, format=fmt).to_ndarray()
    k = _rotation(frame) // 90
    return np.ascontiguousarray(np.rot90(img, k) if k else img)


def probe(path: str | Path, max_pixels: int | None = None) -> VideoInfo:
    """Stream facts of a video file; frame count from the container (decode to be exact).

    The first frame is decoded for its display rotation, which only frames carry; a frame
    size over ``max_pixels`` is refused before that (LimitError)."""
    with _open(path) as container:
        vs = _video_stream(container, path)
        fps = float(vs.average_rate or vs.guessed_rate or 0)
        duration = float(vs.duration * vs.time_base) if vs.duration else 0.0
        frames = vs.frames or round(duration * fps)
        audio = container.streams.audio[0] if container.streams.audio else None
        width, height = vs.codec_context.width, vs.codec_context.height
        check_frame_size(path, width, height, max_pixels)
        rotation = _first_rotation(container, vs)
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            fps=fps,
            frames=int(frames),
            width=width,
            height=height,
            duration_s=duration,
            has_audio=audio is not None,
            sample_rate=audio.rate if audio is not None else None,
            rotation=rotation,
        )


def _first_rotation(container: av.container.InputContainer, vs: av.video.stream.VideoStream
                    ) -> int:  # fmt: skip
    try:
        for frame in container.decode(vs):
            return _rotation(frame)
    except av.error.FFmpegError:
        pass  # undecodable: the decode itself reports it where frames are read
    return 0


def demuxed_duration(path: str | Path) -> float:
    """The last video packet's end time, read without decoding (containers without a duration
    in their header)."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        end = 0.0
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.time_base is not None:
                    end = max(end, float((packet.pts + (packet.duration or 0))
                                         * packet.time_base))  # fmt: skip
        except av.error.FFmpegError as exc:
            raise InputError(path, f"video cannot be read ({exc})") from exc
        return end


def iter_frames(path: str | Path, rgb: bool = False) -> Iterator[np.ndarray]:
    """Decode every video frame of ``path`` as an upright BGR (or RGB) uint8 array."""
    yield from VideoFrames(path, rgb=rgb)


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds checked while decoding, so that work and memory follow the limits and not what a
    container's header claims."""

    max_seconds: float | None = None  # by the frames' own timestamps
    max_pixels: int | None = None  # width × height of any frame


class Cancelled(EmoflowError):
    """The caller stopped wanting the frames (its client left, or its deadline passed)."""


class LimitError(InputError):
    """A video beyond a ``DecodeLimits`` bound; ``limit`` names it (duration, pixels)."""

    def __init__(self, path: str | Path, rule: str, limit: str) -> None:
        super().__init__(path, rule)
        self.limit = limit

    def __reduce__(self) -> tuple:
        return (type(self), (self.path, self.rule, self.limit))


def check_frame_size(what: str | Path, width: int, height: int, max_pixels: int | None) -> None:
    """LimitError for frames larger than ``max_pixels``: checked before a frame is decoded."""
    if max_pixels is not None and width * height > max_pixels:
        raise LimitError(what, f"frames of {width}×{height} px are larger than the limit of "
                         f"{max_pixels / 1e6:g} megapixels", "pixels")  # fmt: skip


class VideoFrames:
    """The frames of one video, decoded in order, upright, with each frame's time.

    Iterating decodes the file once. ``at`` decodes chosen frames again later (seeking to the
    key frame before each), so a caller can drop frames instead of keeping a whole clip in
    memory. ``times[i]`` is frame i's presentation time in seconds (variable frame rates
    included), ``announced`` the frame count the container claims.
    """

    def __init__(self, path: str | Path, rgb: bool = True, limits: DecodeLimits | None = None,
                 stop: Callable[[], bool] | None = None, name: str | None = None
                 ) -> None:  # fmt: skip
        self.path = Path(path)
        self.name = name or str(path)
        self._fmt = "rgb24" if rgb else "bgr24"
        self.limits = limits or DecodeLimits()
        self._stop = stop
        self.times: list[float | None] = []
        self._pts: list[int | None] = []
        self._keys: list[bool] = []
        self.announced = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        self.times, self._pts, self._keys = [], [], []
        with self._open() as container:
            stream = _video_stream(container, self.name)
            self.announced = int(stream.frames or 0)
            stream.codec_context.thread_type = "AUTO"  # frame and slice threads: every core
            self._check_pixels(stream.codec_context.width, stream.codec_context.height)
            reformatter = VideoReformatter()
            first: float | None = None
            for frame in self._decode(container, stream):
                if self._stop is not None and self._stop():
                    raise Cancelled(f"{self.name}: decoding stopped by the caller")
                self._check_pixels(frame.width, frame.height)
                t = frame.time
                if t is not None:
                    first = t if first is None else first
                    t -= first
                    if self.limits.max_seconds is not None and t > self.limits.max_seconds:
                        raise LimitError(self.name, f"video is longer than the limit of "
                                         f"{self.limits.max_seconds:g} s (decoded past "
                                         f"{t:.1f} s)", "duration")  # fmt: skip
                self.times.append(t)
                self._pts.append(frame.pts)
                self._keys.append(bool(frame.key_frame))
                yield _upright(frame, self._fmt, reformatter)

    def at(self, indices: Iterable[int]) -> dict[int, np.ndarray]:
        """Frames ``indices`` (of the last iteration) decoded again; by timestamp where the
        file has distinct ones, else by decoding from the start."""
        wanted = sorted(set(indices))
        if not wanted:
            return {}
        if max(wanted) >= len(self._pts):
            raise IndexError(f"{self.name}: frame {max(wanted)} was never decoded")
        pts = self._pts
        if None in pts or len(set(pts)) != len(pts):
            return self._sequential(wanted)
        index_of = {p: i for i, p in enumerate(pts)}
        out: dict[int, np.ndarray] = {}
        with self._open() as container:
            stream = _video_stream(container, self.name)
            stream.codec_context.thread_type = "AUTO"
            reformatter = VideoReformatter()
            position = -1  # the index of the last frame decoded in this pass
            frames: Iterator[av.VideoFrame] | None = None
            for target in wanted:
                key = max(k for k in range(target + 1) if self._keys[k] or k == 0)
                if frames is None or not key <= position < target:
                    # Behind the target's key frame or past the target: seek to that key frame.
                    container.seek(pts[key], stream=stream, backward=True, any_frame=False)
                    frames = self._decode(container, stream)
                    position = -1
                for frame in frames:
                    position = index_of.get(frame.pts, -1)
                    if position == target:
                        out[target] = _upright(frame, self._fmt, reformatter)
                        break
                    if position > target:
                        break
                if target not in out:  # a seek that did not land where its timestamps say
                    return self._sequential(wanted)
        return out

    def _sequential(self, wanted: list[int]) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        with self._open() as container:
            stream = _video_stream(container, self.name)
            stream.codec_context.thread_type = "AUTO"
            reformatter = VideoReformatter()
            for i, frame in enumerate(self._decode(container, stream)):
                if i in wanted:
                    out[i] = _upright(frame, self._fmt, reformatter)
                if i >= wanted[-1]:
                    break
        return out

    def _open(self) -> av.container.InputContainer:
        try:
            return _open(self.path)
        except InputError as exc:  # a temp file's name means nothing to whoever sent the bytes
            raise InputError(self.name, exc.rule.replace(str(self.path), self.name)) from None

    def _check_pixels(self, width: int, height: int) -> None:
        check_frame_size(self.name, width, height, self.limits.max_pixels)

    def _decode(self, container: av.container.InputContainer,
                stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:  # fmt: skip
        try:
            yield from container.decode(stream)
        except av.error.FFmpegError as exc:
            raise InputError(self.name, f"video stream cannot be decoded ({exc})") from exc


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
