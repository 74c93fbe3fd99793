"""The detection found ahead of the faces loop (``faces.ahead``): the same faces as detecting
inline, the thread's work used where the schedule holds and thrown away where it does not."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import skimage.data

from emoflow.config import FacesParams
from emoflow.faces.ahead import Ahead
from emoflow.faces.footage import cut_away, faceless, pan, scene
from emoflow.faces.pipeline import ClipFaces, process_frames

FULL = {"frames": 8, "detect_scale": 1.0}


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut()[0:288, 80:368])


class _Counting(Ahead):
    """An ``Ahead`` that notes which detections the loop took from the thread."""

    used: list[int]

    def hog(self, i: int):  # type: ignore[no-untyped-def]
        got = super().hog(i)
        if got is not None:
            self.used.append(i)
        return got


class _Inline(Ahead):
    """What the loop did before: every detection inline."""

    def detect_at(self, i: int) -> None:
        return None


def _run(frames: list[np.ndarray], params: FacesParams, kind: type[Ahead],
         monkeypatch: pytest.MonkeyPatch) -> tuple[ClipFaces, list[int]]:  # fmt: skip
    used: list[int] = []
    cls = type("Probe", (kind,), {"used": used}) if kind is _Counting else kind
    monkeypatch.setattr("emoflow.faces.pipeline.Ahead", cls)
    return process_frames(frames, params), used


def _same(a: ClipFaces, b: ClipFaces) -> None:
    assert a.sources == b.sources and a.boxes == b.boxes and a.selected == b.selected
    assert a.points.keys() == b.points.keys()
    for i in a.points:
        np.testing.assert_array_equal(a.points[i], b.points[i])
    assert a.detector_calls == b.detector_calls and a.dropped == b.dropped
    for x, y in zip(a.chips, b.chips, strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_steady_track_takes_every_scheduled_detection_from_the_thread(
    portrait: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = list(pan(portrait, 30, step=3.0))
    ahead, used = _run(frames, FacesParams(**FULL), _Counting, monkeypatch)
    inline, _ = _run(frames, FacesParams(**FULL), _Inline, monkeypatch)
    _same(ahead, inline)
    assert ahead.detector_calls == {"hog": 6}
    assert used == [5, 10, 15, 20, 25]  # all but the first frame's, found ahead


def test_cuts_and_lost_faces_give_the_inline_faces(
    portrait: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The face jumps at frame 22 (the mirror image): the track is dropped and the face found
    there, so the detection due at 25 is thrown away and 27's used; after the cut to black at
    34 each next frame's HOG is found ahead; the face comes back at 44."""
    mirrored = np.ascontiguousarray(portrait[:, ::-1])
    frames = [*pan(portrait, 22), *cut_away(list(pan(mirrored, 12)), black=2, sky_frames=6),
              *pan(scene("coffee", (288, 288)), 2), *pan(portrait, 12)]  # fmt: skip
    ahead, used = _run(frames, FacesParams(**FULL), _Counting, monkeypatch)
    assert set(ahead.sources) == set(range(34)) | set(range(44, 56))
    assert ahead.dropped >= 2 and ahead.sources[22] == "hog"
    assert 25 not in used and {27, 32, 35, 36, 43}.issubset(used)
    for every in (5, 1, 3):
        params = FacesParams(**FULL, detect_every=every)
        ahead, _ = _run(frames, params, _Counting, monkeypatch)
        inline, _ = _run(frames, params, _Inline, monkeypatch)
        _same(ahead, inline)


def test_faceless_footage_detects_ahead_within_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = faceless(20, size=(320, 240))
    params = FacesParams(**FULL, fallback_every=60)
    ahead, used = _run(frames, params, _Counting, monkeypatch)
    inline, _ = _run(frames, params, _Inline, monkeypatch)
    _same(ahead, inline)
    assert not ahead.sources and used == list(range(1, 20))
    assert ahead.detector_calls == {"hog": 20, "hog_clahe": 1, "cnn": 1}


def test_a_decoding_error_reaches_the_loop_and_the_thread_stops(portrait: np.ndarray) -> None:
    def broken() -> Iterator[np.ndarray]:
        yield from pan(portrait, 7)
        raise ValueError("frame 7: corrupt")

    with pytest.raises(ValueError, match="frame 7"):
        process_frames(broken(), FacesParams(**FULL))
    made: list[Ahead] = []

    class Kept(Ahead):
        def __init__(self, *a, **k) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*a, **k)
            made.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("emoflow.faces.pipeline.Ahead", Kept)
        with pytest.raises(ValueError):
            process_frames(broken(), FacesParams(**FULL))
    assert made and made[0]._pool._shutdown  # closed on the way out


def test_the_window_holds_a_detection_interval_of_frames(portrait: np.ndarray) -> None:
    pulled: list[int] = []

    def source() -> Iterator[np.ndarray]:
        for k, f in enumerate(pan(portrait, 12)):
            pulled.append(k)
            yield f

    with Ahead(source(), depth=5, scale=1.0, upsample=0) as a:
        it = iter(a)
        assert next(it)[0] == 0 and pulled == list(range(6))  # frame 0 and five ahead
        a.detect_at(5)
        assert a.hog(5)  # HOG's candidates on frame 5, found in the thread
        a.detect_at(9)  # not pulled yet: started when it is
        assert [i for i, _ in it] == list(range(1, 12))
        assert a.hog(9) and a.hog(10) is None
