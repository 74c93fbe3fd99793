"""Benchmark: ``predict`` of bench/infer.py's 6-second 640×480 clip with this tree's code against
a git commit's, in turns, so both see the same load.

Each round runs each tree in its own process (the commit's ``src`` unpacked with git archive, as
bench/faces_same.py does): the model loads, one warm-up predict, then ``--repeats`` predicts
timed (wall and CPU of the process). Rounds alternate the trees. The model is models/fan on
ONNX Runtime (or an untrained one of the params' shape, as bench/infer.py makes it).

    .venv/bin/python bench/predict_ab.py [--against a3db19e] [--rounds 2] [--repeats 5]

Last line: `predict ab: <commit> <ms> ms, this tree <ms> ms (<ratio>x), load average <l>`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from faces_same import ROOT, unpack_src
from infer import model_folder, six_second_clip

WORKER = """
import json, statistics, sys, time
from emoflow.inference import Predictor
folder, video, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = Predictor.from_dir(folder, backend="onnx")
p.predict_video(video)
wall, cpu = [], []
for _ in range(repeats):
    t, c = time.perf_counter(), time.process_time()
    p.predict_video(video)
    wall.append(1e3 * (time.perf_counter() - t))
    cpu.append(1e3 * (time.process_time() - c))
print(json.dumps({"wall": statistics.median(wall), "cpu": statistics.median(cpu)}))
"""


def run(src: Path, folder: Path, video: Path, repeats: int) -> dict[str, float]:
    import json

    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", WORKER, str(folder), str(video), str(repeats)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="a3db19e", help="the git commit to compare with")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        old_src = unpack_src(args.against, tmp / "old")
        folder = model_folder("fan", args.models, args.params, tmp)
        video = six_second_clip(tmp / "clip.mp4")
        got: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        for _ in range(args.rounds):
            got["old"].append(run(old_src, folder, video, args.repeats))
            got["new"].append(run(ROOT / "src", folder, video, args.repeats))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("wall", "cpu")}
           for k, v in got.items()}  # fmt: skip
    for k, v in got.items():
        print(f"{k}: " + ", ".join(f"{r['wall']:.0f} ms ({r['cpu']:.0f} CPU)" for r in v))
    print(f"predict ab: {args.against} {med['old']['wall']:.0f} ms ({med['old']['cpu']:.0f} CPU), "
          f"this tree {med['new']['wall']:.0f} ms ({med['new']['cpu']:.0f} CPU) "
          f"({med['old']['wall'] / med['new']['wall']:.2f}x), load average "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
