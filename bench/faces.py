"""Benchmark: the naive face loop against emoflow's face pipeline, on the same clips.

naive     full-resolution HOG on every frame, landmarks and a chip for every frame, one process
pipeline  emoflow faces: detection on a downscaled frame every `faces.detect_every` frames with
          landmark tracking between, chips only for the selected frames, one process per core

Prints both throughputs, how far the pipeline's landmarks are from the naive loop's, and as its
last line `faces speedup: <ratio>x`.

    .venv/bin/python bench/faces.py [--clips data/processed/clips/clips.csv] [--n 24]
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np

from emoflow.config import FacesParams, load_params
from emoflow.faces.pipeline import ClipFaces, naive_params, process_clip
from emoflow.parallel import parallel_map


def _fast(args: tuple[Path, FacesParams, int | None]) -> ClipFaces:
    path, params, peak = args
    return process_clip(path, params, peak)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, default=Path("data/processed/clips/clips.csv"))
    ap.add_argument("--n", type=int, default=24, help="clips to process (first n)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
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

    t = time.perf_counter()
    fast = parallel_map(_fast, jobs, workers, "pipeline", "clip")
    t_fast = time.perf_counter() - t

    frames = sum(r.frames_decoded for r in naive)
    dists, rel = [], []
    for a, b in zip(naive, fast, strict=True):
        for i in sorted(set(a.points) & set(b.points)):
            d = np.linalg.norm(a.points[i] - b.points[i], axis=1).mean()
            iod = np.linalg.norm(a.points[i][42:48].mean(0) - a.points[i][36:42].mean(0))
            dists.append(d)
            rel.append(d / iod)
    found_naive = sum(len(r.points) for r in naive) / frames
    found_fast = sum(len(r.points) for r in fast) / frames
    print(f"clips: {len(jobs)}, frames: {frames}, workers (pipeline): {workers}")
    print(f"naive:    {frames / t_naive:7.1f} frames/s  ({t_naive:.1f} s), face in "
          f"{100 * found_naive:.1f} % of frames")
    print(f"pipeline: {frames / t_fast:7.1f} frames/s  ({t_fast:.1f} s), face in "
          f"{100 * found_fast:.1f} % of frames")
    print(f"landmark distance pipeline vs naive: mean {np.mean(dists):.2f} px "
          f"({100 * np.mean(rel):.2f} % of the inter-ocular distance), "
          f"95th percentile {np.percentile(dists, 95):.2f} px")
    print(f"faces speedup: {t_naive / t_fast:.1f}x")


if __name__ == "__main__":
    main()
