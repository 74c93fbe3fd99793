"""Benchmark: `emoflow import --cropped` of tight face crops with and without the framing margin.

Cuts a tight-crop dataset out of the sample (after `make demo`): for each face file, the frames
the faces stage selected, cropped at dlib's HOG box of the whole frame (the largest face), 48 px,
gray: what a dataset of tight crops (CK+48, FER-style) looks like. Then, for each
`--crop-padding` in `--margins`, runs what a user runs — `emoflow import --cropped --grayscale
--folds 5` and `emoflow probe --folds` for each feature set (`--features`), and with `--crossval`
`emoflow crossval --model fan` — each in its own workspace under `--work`, and prints the mean
test UAR ± std per margin.

    .venv/bin/python bench/crop_framing.py [--work /tmp/crop_framing] [--margins auto 0]
        [--features default dlib blendshapes landmarks] [--crossval]

The sample's faces are warps of two photographs: this measures the mechanics and the direction
on those faces, not what a real dataset will show. Last line: `crop framing: <default
features' probe UAR with the first margin / with the second>x`.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EMOFLOW = [sys.executable, "-m", "emoflow.cli"]
# Feature sets for the probe, as train.fan keys on top of params.yaml.
FEATURES = {
    "default": {},
    "dlib": {"features": "appearance"},
    "blendshapes": {"features": "blendshapes", "expression": "blendshapes"},
    "landmarks": {"features": "blendshapes", "expression": "landmarks"},
}
SCORE = re.compile(r"UAR (\d\.\d+) ± (\d\.\d+)")


def tight_crops(processed: Path, out: Path, side: int = 48) -> int:
    """The selected frames of every face file, cropped at the HOG box: <label>/<trial>/<i>.png."""
    import cv2
    import dlib

    from emoflow.media.video import iter_frames

    detector = dlib.get_frontal_face_detector()
    n = 0
    with (processed / "faces" / "faces.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if not r["excluded"]]
    for row in rows:
        with zipfile.ZipFile(processed / "faces" / row["file"]) as z:
            meta = json.loads(z.read("meta.json"))
        want = set(meta["frames"])
        for i, rgb in enumerate(iter_frames(ROOT / meta["source"], rgb=True)):
            boxes = detector(rgb, 0) if i in want else []
            if not boxes:
                continue
            b = max(boxes, key=lambda r: r.area())
            crop = rgb[max(b.top(), 0):b.bottom(), max(b.left(), 0):b.right()]
            gray = cv2.cvtColor(cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA),
                                cv2.COLOR_RGB2GRAY)  # fmt: skip
            path = out / row["label"] / row["trial_id"] / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), gray)
            n += 1
    return n


def run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(EMOFLOW + args, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"emoflow {' '.join(args)} failed in {cwd}:\n{done.stderr[-2000:]}")
    return done.stdout + done.stderr


def score(log: str) -> tuple[float, float]:
    found = SCORE.findall(log)
    if not found:
        raise SystemExit(f"no 'UAR m ± s' in:\n{log[-1000:]}")
    return float(found[-1][0]), float(found[-1][1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/crop_framing"))
    ap.add_argument("--processed", type=Path, default=ROOT / "data" / "processed")
    ap.add_argument("--margins", nargs=2, default=["auto", "0"])
    ap.add_argument("--features", nargs="+", default=list(FEATURES), choices=list(FEATURES))
    ap.add_argument("--crossval", action="store_true", help="also FAN's crossval per margin")
    args = ap.parse_args()

    raw = args.work / "raw"
    if not raw.exists():
        print(f"{tight_crops(args.processed, raw)} tight crops → {raw}", flush=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    results: dict[tuple[str, str], tuple[float, float]] = {}
    for margin in args.margins:
        ws = args.work / f"margin_{margin}"
        ws.mkdir(parents=True, exist_ok=True)
        data = ws / "imported"
        if not (data / "faces.csv").exists():
            run(["import", str(raw), "--out", str(data), "--cropped", "--grayscale",
                 "--crop-padding", margin, "--subject-regex", r"^(p\d+)_", "--folds", "5",
                 "-p", str(ROOT / "params.yaml")], ws)  # fmt: skip
        where = ["--faces", str(data), "--splits", str(data / "splits")]
        for name in args.features:
            p = copy.deepcopy(params)
            p["train"]["fan"].update(FEATURES[name])
            (ws / f"{name}.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
            results[name, margin] = score(run(["probe", "--folds", "-p", f"{name}.yaml", *where],
                                              ws))  # fmt: skip
            print(f"margin {margin:>5}: probe on {name:<11} UAR {results[name, margin][0]:.3f} "
                  f"± {results[name, margin][1]:.3f}", flush=True)
        if args.crossval:
            results["fan", margin] = score(run(["crossval", "--model", "fan", "-p",
                                                str(ROOT / "params.yaml"), *where], ws))
            print(f"margin {margin:>5}: FAN crossval        UAR {results['fan', margin][0]:.3f} "
                  f"± {results['fan', margin][1]:.3f}", flush=True)
    a, b = args.margins
    first = args.features[0]
    print(f"crop framing: {results[first, a][0] / results[first, b][0]:.2f}x "
          f"({first} features' probe UAR, margin {a} over {b})")


if __name__ == "__main__":
    main()
