"""``emoflow import`` at scale: peak memory and progress for 1,000 vs 10,000 one-frame clips.

Each clip is one 25×25 face of skimage's ``lfw_subset`` (a real photograph) written as a PNG
and listed in a manifest, imported with ``--cropped`` in parallel: the face step is then cheap
and honest (read, resize, encode, write), so what grows with the clip count is the importer's
own bookkeeping. The import runs as a subprocess, which reports its own peak RSS
(``ru_maxrss``) as it exits: the process that holds the clip list, the journal and the tables.
Its workers hold one clip at a time.

    .venv/bin/python bench/import_scale.py                # 1,000 and 10,000 clips
    .venv/bin/python bench/import_scale.py --clips 500 2000 --workers 1
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import skimage.data

# The CLI's entry point, reporting the process's own peak RSS (KiB on Linux) as it exits.
_REPORT_RSS = """
import atexit, resource, sys
atexit.register(lambda: print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                              file=sys.stderr, flush=True))
sys.argv = sys.argv[1:]
from emoflow.cli import run
run()
"""
CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


def make_dataset(root: Path, n: int, subjects: int = 50) -> Path:
    """``n`` one-image clips of ``subjects`` people and 7 labels, listed in ``root/list.csv``."""
    faces = (skimage.data.lfw_subset()[:100] * 255).round().astype(np.uint8)
    lines = ["path,label,subject"]
    for i in range(n):
        rel = f"img/{i // 1000:03d}/{i:06d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), faces[i % len(faces)])
        lines.append(f"{rel},{CLASSES[i % len(CLASSES)]},p{i % subjects:03d}")
    manifest = root / "list.csv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


@dataclass
class Run:
    clips: int
    seconds: float
    peak_rss_mb: float
    last_progress: str


def run_import(manifest: Path, out: Path, workers: int) -> Run:
    """One ``emoflow import`` subprocess over the manifest; its time, peak RSS, last bar line."""
    params = manifest.with_name("params.yaml")
    params.write_text(f"faces: {{size: 32, min_face_frames: 1, workers: {workers}}}\n")
    log = manifest.with_name("import.log")
    argv = ["emoflow", "import", "--manifest", str(manifest), "--out", str(out), "--cropped",
            "--params", str(params)]  # fmt: skip
    cmd = [sys.executable, "-c", _REPORT_RSS, *argv]
    t0 = time.perf_counter()
    with log.open("w") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
    seconds = time.perf_counter() - t0
    text = log.read_text()
    if code != 0:
        raise SystemExit(f"import failed ({code}):\n{text[-2000:]}")
    rss_kb = int(text.rsplit("PEAK_RSS_KB ", 1)[1].split()[0])
    lines = text.replace("\r", "\n").splitlines()
    bars = [s for s in lines if s.startswith("import:") and "|" in s]
    n = sum(1 for _ in (out / "faces.csv").open()) - 1
    return Run(n, seconds, rss_kb / 1024, bars[-1] if bars else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    runs = []
    for n in args.clips:
        with tempfile.TemporaryDirectory(prefix="import_scale_") as tmp:
            manifest = make_dataset(Path(tmp) / "data", n)
            r = run_import(manifest, Path(tmp) / "out", args.workers)
        runs.append(r)
        print(f"{r.clips} clips: {r.seconds:.1f} s ({1000 * r.seconds / r.clips:.2f} ms/clip), "
              f"peak RSS {r.peak_rss_mb:.1f} MB; last progress: {r.last_progress.strip()}")
    if len(runs) > 1:
        a, b = runs[0], runs[-1]
        print(f"peak RSS {a.clips} -> {b.clips} clips: {a.peak_rss_mb:.1f} -> {b.peak_rss_mb:.1f} "
              f"MB ({b.peak_rss_mb - a.peak_rss_mb:+.1f} MB, "
              f"{1e6 * (b.peak_rss_mb - a.peak_rss_mb) / (b.clips - a.clips):.0f} bytes per clip)")


if __name__ == "__main__":
    main()
