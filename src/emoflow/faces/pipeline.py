"""Faces of one clip: detect, track, landmark, select frames, align only the selected ones.

Two settings of the same code: the *naive* loop (full-resolution detection on every frame,
a chip for every frame) and the *fast* pipeline (detection on a downscaled frame every
``detect_every`` frames with landmark tracking in between, chips only for selected frames).
``bench/faces.py`` runs both on the same clips. In both, HOG on the frame where the next
detection is due runs in a thread while the loop tracks up to it (``faces.ahead``).

Tracking (``track_points``): by default the chips' 68 points run on every face frame, carry the
track and K-means clusters their shapes (the thesis's loop). With ``track_points: 5`` dlib's 5-point
predictor follows the face instead (0.4 ms a frame against 0.75–1.8 ms for the 68-point one,
which is memory-bound: its 65 MB of leaf values do not stay in cache), K-means clusters the face
patches the track already checks (appearance, so expression, not only pose) and the 68 points run
on the selected frames only: other frames are chosen, so a model is trained with one or the other.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from emoflow.config import FacesParams
from emoflow.faces.ahead import Ahead
from emoflow.faces.align import box_from_landmarks, box_relation, chip, landmarks, shape_points
from emoflow.faces.budget import FallbackBudget
from emoflow.faces.confirm import PATCH, cut_distance, face_patch, similarity, thumbnail
from emoflow.faces.detect import Box, detect
from emoflow.faces.select import patch_features, select_frames, shape_features
from emoflow.media.video import VideoFrames


@dataclass
class ClipFaces:
    """What the pipeline found in one clip."""

    frames_decoded: int = 0
    # frame → the chips' landmarks (k, 2): every face frame when they also track (track_points
    # = landmarks), else the selected frames (and every face frame with chip_every_frame)
    points: dict[int, np.ndarray] = field(default_factory=dict)
    sources: dict[int, str] = field(default_factory=dict)  # face frame → detector or "tracked"
    # frame → the face box given to the landmark predictor, (x0, y0, x1, y1) in frame pixels
    boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)
    selected: list[int] = field(default_factory=list)
    chips: list[np.ndarray] = field(default_factory=list)  # aligned faces of ``selected``
    detector_calls: Counter[str] = field(default_factory=Counter)  # detector → times it ran
    dropped: int = 0  # tracked boxes refused (scene cut or the face no longer there)
    faces_seen: int = 0  # the most faces one detection saw (the pipeline follows one: see pick)
    # seconds spent per part (PARTS), for the benchmarks' breakdown of where a clip's time goes
    seconds: Counter[str] = field(default_factory=Counter)

    @property
    def counts(self) -> Counter[str]:
        return Counter(self.sources.values())

    @property
    def face_frames(self) -> int:
        """Frames with a face (detected or tracked)."""
        return len(self.sources)


# The parts of the pipeline's time in ``ClipFaces.seconds``: the cut and patch checks that keep
# a track, detection, the landmark predictors, K-means selection, re-reading and aligning chips.
PARTS = ("track", "detect", "landmarks", "select", "chips")


@contextmanager
def _timed(seconds: Counter[str], part: str) -> Iterator[None]:
    t = time.perf_counter()
    try:
        yield
    finally:
        seconds[part] += time.perf_counter() - t


def naive_params(params: FacesParams) -> FacesParams:
    """The straightforward loop: full-resolution detection, the whole chain, on every frame."""
    return params.model_copy(update={"detect_scale": 1.0, "detect_every": 1, "fallback_every": 1,
                                     "track_points": params.landmarks})  # fmt: skip


# Frames with a face are kept for their chips up to this many bytes; past it, a source that can
# decode frames again (``VideoFrames.at``) gives the chosen ones back, so a long clip costs no
# more memory than a short one.
FRAME_BUDGET_BYTES = 256 * 1024 * 1024


class Rereadable(Protocol):
    def __iter__(self) -> Iterator[np.ndarray]: ...

    def at(self, indices: Iterable[int]) -> dict[int, np.ndarray]: ...


def process_clip(path: Path, params: FacesParams, peak: int | None = None,
                 chip_every_frame: bool = False) -> ClipFaces:  # fmt: skip
    """Decode ``path`` and return its landmarks, selected frames and their chips."""
    return process_frames(VideoFrames(path, rgb=True), params, peak, chip_every_frame)


def process_frames(rgb_frames: Iterable[np.ndarray] | Rereadable, params: FacesParams,
                   peak: int | None = None, chip_every_frame: bool = False,
                   budget_bytes: int = FRAME_BUDGET_BYTES) -> ClipFaces:  # fmt: skip
    """The pipeline over RGB frames (a decoded video, or a folder of images).

    Memory: frames with a face are kept for their chips while they fit ``budget_bytes``; a
    source with ``at`` (a video file) is asked again for the chosen frames beyond that."""
    out = ClipFaces()
    frames = _FrameCache(budget_bytes, rereadable=callable(getattr(rgb_frames, "at", None)))
    full = params.track_points == params.landmarks  # the chips' predictor tracks: every frame
    shapes = {}  # frame → the chips' dlib shape (every face frame when ``full``)
    last_points = np.zeros((0, 2), np.float32)  # the tracking predictor's, previous frame
    patches: dict[int, np.ndarray] = {}  # frame → its face patch (selection's features)
    previous: Box | None = None
    relation: tuple[float, float, float, float] | None = None
    reference = np.zeros((0, 0), np.float32)  # the last detection's face patch
    last_thumb: np.ndarray | None = None
    budget = FallbackBudget(params.detect_every, params.fallback_every)
    since_detection = params.detect_every
    # The next due detection runs a few frames ahead of the loop, in a thread (faces.ahead).
    with Ahead(rgb_frames, params.detect_every, params.detect_scale, params.upsample) as ahead:
        for i, rgb in ahead:
            out.frames_decoded += 1
            t0 = time.perf_counter()
            thumb = thumbnail(rgb)
            cut = last_thumb is not None and cut_distance(last_thumb, thumb) > params.cut_threshold
            last_thumb = thumb
            box: Box | None = None
            source = "tracked"
            dropped = False
            patch = reference
            if (previous is not None and relation is not None
                    and since_detection < params.detect_every):  # fmt: skip
                if not cut:
                    box = box_from_landmarks(last_points, relation)
                    patch = face_patch(rgb, box)
                    if similarity(patch, reference) < params.track_similarity:
                        box = None  # the box no longer holds the face it was detected on
                dropped = box is None  # a dropped track: detect on this very frame
                out.dropped += dropped
            if cut:
                previous = None  # nothing carries over a scene cut
            t1 = time.perf_counter()
            out.seconds["track"] += t1 - t0
            if box is not None:
                since_detection += 1
            else:
                ran: list[str] = []
                det = detect(rgb, params.detect_scale, params.upsample,
                             params.clahe_fallback and budget.allows("hog_clahe", i, dropped),
                             params.cnn_fallback and budget.allows("cnn", i, dropped), previous,
                             ran, hog=ahead.hog(i))  # fmt: skip
                budget.ran(ran, i)
                if det is not None:
                    box, source = det.box, det.detector
                    out.faces_seen = max(out.faces_seen, det.faces)
                    reference = patch = face_patch(rgb, box)
                    since_detection = 1
                    ahead.detect_at(i + params.detect_every)  # due then, if the track holds
                out.seconds["detect"] += time.perf_counter() - t1
            if box is None:
                previous = None  # lost: the next frame detects again
                ahead.detect_at(i + 1)
                continue
            budget.face(i)
            with _timed(out.seconds, "landmarks"):
                shape = landmarks(rgb, box, params.track_points)
                pts = shape_points(shape)
            if source != "tracked":
                relation = box_relation(box, pts)
            last_points, out.sources[i] = pts, source
            out.boxes[i] = (box.left, box.top, box.right, box.bottom)
            previous = box
            if full:
                shapes[i], out.points[i] = shape, pts
            else:  # (a detection at the frame's edge can leave no patch: a flat one stands in)
                patches[i] = patch if patch.size else np.zeros((PATCH, PATCH), np.float32)
            frames.add(i, rgb)
    out.detector_calls = budget.calls
    ids = sorted(out.sources)
    if not ids:
        return out
    with _timed(out.seconds, "select"):
        if full:
            feats = shape_features(np.stack([out.points[i] for i in ids]))
        else:
            feats = patch_features(np.stack([patches[i] for i in ids]))
        out.selected = select_frames(feats, ids, params.frames, peak, params.seed)
    # Aligning is the last per-frame cost: only the frames that were kept.
    with _timed(out.seconds, "chips"):
        keep = ids if chip_every_frame else out.selected
        kept = frames.get(keep)
        if len(kept) < len(keep):
            kept.update(rgb_frames.at(set(keep) - set(kept)))  # type: ignore[union-attr]
    with _timed(out.seconds, "landmarks"):
        for i in keep:
            if i not in shapes:  # the chips' predictor, on the frame's tracked or detected box
                shapes[i] = landmarks(kept[i], Box(*out.boxes[i]), params.landmarks)
                out.points[i] = shape_points(shapes[i])
    with _timed(out.seconds, "chips"):
        chips = {i: chip(kept[i], shapes[i], params.size, params.padding) for i in keep}
        out.chips = [chips[i] for i in out.selected]
    return out


class _FrameCache:
    """Frames by index up to a byte budget; past it, a re-readable source's frames are dropped
    (all of them: which ones selection keeps is known only at the end)."""

    def __init__(self, budget_bytes: int, rereadable: bool) -> None:
        self._frames: dict[int, np.ndarray] = {}
        self._bytes = 0
        self._budget = budget_bytes
        self._rereadable = rereadable
        self.dropped = False

    def add(self, i: int, rgb: np.ndarray) -> None:
        if self.dropped:
            return
        self._frames[i] = rgb
        self._bytes += rgb.nbytes
        if self._rereadable and self._bytes > self._budget:
            self._frames.clear()
            self.dropped = True

    def get(self, indices: Iterable[int]) -> dict[int, np.ndarray]:
        return {i: self._frames[i] for i in indices if i in self._frames}
