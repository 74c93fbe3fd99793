"""Benchmark check: the faces pipeline of this tree against the one of a git commit, on the same
clips — face rate, landmark distance, selected frames, chips — and each one's time.

Speed work on the faces stage must not change what it finds (issue 21: the face rate within
±0.1 pp and landmarks within 1 px of the code before it; the landmarks compare on the frames both
trees ran the 68-point predictor on: with ``track_points: 5``, the new tree's selected ones).
The commit's ``src`` is unpacked with ``git archive`` into a temporary folder and both trees
run, one after the other, in subprocesses of this interpreter (one process each, so the times
compare); each reads the faces keys of params.yaml that its code knows.

    .venv/bin/python bench/faces_same.py [--against HEAD~1] [--n 40]

Last line: `faces same: face rate <a> % -> <b> %, landmarks mean <d> px (p95, max, frames),
selection equal in <k>/<n> clips (<s> % of the frames shared), chips equal in <k>/<n>`.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# Run in each tree's own process: the clips' points, selections and chips, pickled.
WORKER = """
import csv, pickle, sys, time
from pathlib import Path
import yaml
from emoflow.config import FacesParams
from emoflow.faces.pipeline import process_clip
clips, params, n, out = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
# An older tree does not know the faces keys added since (it runs as it did then).
faces = yaml.safe_load(params.read_text())["faces"]
p = FacesParams.model_validate({k: v for k, v in faces.items() if k in FacesParams.model_fields})
rows = list(csv.DictReader(clips.open(newline="")))[:n]
found, t = {}, time.process_time()
for r in rows:
    c = process_clip(clips.parent / r["label"] / f"{r['trial_id']}.mp4", p, int(r["peak"]))
    found[r["trial_id"]] = (c.frames_decoded, c.points, c.selected, c.chips, len(c.sources))
pickle.dump((found, time.process_time() - t), open(out, "wb"))
"""


def run_tree(src: Path, clips: Path, params: Path, n: int, out: Path) -> tuple[dict, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-c", WORKER, str(clips), str(params), str(n), str(out)],
                   env=env, check=True)  # fmt: skip
    with out.open("rb") as f:
        return pickle.load(f)


def unpack_src(commit: str, dest: Path) -> Path:
    """``commit``'s ``src`` folder (git archive) under ``dest``; returns it."""
    tar = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, check=True,
                         capture_output=True).stdout  # fmt: skip
    with tarfile.open(fileobj=BytesIO(tar)) as tf:
        tf.extractall(dest, filter="data")
    return dest / "src"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="HEAD~1", help="the git commit to compare with")
    ap.add_argument("--clips", type=Path, default=Path("data/processed/clips/clips.csv"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--n", type=int, default=40, help="clips (first n)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        old, t_old = run_tree(unpack_src(args.against, tmp / "old"), args.clips, args.params,
                              args.n, tmp / "old.pkl")  # fmt: skip
        new, t_new = run_tree(ROOT / "src", args.clips, args.params, args.n, tmp / "new.pkl")
    frames = sum(v[0] for v in old.values())
    rate_old = 100 * sum(v[4] for v in old.values()) / frames
    rate_new = 100 * sum(v[4] for v in new.values()) / frames
    dist = [float(np.linalg.norm(old[k][1][i] - new[k][1][i], axis=1).mean())
            for k in old for i in set(old[k][1]) & set(new[k][1])]  # fmt: skip
    same_sel = sum(old[k][2] == new[k][2] for k in old)
    shared = np.mean([len(set(old[k][2]) & set(new[k][2])) / max(len(old[k][2]), 1) for k in old])
    same_chips = sum(old[k][2] == new[k][2] and all(np.array_equal(a, b) for a, b in
                                                     zip(old[k][3], new[k][3], strict=True))
                     for k in old)  # fmt: skip
    print(f"{len(old)} clips, {frames} frames: {args.against} {1e3 * t_old / frames:.1f} CPU ms "
          f"a frame, this tree {1e3 * t_new / frames:.1f} ({t_old / t_new:.2f}x)")  # fmt: skip
    print(f"faces same: face rate {rate_old:.2f} % -> {rate_new:.2f} %, landmarks mean "
          f"{np.mean(dist):.3f} px (p95 {np.percentile(dist, 95):.3f}, max {np.max(dist):.3f}; "
          f"{len(dist)} frames both landmarked), selection equal in {same_sel}/{len(old)} clips "
          f"({100 * shared:.0f} % of the frames shared), chips equal in "
          f"{same_chips}/{len(old)}")  # fmt: skip


if __name__ == "__main__":
    main()
