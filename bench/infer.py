"""Benchmark: PyTorch eager against ONNX Runtime (and TensorRT where present) per clip, and the
end-to-end ``predict`` time of a 6-second 640×480 clip.

model     FAN and Deep-Emotion at their params.yaml input sizes, clips of `faces.frames` frames,
          batch 1 and 16 clips; both runtimes get the same threads (one per core)
predict   one 6-second 640×480 30 fps clip (a real photograph's face drifting across the frame)
          through the inference core on ONNX Runtime, by part (decode, the faces pipeline's
          parts, blendshapes, model), against the decode floor (PyAV decoding every frame,
          threaded, no conversion) measured in turns with it: `decode floor ratio: <x>x`; and
          the same predict with the decode thread (find_faces(prefetch=True))

Uses models/<arch>/model.pt when it is there, else an untrained model of the same shape (speed
does not depend on the weights). ONNX Runtime's intra-op threads are timed from 1 to the cores.
Last line: `infer speedup: <ratio>x` (ONNX Runtime over eager, FAN, batch 16). With `--cuda`,
the GPU runtimes only (PyTorch on CUDA, ONNX Runtime's CUDA provider where this onnxruntime has
it, TensorRT where installed; each one it cannot run is named with the reason) and the model
part only; last line `infer cuda: ...` (ms per clip, FAN, batch 16).

    .venv/bin/python bench/infer.py [--repeats 5] [--models models] [--cuda] [--predict-only]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
import skimage.data
import torch

from emoflow.artifact import (
    EXPORT_JSON,
    MODEL_FILE,
    ONNX_FILE,
    ModelMeta,
    ModelSpec,
    read_spec,
    save_model_file,
)
from emoflow.config import load_params
from emoflow.faces.pipeline import PARTS
from emoflow.fsio import atomic_write_text
from emoflow.inference import Predictor
from emoflow.inference.backends import OnnxBackend, TorchBackend, cpu_threads, onnx_has_cuda
from emoflow.inference.graph import expression_dim, input_names, load_clip_model
from emoflow.inference.predictor import find_faces
from emoflow.media.video import MediaWriter
from emoflow.models import registry
from emoflow.release.export import OPSET, export_info, export_onnx

ARCHS = registry.NAMES


def model_folder(arch: str, models: Path, params_path: Path, tmp: Path) -> Path:
    """A copy of models/<arch>/model.pt, or an untrained model of the params' shape, exported."""
    out = tmp / arch
    out.mkdir()
    own = models / arch / MODEL_FILE
    if own.exists():
        (out / MODEL_FILE).write_bytes(own.read_bytes())
    else:
        from emoflow.training.tasks import make_task

        p = load_params(params_path)
        task = make_task(arch, p.train, 0)
        cfg = task.cfg
        meta = ModelMeta(arch=arch, classes=list(p.classes), config=task.model_config(),
                         image_size=cfg.image_size, grayscale=getattr(cfg, "grayscale", False),
                         preprocessing=p.faces.model_dump(exclude={"workers"}))  # fmt: skip
        save_model_file(out / MODEL_FILE, meta, task.build(len(p.classes)).state_dict())
    spec = read_spec(out)
    export_onnx(load_clip_model(spec), spec, out / ONNX_FILE, OPSET)
    info = export_info(spec, OPSET, {"note": "bench/infer.py: no parity check"}, out / ONNX_FILE)
    atomic_write_text(out / EXPORT_JSON, json.dumps(info))
    return out


def clip_batch(spec: ModelSpec, clips: int) -> tuple[np.ndarray, ...]:
    """Every input of the model's graph (``graph.input_names``): frames, mask and, for a FAN on
    expression features, random blendshape scores (the extractor runs outside the graph)."""
    rng = np.random.default_rng(0)
    t, s, c = spec.preprocessing.frames, spec.image_size, spec.channels
    scores = [rng.random((clips, t, expression_dim(spec)), dtype=np.float32)
              for _ in input_names(spec)[2:]]  # fmt: skip
    return (rng.integers(0, 256, (clips, t, s, s, c), dtype=np.uint8),
            np.ones((clips, t), dtype=bool), *scores)  # fmt: skip


def per_clip_ms(run: Callable[[], object], clips: int, repeats: int) -> float:
    run()  # warm-up: allocations, ORT's first-run work, oneDNN primitive caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times) / clips


def runtimes(folder: Path, spec: ModelSpec, cuda_only: bool = False) -> dict[str, Callable]:
    out: dict[str, Callable] = {}
    if not cuda_only:
        out["eager"] = TorchBackend(spec, "cpu").run
        out["onnxruntime"] = OnnxBackend(spec).run
    if torch.cuda.is_available():  # for reference on a GPU machine (not in the ratio)
        out["eager-cuda"] = TorchBackend(spec, "cuda").run
    if cuda_only and onnx_has_cuda():
        out["onnxruntime-cuda"] = OnnxBackend(spec).run  # the CUDA provider comes first
    elif cuda_only:
        print("  (onnxruntime-cuda skipped: this onnxruntime has no CUDA provider, the CPU "
              "build the project pins)")  # fmt: skip
    try:
        from emoflow.inference.trt import EngineRunner, import_tensorrt
        from emoflow.release.convert import build_engine, engine_refusal

        trt = import_tensorrt()
        if refusal := engine_refusal(spec):
            raise RuntimeError(refusal)
        engine = build_engine(trt, folder / ONNX_FILE, spec, "fp32", (1, 16, 64))
        out["tensorrt"] = EngineRunner(engine, "bench", spec.arch).run
    except Exception as exc:  # no TensorRT or no GPU here: say so, measure the rest
        print(f"  (tensorrt skipped: {str(exc).splitlines()[0]})")
    return out


def onnx_threads(spec: ModelSpec, repeats: int) -> None:
    """ONNX Runtime's intra-op threads, 1 up to the cores, at batch 1 and 16: where adding
    threads stops paying (the default is one per core)."""
    rows = []
    for b in (1, 16):
        inputs = clip_batch(spec, b)
        cells = []
        for n in sorted({1, *range(2, cpu_threads(), max(1, cpu_threads() // 4)), cpu_threads()}):
            run = OnnxBackend(spec, threads=n).run
            cells.append(f"{n}: {per_clip_ms(lambda r=run, i=inputs: r(*i), b, repeats):.1f}")
        rows.append(f"batch {b} " + ", ".join(cells))
    print(f"  onnxruntime intra-op threads (ms per clip): {'; '.join(rows)}")


def six_second_clip(path: Path) -> Path:
    img = cv2.resize(skimage.data.astronaut()[0:300, 80:480], (640, 480))
    with MediaWriter(path, 30, 640, 480) as mw:
        for i in range(180):
            mw.write_frame(cv2.cvtColor(np.roll(img, i, axis=1), cv2.COLOR_RGB2BGR))
    return path


def decode_floor_ms(video: Path) -> float:
    """The physical floor of a prediction: PyAV decoding every frame of ``video`` with the
    decoder's own threads, no pixel conversion, nothing else."""
    t0 = time.perf_counter()
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        for _ in container.decode(stream):
            pass
    return 1e3 * (time.perf_counter() - t0)


def predict_once(p: Predictor, video: Path, prefetch: bool = False) -> dict[str, float]:
    """One ``predict_video`` (the same calls), timed by part: decode, the faces pipeline's parts
    (``faces.pipeline.PARTS``; ``other`` is the rest of the faces time), the blendshape
    extractor, the model and the total; ``cpu``: the process's CPU time (every thread)."""
    t0, c0 = time.perf_counter(), time.process_time()
    found = find_faces(p.spec, video, prefetch=prefetch)
    r = found.result(p.predict_faces(found.chips))
    wall = 1e3 * (time.perf_counter() - t0)
    t = r.timings_ms
    row = {"decode": t.decode, **{k: found.parts.get(k, 0.0) for k in PARTS}}
    row["other"] = t.faces - sum(found.parts.values())
    row |= {"blendshapes": t.expression, "model": t.model, "predict": wall,
            "cpu": 1e3 * (time.process_time() - c0)}  # fmt: skip
    return row


def predict_timings(folder: Path, tmp: Path, repeats: int = 3) -> None:
    video = six_second_clip(tmp / "clip.mp4")
    p = Predictor.from_dir(folder, backend="onnx")
    p.predict_video(video)  # warm-up: dlib models load once per process
    decode_floor_ms(video)
    floors, runs, ahead = [], [], []
    for _ in range(repeats):  # interleaved: all three see the same load
        floors.append(decode_floor_ms(video))
        runs.append(predict_once(p, video))
        ahead.append(predict_once(p, video, prefetch=True))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    floor = statistics.median(floors)
    parts = ", ".join(f"{k} {v:.0f}" for k, v in med.items() if k not in ("predict", "cpu"))
    print(f"predict, 6 s 640x480 clip (180 frames), fan on onnxruntime, median of {repeats} "
          f"(ms): {parts}")  # fmt: skip
    pre = {k: statistics.median(r[k] for r in ahead) for k in ("predict", "cpu", "decode")}
    print(f"  with the decode thread (find_faces(prefetch=True)): {pre['predict']:.0f} ms "
          f"({pre['cpu']:.0f} ms CPU, {pre['decode']:.0f} waiting for frames) against "
          f"{med['predict']:.0f} ({med['cpu']:.0f} ms CPU)")  # fmt: skip
    print(f"predict {med['predict']:.0f} ms per clip, decode floor {floor:.0f} ms (PyAV, "
          f"threaded, every frame, no conversion); load average "
          f"{os.getloadavg()[0]:.2f} on {cpu_threads()} cores")  # fmt: skip
    print(f"decode floor ratio: {med['predict'] / floor:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--skip-predict", action="store_true",
                    help="model timings only (a machine without dlib's landmark models)")
    ap.add_argument("--cuda", action="store_true", help="the GPU runtimes only (model timings)")
    ap.add_argument("--predict-repeats", type=int, default=3, help="predict runs (median)")
    ap.add_argument("--predict-only", action="store_true",
                    help="the predict breakdown only (no model timings)")
    args = ap.parse_args()
    if args.cuda and not torch.cuda.is_available():
        raise SystemExit("bench/infer.py --cuda: no CUDA device visible to PyTorch")
    threads = cpu_threads()
    torch.set_num_threads(threads)
    print(f"threads: torch {torch.get_num_threads()}, onnxruntime {threads} (cores {threads})")
    results: dict[tuple[str, int, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        archs = ["fan"] if args.predict_only else ARCHS
        folders = {a: model_folder(a, args.models, args.params, tmp) for a in archs}
        for arch, folder in folders.items():
            if args.predict_only:
                break
            spec = read_spec(folder)
            trained = (args.models / arch / MODEL_FILE).exists()
            print(f"{arch}: {spec.image_size} px, {spec.preprocessing.frames} frames a clip "
                  f"({'models/' + arch if trained else 'untrained weights'})")  # fmt: skip
            for name, run in runtimes(folder, spec, args.cuda).items():
                for b in (1, 16):
                    inputs = clip_batch(spec, b)
                    ms = per_clip_ms(lambda run=run, i=inputs: run(*i), b, args.repeats)
                    results[(arch, b, name)] = ms
            if not args.cuda:
                onnx_threads(spec, args.repeats)
            for b in (1, 16):
                row = ", ".join(f"{n} {results[(arch, b, n)]:.1f}" for _, bb, n in
                                [k for k in results if k[0] == arch and k[1] == b])  # fmt: skip
                if args.cuda:
                    print(f"  batch {b:2d}: ms per clip: {row}")
                    continue
                ratio = results[(arch, b, "eager")] / results[(arch, b, "onnxruntime")]
                print(f"  batch {b:2d}: ms per clip: {row}; onnxruntime {ratio:.2f}x eager")
        if not args.skip_predict and not args.cuda:
            predict_timings(folders["fan"], tmp, args.predict_repeats)
    if args.predict_only:
        return
    if args.cuda:
        row = ", ".join(f"{n} {ms:.2f}" for (a, b, n), ms in results.items()
                        if a == "fan" and b == 16)  # fmt: skip
        print(f"infer cuda: {row} (ms per clip, fan, batch 16)")
        return
    speedup = results[("fan", 16, "eager")] / results[("fan", 16, "onnxruntime")]
    print(f"infer speedup: {speedup:.2f}x")


if __name__ == "__main__":
    main()
