"""Benchmark: the first find of a face, dlib's HOG (the pipeline's) against MediaPipe's BlazeFace.

Issue 21 asks whether a detector whose weights ship in a package finds faces faster and as well.
BlazeFace (short range) is the ``face_detector.tflite`` inside the installed
``face_landmarker.task`` (the expression extractor's bundle; nothing is downloaded). On every
``--every``-th frame of the first ``--clips`` trial clips it runs:

- **hog**: ``emoflow.faces.detect.detect`` as the pipeline's first try (HOG at
  ``faces.detect_scale`` and ``faces.upsample`` of ``--params``, fallbacks off);
- **blazeface**: MediaPipe's FaceDetector on the whole frame (it scales to 128 px itself);
- **cnn**: dlib's CNN (MMOD) detector, the pipeline's last fallback, at the same scale, on the
  first ``--cnn`` sampled frames only (it takes a good part of a second a frame on a CPU).

dlib's 68-point predictor is trained on HOG's boxes, so BlazeFace's box must be mapped to a
HOG-like one before landmarks: a per-coordinate linear map fitted on the even frames where both
found the face, tested on the odd ones (landmarks from the mapped box against landmarks from
HOG's box, in pixels).

    .venv/bin/python bench/detectors.py [--trials data/interim/trials] [--clips 20] [--every 5]
        [--cnn 20]

Last line: `detector speedup: <hog ms / blazeface ms>x`.
"""

from __future__ import annotations

import argparse
import statistics
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=Path, default=Path("data/interim/trials"))
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--cnn", type=int, default=20, help="frames for dlib's CNN detector")
    args = ap.parse_args()

    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from emoflow.config import load_params
    from emoflow.faces.align import landmarks, shape_points
    from emoflow.faces.blendshapes import task_file
    from emoflow.faces.detect import Box, detect
    from emoflow.faces.dlib_models import cnn_detector
    from emoflow.media.video import iter_frames

    fp = load_params(args.params).faces
    clips = sorted(args.trials.rglob("*.mp4"))[: args.clips]
    if not clips:
        raise SystemExit(f"no trial clips under {args.trials} (run make demo first)")
    model = zipfile.ZipFile(task_file()).read("face_detector.tflite")
    blaze = vision.FaceDetector.create_from_options(vision.FaceDetectorOptions(
        base_options=BaseOptions(model_asset_buffer=model),
        running_mode=vision.RunningMode.IMAGE))  # fmt: skip

    frames, hog_ms, blaze_ms, cnn_ms, pairs = 0, [], [], [], []
    found = {"hog": 0, "blazeface": 0, "cnn": 0}
    for clip in clips:
        for i, rgb in enumerate(iter_frames(clip, rgb=True)):
            if i % args.every:
                continue
            frames += 1
            t0 = time.perf_counter()
            h = detect(rgb, fp.detect_scale, fp.upsample, clahe=False, cnn=False)
            t1 = time.perf_counter()
            b = blaze.detect(mp.Image(image_format=mp.ImageFormat.SRGB,
                                      data=np.ascontiguousarray(rgb))).detections  # fmt: skip
            t2 = time.perf_counter()
            hog_ms.append(1e3 * (t1 - t0))
            blaze_ms.append(1e3 * (t2 - t1))
            found["hog"] += h is not None
            found["blazeface"] += bool(b)
            if len(cnn_ms) < args.cnn:
                small = rgb if fp.detect_scale >= 1 else cv2.resize(
                    rgb, None, fx=fp.detect_scale, fy=fp.detect_scale,
                    interpolation=cv2.INTER_AREA)  # fmt: skip
                t3 = time.perf_counter()
                found["cnn"] += bool(len(cnn_detector()(small, fp.upsample)))
                cnn_ms.append(1e3 * (time.perf_counter() - t3))
            if h is not None and b:
                bb = b[0].bounding_box
                pairs.append((rgb, h.box, (bb.origin_x, bb.origin_y, bb.origin_x + bb.width,
                                           bb.origin_y + bb.height)))  # fmt: skip
    blaze.close()
    # BlazeFace's box → a HOG-like box: each coordinate a linear function of the box's own
    # centre and size, fitted on the even pairs, tested on the odd ones.
    def design(b: tuple[float, ...]) -> np.ndarray:
        x0, y0, x1, y1 = b
        return np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 1.0])

    fit, test = pairs[::2], pairs[1::2]
    x = np.stack([design(p[2]) for p in fit])
    y = np.array([(p[1].left, p[1].top, p[1].right, p[1].bottom) for p in fit])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    dist, iod = [], []
    for rgb, hog_box, blaze_box in test:
        mapped = Box(*(design(blaze_box) @ coef))
        ref = shape_points(landmarks(rgb, hog_box, fp.landmarks))
        got = shape_points(landmarks(rgb, mapped, fp.landmarks))
        dist.append(float(np.linalg.norm(ref - got, axis=1).mean()))
        if fp.landmarks == 68:
            iod.append(float(np.linalg.norm(ref[36:42].mean(0) - ref[42:48].mean(0))))
    print(f"{frames} frames of {len(clips)} clips ({args.trials}, every {args.every}th)")
    for name, ms in (("hog", hog_ms), ("blazeface", blaze_ms), ("cnn", cnn_ms)):
        if ms:
            print(f"{name:>9}: found {found[name]}/{len(ms)}, median "
                  f"{statistics.median(ms):.1f} ms, mean {statistics.mean(ms):.1f} ms per frame")
    if dist:
        rel = f" ({100 * statistics.median(dist) / statistics.median(iod):.1f} % of the " \
              "inter-ocular distance)" if iod else ""  # fmt: skip
        print(f"landmarks from BlazeFace's mapped box against HOG's on {len(test)} held-out "
              f"frames: median {statistics.median(dist):.2f} px, max {max(dist):.2f} px{rel}")
    print(f"detector speedup: {statistics.median(hog_ms) / statistics.median(blaze_ms):.2f}x")


if __name__ == "__main__":
    main()
