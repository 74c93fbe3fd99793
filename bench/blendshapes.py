"""Benchmark: MediaPipe's blendshape extractor (FAN's expression features) per face chip.

Times ``emoflow.faces.blendshapes`` on the chips of the first ``--files`` face files under
``--faces`` (the faces stage's output), one chip per call as the inference path calls it, after
one warm-up call (MediaPipe's graph loads on first use).

    .venv/bin/python bench/blendshapes.py [--faces data/processed/faces] [--files 8]

Last line: `<n> chips (<h>, <w>, 3): median <ms> ms, mean <ms> ms, no face in <k>`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, default=Path("data/processed/faces"))
    ap.add_argument("--files", type=int, default=8)
    args = ap.parse_args()

    from emoflow.faces.blendshapes import extractor
    from emoflow.faces.store import FaceClip

    chips = []
    for path in sorted(args.faces.glob("*/*.faces.zip"))[: args.files]:
        with FaceClip(path) as clip:
            chips += clip.frames()
    if not chips:
        raise SystemExit(f"no face files under {args.faces}")
    ex = extractor()
    ex(chips[0])
    ms, missed = [], 0
    for chip in chips:
        t0 = time.perf_counter()
        missed += not ex(chip).found
        ms.append(1e3 * (time.perf_counter() - t0))
    print(f"{len(chips)} chips {chips[0].shape}: median {statistics.median(ms):.1f} ms, "
          f"mean {statistics.mean(ms):.1f} ms, no face in {missed}")


if __name__ == "__main__":
    main()
