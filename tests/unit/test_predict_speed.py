"""Issue 21, predict's speed: the timing breakdown, the decoder's conversion, selection on one
thread, the decode thread and the parallel ``predict`` (logic, not timings)."""

from __future__ import annotations

import time

import cv2
import numpy as np
import skimage.data

from emoflow.config import FacesParams
from emoflow.faces.pipeline import PARTS, process_frames
from emoflow.inference.schema import Timings


def _face_frames(n: int, step: int = 2) -> list[np.ndarray]:
    """A real photograph moving a little: the astronaut's face, ~150 px wide, in 640×480."""
    img = cv2.resize(skimage.data.astronaut()[0:300, 80:480], (640, 480))
    return [np.roll(img, step * i, axis=1) for i in range(n)]


def test_the_pipeline_times_each_of_its_parts() -> None:
    frames = _face_frames(20)
    t0 = time.perf_counter()
    r = process_frames(frames, FacesParams(frames=4))
    wall = time.perf_counter() - t0
    assert len(r.points) == 20 and len(r.selected) == 4
    assert set(r.seconds) == set(PARTS)
    assert all(r.seconds[k] > 0 for k in PARTS), r.seconds
    assert sum(r.seconds.values()) <= wall


def test_timings_name_the_extractor_apart_from_the_model() -> None:
    t = Timings(decode=1, faces=2, expression=3, model=4, total=10)
    assert t.model_dump() == {"decode": 1, "faces": 2, "expression": 3, "model": 4, "total": 10}
    assert Timings().expression == 0.0  # an older answer without it still reads
