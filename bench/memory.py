"""Benchmark: peak memory of ``emoflow predict`` on a 6-second and a 5-minute clip.

Both clips are 640×480 (``--size``) at 30 fps with a real photograph's face drifting across
the frame; each is predicted by the real CLI in its own process (ONNX Runtime), and the
process's peak RSS is read from the kernel (``wait4``). Frames are kept for their chips only up
to a budget; past it the chosen frames are decoded again, so the long clip should cost about
what the short one costs. Last line: `memory ratio (5 min / 6 s): <ratio>x` (target ≤ 1.2).

    .venv/bin/python bench/memory.py [--minutes 5] [--models models]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data
from infer import model_folder

from emoflow.media.video import MediaWriter


def clip(path: Path, seconds: float, size: tuple[int, int]) -> Path:
    img = cv2.resize(skimage.data.astronaut()[0:300, 80:480], size)
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    with MediaWriter(path, 30, *size) as mw:
        for i in range(round(30 * seconds)):
            mw.write_frame(np.roll(bgr, (i * 2) % 200 - 100, axis=1))
    return path


def peak_rss_mb(cmd: list[str], log: Path) -> tuple[float, float, str]:
    """Peak resident memory (MB) and wall time (s) of ``cmd`` run in a process of its own."""
    t0 = time.perf_counter()
    with log.open("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak RSS, from the kernel
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{text[-2000:]}")
    return usage.ru_maxrss / 1024, wall, text.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--size", default="640x480", help="WxH of both clips (the service's "
                    "largest frame: 3840x2160)")  # fmt: skip
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    emoflow = str(Path(sys.executable).with_name("emoflow"))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = model_folder("fan", args.models, args.params, tmp)
        rows = {}
        for name, seconds in (("6 s", 6.0), (f"{args.minutes:g} min", 60 * args.minutes)):
            video = clip(tmp / f"{seconds:g}.mp4", seconds, size)
            rss, wall, line = peak_rss_mb([emoflow, "predict", str(video), "--model-dir",
                                           str(folder), "--backend", "onnx"],
                                          tmp / "predict.log")  # fmt: skip
            rows[name] = rss
            print(f"predict {name} {args.size} ({round(30 * seconds)} frames, "
                  f"{video.stat().st_size / 1e6:.1f} MB): peak RSS {rss:.0f} MB, "
                  f"{wall:.1f} s wall; {line.split(': ', 1)[-1]}")  # fmt: skip
    short, long = rows.values()
    print(f"memory ratio ({args.minutes:g} min / 6 s): {long / short:.2f}x")


if __name__ == "__main__":
    main()
