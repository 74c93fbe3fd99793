"""Benchmark: the naive face loop against emoflow's face pipeline, on the same clips.

naive     full-resolution HOG on every frame, landmarks and a chip for every frame, one process
pipeline  emoflow faces: detection on a downscaled frame every `faces.detect_every` frames with
          landmark tracking between, chips only for the selected frames, one process per core
          (started and warm before the clock runs, as for `emoflow faces`'s many clips; the
          start is printed apart, and the ratio with it)

Prints both throughputs, how far the pipeline's landmarks are from the naive loop's; then real
footage without faces (photographs panned across the frame, a sky, black: emoflow.faces.footage,
written to MP4 files) through the pipeline, with its detector calls a frame and the same footage
through the whole fallback chain on every frame (`faces.fallback_every: 1`, one clip); then the
first clip cut to black and the sky (where any chip must come from the face frames); and as its
last line `faces speedup: <ratio>x`.

    .venv/bin/python bench/faces.py [--clips data/processed/clips/clips.csv] [--n 24]
                                    [--faceless-clips 4] [--faceless-frames 95]
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from emoflow.config import FacesParams, load_params
from emoflow.faces.dlib_models import (
    cnn_detector,
    hog_detector,
    shape_predictor_5,
    shape_predictor_68,
)
from emoflow.faces.footage import cut_away, faceless, write_clip
from emoflow.faces.pipeline import ClipFaces, naive_params, process_clip, process_frames
from emoflow.media.video import iter_frames
from emoflow.parallel import parallel_map


def _fast(args: tuple[Path, FacesParams, int | None]) -> ClipFaces:
    path, params, peak = args
    return process_clip(path, params, peak)


def _load_models() -> None:
    hog_detector(), cnn_detector(), shape_predictor_68(), shape_predictor_5()


def _ready(_: int) -> int:
    return os.getpid()


def _timed(args: tuple[Path, FacesParams, int | None]) -> tuple[ClipFaces, float]:
    t = time.perf_counter()
    r = _fast(args)
    return r, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, default=Path("data/processed/clips/clips.csv"))
    ap.add_argument("--n", type=int, default=24, help="clips to process (first n)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--faceless-clips", type=int, default=4, help="face-less clips to process")
    ap.add_argument("--faceless-frames", type=int, default=95, help="frames per face-less clip")
    args = ap.parse_args()
    params = load_params(args.params).faces
    with args.clips.open(newline="") as f:
        rows = list(csv.DictReader(f))[: args.n]
    jobs = [(args.clips.parent / r["label"] / f"{r['trial_id']}.mp4", params, int(r["peak"]))
            for r in rows]  # fmt: skip
    workers = params.workers or os.cpu_count() or 1
    _fast(jobs[0])  # load dlib's models and warm caches outside the timings

    t = time.perf_counter()
    naive = [process_clip(p, naive_params(params), peak, chip_every_frame=True)
             for p, _, peak in jobs]  # fmt: skip
    t_naive = time.perf_counter() - t

    # The workers start (a fork server, imports, dlib's models) before the clock runs: what
    # `emoflow faces` pays once for all its clips; printed apart.
    t = time.perf_counter()
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_load_models) as pool:
        list(pool.map(_ready, range(workers)))
        t_start = time.perf_counter() - t
        t = time.perf_counter()
        fast = list(pool.map(_fast, jobs, chunksize=1))
        t_fast = time.perf_counter() - t

    frames = sum(r.frames_decoded for r in naive)
    dists, rel = [], []
    for a, b in zip(naive, fast, strict=True):
        for i in sorted(set(a.points) & set(b.points)):
            d = np.linalg.norm(a.points[i] - b.points[i], axis=1).mean()
            iod = np.linalg.norm(a.points[i][42:48].mean(0) - a.points[i][36:42].mean(0))
            dists.append(d)
            rel.append(d / iod)
    found_naive = sum(r.face_frames for r in naive) / frames
    found_fast = sum(r.face_frames for r in fast) / frames
    print(f"clips: {len(jobs)}, frames: {frames}, workers (pipeline): {workers}")
    print(f"naive:    {frames / t_naive:7.1f} frames/s  ({t_naive:.1f} s), face in "
          f"{100 * found_naive:.1f} % of frames")
    print(f"pipeline: {frames / t_fast:7.1f} frames/s  ({t_fast:.1f} s), face in "
          f"{100 * found_fast:.1f} % of frames; starting its {workers} workers took "
          f"{t_start:.1f} s more ({frames / (t_fast + t_start):.1f} frames/s with it, "
          f"{t_naive / (t_fast + t_start):.1f}x the naive loop); load average "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"landmark distance pipeline vs naive: mean {np.mean(dists):.2f} px "
          f"({100 * np.mean(rel):.2f} % of the inter-ocular distance), "
          f"95th percentile {np.percentile(dists, 95):.2f} px")
    faceless_footage(params, workers, args.faceless_clips, args.faceless_frames)
    cut_to_black_and_sky(jobs[0][0], params, jobs[0][2])
    print(f"faces speedup: {t_naive / t_fast:.1f}x")


def faceless_footage(params: FacesParams, workers: int, n_clips: int, n_frames: int) -> None:
    """Face-less clips at the sample's 640×480 through the pipeline, as `emoflow faces` runs."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = [write_clip(Path(tmp) / f"faceless_{k}.mp4", faceless(n_frames, first=k))
                 for k in range(n_clips)]  # fmt: skip
        t = time.perf_counter()
        timed = parallel_map(_timed, [(p, params, None) for p in paths], workers, "face-less",
                             "clip")  # fmt: skip
        wall = time.perf_counter() - t
        done = [r for r, _ in timed]
        busy = sum(s for _, s in timed) / min(workers, len(paths))  # seconds per worker
        frames = sum(r.frames_decoded for r in done)
        calls = {d: sum(r.detector_calls[d] for r in done) / frames
                 for d in ("hog", "hog_clahe", "cnn")}  # fmt: skip
        found = sum(r.face_frames for r in done)
        print(f"face-less: {frames} frames in {n_clips} clips, {workers} workers: "
              f"{frames / busy:7.1f} frames/s in the workers, {frames / wall:.1f} wall "
              f"({wall:.1f} s with starting them), faces found in {found}; detector calls a frame: "
              + ", ".join(f"{d} {v:.3f}" for d, v in calls.items()))  # fmt: skip
        chain = params.model_copy(update={"fallback_every": 1})
        t = time.perf_counter()
        r = process_clip(paths[0], chain)
        one = time.perf_counter() - t
        t = time.perf_counter()
        process_clip(paths[0], params)
        budgeted = time.perf_counter() - t
    print(f"face-less, one clip, one process: {r.frames_decoded / budgeted:7.1f} frames/s "
          f"budgeted, {r.frames_decoded / one:7.1f} frames/s with the whole chain on every frame "
          f"(faces.fallback_every: 1)")  # fmt: skip


def cut_to_black_and_sky(clip: Path, params: FacesParams, peak: int | None) -> None:
    """A sample clip cut to black and then to the sky: no face may come from those frames."""
    face = list(iter_frames(clip, rgb=True))
    frames = cut_away(face, black=5, sky_frames=30)
    r = process_frames(frames, params, peak)
    outside = [i for i in r.points if i >= len(face)]
    from_face = sum(i < len(face) for i in r.selected)
    print(f"cut to black and sky after {clip.name} ({len(face)} + {len(frames) - len(face)} "
          f"frames): faces in {len(outside)} frames after the cut, {from_face} of "
          f"{len(r.selected)} selected frames from the face segment, "
          f"{r.dropped} tracks dropped")  # fmt: skip


if __name__ == "__main__":
    main()
