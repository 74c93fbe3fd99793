"""The next scheduled detection, found in a thread while the faces loop tracks up to it.

The loop in ``pipeline.process_frames`` is a chain: a tracked frame's box comes from the previous
frame's landmarks, and dlib's landmark predictor holds the GIL, so the chain runs on one core.
HOG on the frame where the next detection is due (``detect_every`` frames after the last one,
while the track holds) does not depend on it: it runs here, on the other core, while the loop
tracks the frames before it (dlib's HOG and OpenCV's resize release the GIL). The candidates are
the inline call's own (the same function on the same frame), so the faces found do not change; a
detection the loop does not use (the track was dropped before it) is thrown away.

Only HOG goes to the thread: sending each frame's thumbnail there too was slower than computing
it inline (the per-frame hand-offs wait on the GIL, which the landmark predictor holds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from emoflow.faces.detect import Box, hog_candidates


class Ahead:
    """The frames of ``frames``, pulled ``depth`` frames ahead of the loop, so that
    ``detect_at(i)`` can run HOG (``scale``, ``upsample``) on frame ``i`` before the loop is
    there.

    Use as a context manager: leaving it stops the thread and drops what it had not done."""

    def __init__(self, frames: Iterable[np.ndarray], depth: int, scale: float,
                 upsample: int) -> None:  # fmt: skip
        self._source = iter(frames)
        self._depth = max(depth, 1)
        self._scale, self._upsample = scale, upsample
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="emoflow-faces-ahead")
        self._window: deque[tuple[int, np.ndarray]] = deque()
        self._pulled = 0  # frames taken from the source
        self._hog: dict[int, Future[list[tuple[Box, float]]]] = {}
        self._wanted: int | None = None  # a detection asked for a frame not pulled yet
        self._done = False

    def __enter__(self) -> Ahead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._window.clear()
        self._hog.clear()

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, frame)`` in order."""
        while True:
            self._fill()
            if not self._window:
                return
            yield self._window.popleft()

    def _fill(self) -> None:
        while not self._done and len(self._window) <= self._depth:
            try:
                rgb = next(self._source)
            except StopIteration:
                self._done = True
                return
            i = self._pulled
            self._pulled += 1
            self._window.append((i, rgb))
            if i == self._wanted:
                self._wanted = None
                self._submit(i, rgb)

    def detect_at(self, i: int) -> None:
        """Start HOG on frame ``i`` (a later frame) now, or when it is pulled."""
        if i in self._hog or i == self._wanted:
            return
        for j in [j for j in self._hog if j < i]:  # detections the loop went past unused
            self._hog.pop(j).cancel()
        for j, rgb in self._window:
            if j == i:
                self._submit(i, rgb)
                return
        if i >= self._pulled:
            self._wanted = i

    def hog(self, i: int) -> list[tuple[Box, float]] | None:
        """HOG's candidates on frame ``i`` (on the downscaled frame, as ``detect`` takes them) if
        they were asked for ahead, else ``None``: the loop detects inline."""
        if i == self._wanted:
            self._wanted = None
        job = self._hog.pop(i, None)
        return None if job is None else job.result()

    def _submit(self, i: int, rgb: np.ndarray) -> None:
        self._hog[i] = self._pool.submit(hog_candidates, rgb, self._scale, self._upsample)
