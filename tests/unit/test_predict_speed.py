"""Issue 21, predict's speed: the timing breakdown, the decoder's conversion, selection on one
thread, the decode thread and the parallel ``predict`` (logic, not timings)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import skimage.data

from emoflow.artifact import ModelSpec
from emoflow.config import FacesParams
from emoflow.faces.pipeline import PARTS, process_frames
from emoflow.inference.schema import Timings
from emoflow.media.video import MediaWriter, VideoFrames


def _face_frames(n: int, step: int = 2) -> list[np.ndarray]:
    """A real photograph moving a little: the astronaut's face, ~150 px wide, in 640×480."""
    img = cv2.resize(skimage.data.astronaut()[0:300, 80:480], (640, 480))
    return [np.roll(img, step * i, axis=1) for i in range(n)]


def test_the_pipeline_times_each_of_its_parts() -> None:
    frames = _face_frames(20)
    t0 = time.perf_counter()
    r = process_frames(frames, FacesParams(frames=4))
    wall = time.perf_counter() - t0
    assert r.face_frames == 20 and len(r.selected) == 4
    assert set(r.seconds) == set(PARTS)
    assert all(r.seconds[k] > 0 for k in PARTS), r.seconds
    assert sum(r.seconds.values()) <= wall


def test_timings_name_the_extractor_apart_from_the_model() -> None:
    t = Timings(decode=1, faces=2, expression=3, model=4, total=10)
    assert t.model_dump() == {"decode": 1, "faces": 2, "expression": 3, "model": 4, "total": 10}
    assert Timings().expression == 0.0  # an older answer without it still reads


def _write(path: Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    h, w = frames[0].shape[:2]
    with MediaWriter(path, fps, w, h) as mw:
        for f in frames:
            mw.write_frame(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return path


def test_one_reformatter_per_file_gives_to_ndarrays_pixels(tmp_path: Path) -> None:
    """The kept swscale context changes the cost, not one pixel (so not the faces either)."""
    clip = _write(tmp_path / "c.mp4", _face_frames(12, step=7))
    with av.open(str(clip)) as container:
        expected = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    vf = VideoFrames(clip)
    got = list(vf)
    assert len(got) == len(expected) == 12
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    again = vf.at([3, 10])  # re-reads go through their own reformatter: the same pixels
    assert np.array_equal(again[3], expected[3]) and np.array_equal(again[10], expected[10])


def test_selection_on_one_thread_is_the_selection_on_all_and_scoped() -> None:
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_info

    from emoflow.faces.select import select_frames, shape_features

    rng = np.random.default_rng(1)
    feats = shape_features(rng.random((150, 68, 2)).cumsum(0))
    before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"]
    chosen = select_frames(feats, list(range(150)), 12, None)
    assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"] == before
    km = KMeans(n_clusters=12, n_init=4, random_state=0).fit(feats)  # every thread
    dist = np.linalg.norm(feats - km.cluster_centers_[km.labels_], axis=1)
    expected = sorted(int(min(np.flatnonzero(km.labels_ == c), key=lambda r: dist[r]))
                      for c in range(12))  # fmt: skip
    assert chosen == expected


class _Source:
    """Numbers 0..n-1 that note how far the producer ran ahead of the consumer."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at
        self.produced = 0
        self.consumed = 0
        self.most_ahead = 0
        self.at = "the source's own"

    def __iter__(self) -> Iterator[int]:
        for i in range(self.n):
            if i == self.fail_at:
                raise ValueError(f"frame {i} cannot be decoded")
            self.produced += 1
            self.most_ahead = max(self.most_ahead, self.produced - self.consumed)
            yield i


def test_prefetch_keeps_order_and_bounds_what_it_decodes_ahead() -> None:
    from emoflow.media.prefetch import Prefetch

    src = _Source(500)
    pf = Prefetch(src, depth=4)
    got = []
    for x in pf:
        got.append(x)
        src.consumed += 1
    assert got == list(range(500))
    assert src.most_ahead <= 4 + 2  # the queue, the item in hand, the one being put
    assert pf.at == "the source's own"  # re-reads and times stay the source's


def test_prefetch_raises_the_decoders_error_in_the_consumer() -> None:
    from emoflow.media.prefetch import Prefetch

    got = []
    with pytest.raises(ValueError, match="frame 7 cannot be decoded"):
        for x in Prefetch(_Source(20, fail_at=7), depth=2):
            got.append(x)
    assert got == list(range(7))


def test_leaving_early_stops_the_decode_thread() -> None:
    import threading

    from emoflow.media.prefetch import Prefetch

    pf = Prefetch(_Source(10_000), depth=2)
    for x in pf:
        if x == 3:
            break
    pf.close()
    assert not [t for t in threading.enumerate() if t.name == "emoflow-decode"]


def _spec(folder: Path, faces: FacesParams) -> ModelSpec:
    """A real model folder (an untrained Deep-Emotion): what find_faces reads from it is the
    recorded preprocessing."""
    from emoflow.artifact import MODEL_FILE, ModelMeta, read_spec, save_model_file
    from emoflow.models import build_model

    meta = ModelMeta(arch="deep_emotion", classes=["anger", "happiness"], config={},
                     image_size=48, grayscale=True,
                     preprocessing=faces.model_dump(exclude={"workers"}))  # fmt: skip
    save_model_file(folder / MODEL_FILE, meta, build_model("deep_emotion", 2).state_dict())
    return read_spec(folder)


def test_predict_with_the_decode_thread_finds_the_same_faces(tmp_path: Path) -> None:
    from emoflow.inference.predictor import find_faces

    clip = _write(tmp_path / "c.mp4", _face_frames(24, step=3))
    spec = _spec(tmp_path, FacesParams(frames=6))
    a = find_faces(spec, clip)
    b = find_faces(spec, clip, prefetch=True)
    assert a.faces_found == b.faces_found == 24 and len(a.chips) == 6
    assert [f.index for f in a.frames] == [f.index for f in b.frames]
    assert all(np.array_equal(x, y) for x, y in zip(a.chips, b.chips, strict=True))


@pytest.mark.slow
def test_predict_on_several_files_answers_the_same_in_a_pool(tmp_path: Path) -> None:
    """Two worker processes give the answers one process gives, in the files' order, and a bad
    file is still its own error line."""
    import io
    import json

    from emoflow.inference import Predictor
    from emoflow.inference.files import predict_files

    _spec(tmp_path, FacesParams(frames=4))
    clips = [_write(tmp_path / f"c{k}.mp4", _face_frames(10 + 2 * k, step=3 + k))
             for k in range(3)]  # fmt: skip
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    files = [clips[0], bad, clips[1], clips[2]]
    p = Predictor.from_dir(tmp_path, backend="torch")
    answers = {}
    for workers in (1, 2):
        out, err = io.StringIO(), io.StringIO()
        assert predict_files(p, files, as_json=True, out=out, err=err, workers=workers) == 1
        answers[workers] = [json.loads(line) for line in out.getvalue().splitlines()]
        assert "bad.mp4" in err.getvalue()
    one, two = answers[1], answers[2]
    assert [a["file"] for a in two] == [str(f) for f in files]
    assert "error" in two[1] and two[1]["error"] == one[1]["error"]
    for a, b in zip(one, two, strict=True):
        if "error" in a:
            continue
        assert [f["index"] for f in a["frames"]] == [f["index"] for f in b["frames"]]
        assert a["label"] == b["label"] and a["model"] == b["model"]
        assert max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"]
                   ) < 1e-5  # fmt: skip


@pytest.mark.slow
def test_a_worker_that_cannot_open_the_model_leaves_its_files_to_this_process(
    tmp_path: Path,
) -> None:
    """Workers open the model folder afresh; with model.pt gone they fail, and every file is
    still answered, in order, by the process that had it open."""
    import io
    import json

    from emoflow.inference import Predictor
    from emoflow.inference.files import predict_files

    _spec(tmp_path, FacesParams(frames=4))
    clips = [_write(tmp_path / f"c{k}.mp4", _face_frames(10 + 2 * k, step=3 + k))
             for k in range(3)]  # fmt: skip
    p = Predictor.from_dir(tmp_path, backend="torch")
    (tmp_path / "model.pt").rename(tmp_path / "elsewhere.pt")
    out, err = io.StringIO(), io.StringIO()
    assert predict_files(p, clips, as_json=True, out=out, err=err, workers=2) == 0, err.getvalue()
    answers = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [a["file"] for a in answers] == [str(c) for c in clips]
    assert all("label" in a for a in answers)
