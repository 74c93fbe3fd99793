"""The inference core: a video → the faces stage's own code → the model → a clip result.

Every consumer (``emoflow predict``, the BentoML service, ``promote``, the benchmarks) goes
through :class:`Predictor`; the preprocessing is the one recorded in the model folder.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emoflow.artifact import ModelSpec, read_spec
from emoflow.errors import EmoflowError, InputError
from emoflow.faces.align import landmark_box
from emoflow.faces.pipeline import ClipFaces, process_frames
from emoflow.faces.store import FaceClip, as_stored
from emoflow.inference.availability import check_backend
from emoflow.inference.backends import Backend, open_backend
from emoflow.inference.graph import expression_inputs, frame_inputs
from emoflow.inference.schema import ClipResult, FrameResult, ModelRef, Timings
from emoflow.media.prefetch import Prefetch
from emoflow.media.video import DecodeLimits, VideoFrames, probe

log = logging.getLogger(__name__)

VideoInput = str | Path | bytes | Sequence[np.ndarray]


class NoFaceError(EmoflowError):
    """The clip has too few frames with a face to be classified (as the faces stage rules)."""

    def __init__(self, what: str, found: int, decoded: int, needed: int) -> None:
        self.what, self.found, self.decoded, self.needed = what, found, decoded, needed
        super().__init__(f"no usable face in {what}: face in {found} of {decoded} frames "
                         f"(faces.min_face_frames: {needed})")  # fmt: skip

    def __reduce__(self) -> tuple:
        return (type(self), (self.what, self.found, self.decoded, self.needed))


class Predictor:
    """A model folder behind a backend; see ``from_dir`` / ``from_uri``."""

    batch_size = 16  # clips per model call in predict_face_batches

    def __init__(self, spec: ModelSpec, backend: Backend, ref: ModelRef) -> None:
        self.spec = spec
        self._backend = backend
        self.ref = ref

    @classmethod
    def from_dir(cls, folder: Path | str, backend: str = "auto", *, name: str | None = None,
                 version: str | None = None, alias: str | None = None,
                 threads: int | None = None) -> Predictor:  # fmt: skip
        check_backend(backend)  # before the model: a wrong backend is the thing to report
        spec = read_spec(Path(folder))
        impl = open_backend(backend, spec, threads)
        ref = ModelRef(name=name or spec.arch, version=version, alias=alias, backend=impl.name)
        log.info("predictor: %s (%s) from %s on %s (%s)", ref.name, spec.arch, folder, impl.name,
                 impl.reason)  # fmt: skip
        return cls(spec, impl, ref)

    @classmethod
    def from_uri(cls, uri: str, backend: str = "auto") -> Predictor:
        """A registered version (``models:/emoflow-fan@champion``, ``models:/emoflow-fan/3``),
        downloaded through MLflow (``MLFLOW_TRACKING_URI``, default ``sqlite:///mlflow.db``)."""
        from emoflow.tracking.registry import fetch

        check_backend(backend)
        got = fetch(uri)
        return cls.from_dir(got.folder, backend, name=got.name, version=got.version,
                            alias=got.alias)  # fmt: skip

    @property
    def classes(self) -> list[str]:
        return self.spec.classes

    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def backend_reason(self) -> str:
        """Why this backend serves (``auto``'s choice, or the one asked for), as
        ``open_backend`` decided it."""
        return self._backend.reason

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.spec.preprocessing.model_dump()

    def info(self) -> dict[str, Any]:
        return {"model": self.ref.model_dump(), "arch": self.spec.arch, "classes": self.classes,
                "image_size": self.spec.image_size, "grayscale": self.spec.grayscale,
                "preprocessing": self.preprocessing, "folder": str(self.spec.folder),
                "providers": getattr(self._backend, "providers", None),
                "backend_reason": self.backend_reason}  # fmt: skip

    # -- predictions ---------------------------------------------------------------------------

    def predict_video(self, video: VideoInput, fps: float | None = None,
                      name: str | None = None) -> ClipResult:  # fmt: skip
        """Decode, find and align faces (the faces stage's code and recorded params), classify.

        ``video``: a path, the bytes of a video file, or decoded RGB uint8 frames (then ``fps``
        gives the frames' times). Raises InputError for what is not a readable video and
        NoFaceError when too few frames hold a face.
        """
        found = find_faces(self.spec, video, fps, name)
        return found.result(self.predict_faces(found.chips))

    def predict_faces(self, chips: Sequence[np.ndarray]) -> ClipResult:
        """One clip of aligned face chips (RGB uint8, or grayscale as read from a face file)."""
        return self.predict_face_batches([chips])[0]

    def predict_face_batches(self, clips: Sequence[Sequence[np.ndarray]]) -> list[ClipResult]:
        """Several clips' chips, ``batch_size`` clips per model call (padded and masked)."""
        out: list[ClipResult] = []
        for start in range(0, len(clips), self.batch_size):
            chunk = [list(c) for c in clips[start : start + self.batch_size]]
            for i, c in enumerate(chunk):
                if not c:
                    raise EmoflowError(f"clip {start + i} has no face chips")
            t0 = time.perf_counter()
            expression = expression_inputs(chunk, self.spec)
            t1 = time.perf_counter()
            probs, weights = self._backend.run(*frame_inputs(chunk, self.spec), *expression)
            t2 = time.perf_counter()
            ex = 1e3 * (t1 - t0) / len(chunk) if expression else 0.0
            ms = 1e3 * (t2 - t1) / len(chunk)
            for row, (chips, p) in enumerate(zip(chunk, probs, strict=True)):
                frames = [FrameResult(index=i, weight=float(weights[row, i]))
                          for i in range(len(chips))]  # fmt: skip
                out.append(self._result(p, frames, len(chips), len(chips),
                                        Timings(expression=ex, model=ms, total=ex + ms)))
        return out

    def predict_face_files(self, paths: Iterable[Path]) -> list[ClipResult]:
        """Clips from face files (``emoflow faces`` output), read exactly as evaluation reads
        them: what ``promote`` scores a model with."""
        clips = []
        for p in paths:
            with FaceClip(p) as fc:
                clips.append(fc.frames(grayscale=self.spec.grayscale))
        return self.predict_face_batches(clips)

    def _result(self, probs: np.ndarray, frames: list[FrameResult], found: int, decoded: int,
                timings: Timings) -> ClipResult:  # fmt: skip
        top = int(np.argmax(probs))
        return ClipResult(label=self.classes[top], confidence=float(probs[top]),
                          probabilities={c: float(v) for c, v in zip(self.classes, probs,
                                                                      strict=True)},
                          frames=frames, faces_found=found, frames_decoded=decoded,
                          model=self.ref, timings_ms=timings)  # fmt: skip


@dataclass
class FoundFaces:
    """The faces half of ``predict_video``: chips as the model reads them and where they were.

    The service finds faces in its CPU workers and scores the chips in its model service."""

    what: str
    chips: list[np.ndarray]
    frames: list[FrameResult]  # the selected frames' index, time, box, detector (no weight yet)
    faces_found: int
    frames_decoded: int
    timings: Timings  # decode and faces
    faces_seen: int = 1
    warnings: list[str] = field(default_factory=list)
    parts: dict[str, float] = field(default_factory=dict)  # ms per faces part (pipeline.PARTS)

    def result(self, scored: ClipResult) -> ClipResult:
        """The model's result on ``chips``, with the frames' places and all the timings."""
        frames = [f.model_copy(update={"weight": s.weight})
                  for f, s in zip(self.frames, scored.frames, strict=True)]  # fmt: skip
        t, m = self.timings, scored.timings_ms
        timings = Timings(decode=t.decode, faces=t.faces, expression=m.expression, model=m.model,
                          total=t.decode + t.faces + m.expression + m.model)  # fmt: skip
        return scored.model_copy(update={"frames": frames, "faces_found": self.faces_found,
                                         "frames_decoded": self.frames_decoded,
                                         "faces_seen": self.faces_seen,
                                         "face_choice": FACE_CHOICE,
                                         "warnings": [*self.warnings, *scored.warnings],
                                         "timings_ms": timings})  # fmt: skip


# How the pipeline chooses among several faces (``faces.detect.pick``): said in every result.
FACE_CHOICE = "largest"
TRUNCATED_SHARE = 0.9  # fewer decoded frames than this share of the announced count: a warning


def find_faces(spec: ModelSpec, video: VideoInput, fps: float | None = None,
               name: str | None = None, limits: DecodeLimits | None = None,
               stop: Callable[[], bool] | None = None, prefetch: bool = False
               ) -> FoundFaces:  # fmt: skip
    """Decode ``video`` and find, align and select its faces with ``spec``'s preprocessing.

    ``prefetch`` decodes a file in a thread a few frames ahead (``media.prefetch``); off by
    default: FFmpeg's own frame threads already decode on the other core, and on the shared
    2-core machine the thread cost ~10 % more CPU with no wall time saved (bench/infer.py
    measures both).

    ``limits`` bound what decoding may cost (duration by the frames' timestamps, frame size);
    ``stop`` is asked before each frame and ends the work with ``Cancelled``. Raises InputError
    for what is not a readable video or breaks a limit, NoFaceError for too few faces."""
    t0 = time.perf_counter()
    pre = spec.preprocessing
    with _decoded(video, fps, name, limits, stop) as (frames, rate, what):
        # With prefetch, a file decodes in a thread, a few frames ahead of the faces work.
        source = Prefetch(frames) if prefetch and isinstance(frames, VideoFrames) else frames
        timed = _Timed(source)  # the time the faces work waited for frames
        try:
            faces = process_frames(timed, pre)
        finally:
            if isinstance(source, Prefetch):
                source.close()
        times = getattr(frames, "times", None)
        announced = getattr(frames, "announced", 0)
    t1 = time.perf_counter()
    if faces.frames_decoded == 0:
        raise InputError(what, "no video frame could be decoded")
    if faces.face_frames < pre.min_face_frames:
        raise NoFaceError(what, faces.face_frames, faces.frames_decoded, pre.min_face_frames)
    # The model learnt from chips as the faces stage stores them: JPEG at its quality.
    chips = [as_stored(c, pre.jpeg_quality, spec.grayscale) for c in faces.chips]

    def time_of(i: int) -> float | None:
        if times is not None and i < len(times) and times[i] is not None:
            return times[i]  # the frame's own timestamp: right for variable frame rates
        return i / rate if rate else None

    frames_out = [FrameResult(index=i, time_s=time_of(i), box=_box(faces, i),
                              detector=faces.sources.get(i), weight=0.0)
                  for i in faces.selected]  # fmt: skip
    warnings = []
    if announced and faces.frames_decoded < TRUNCATED_SHARE * announced:
        warnings.append(f"decoded {faces.frames_decoded} of the {announced} frames the "
                        "container announces: the file looks truncated")  # fmt: skip
    if faces.faces_seen > 1:
        warnings.append(f"{faces.faces_seen} faces in view: the {FACE_CHOICE} one was "
                        "analysed, and followed while it stayed")  # fmt: skip
    timings = Timings(decode=1e3 * timed.seconds, faces=1e3 * (t1 - t0 - timed.seconds))
    parts = {k: 1e3 * v for k, v in faces.seconds.items()}
    return FoundFaces(what, chips, frames_out, faces.face_frames, faces.frames_decoded, timings,
                      faces_seen=max(faces.faces_seen, 1), warnings=warnings,
                      parts=parts)  # fmt: skip


def _box(faces: ClipFaces, i: int) -> tuple[float, float, float, float]:
    """The frame's face box: the pipeline's own when it keeps them, else the landmarks' box."""
    boxes = getattr(faces, "boxes", None)
    b = boxes.get(i) if boxes else None
    if b is None:
        b = landmark_box(faces.points[i])
    if hasattr(b, "left"):
        return (float(b.left), float(b.top), float(b.right), float(b.bottom))
    x0, y0, x1, y1 = b
    return (float(x0), float(y0), float(x1), float(y1))


class _Timed:
    """An iterator that adds up the time spent producing items (decoding, here)."""

    def __init__(self, items: Iterable[np.ndarray]) -> None:
        self._it = iter(items)
        self.seconds = 0.0
        self.at = getattr(items, "at", None)  # a re-readable source stays re-readable

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        t = time.perf_counter()
        try:
            return next(self._it)
        finally:
            self.seconds += time.perf_counter() - t


@contextmanager
def _decoded(video: VideoInput, fps: float | None, name: str | None,
             limits: DecodeLimits | None = None, stop: Callable[[], bool] | None = None,
             ) -> Iterator[tuple[Iterable[np.ndarray], float | None, str]]:  # fmt: skip
    """RGB frames of ``video`` (a ``VideoFrames`` for files), its frame rate and a name."""
    if isinstance(video, (str, Path)):
        what = name or str(video)
        info = probe(video)  # InputError: not a media file / no video stream
        yield VideoFrames(video, limits=limits, stop=stop, name=what), fps or info.fps or None, what
        return
    if isinstance(video, (bytes, bytearray, memoryview)):
        if not len(video):
            raise InputError(name or "<upload>", "empty file")
        with tempfile.NamedTemporaryFile(suffix=Path(name or "clip.mp4").suffix or ".mp4") as f:
            f.write(video)
            f.flush()
            what = name or "<upload>"
            try:
                info = probe(f.name)
            except InputError as exc:
                raise InputError(what, exc.rule) from None
            yield (VideoFrames(f.name, limits=limits, stop=stop, name=what),
                   fps or info.fps or None, what)  # fmt: skip
        return
    frames = list(video)
    for k, f in enumerate(frames):
        if not (isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.ndim == 3
                and f.shape[2] == 3):  # fmt: skip
            raise InputError(name or "<frames>", "frames must be RGB uint8 (H, W, 3) arrays",
                             f"frame {k}")  # fmt: skip
    yield frames, fps, name or "<frames>"
