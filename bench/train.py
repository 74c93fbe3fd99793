"""Benchmark: the training loader's CPU cost per clip (the 304a51a loader against today's), and
on a GPU the FAN step alone against the trainer's whole loader + step loop.

Synthetic face files (photo crops, ``--frames`` per file, ``--size`` px) in a temporary folder;
FAN's training items (K = 3 segment-sampled frames, the default augmentation). The loader CPU
time is the main process's plus its workers' (``getrusage``), per clip, over ``--epochs``
passes; both loaders run the same DataLoader settings. With ``--device cuda``: images/s of
``train_step`` on one batch already on the device (the model alone: AMP, channels-last) and of
``train_model`` (the trainer's loop: loader workers, pinned copies, device normalisation, the
same step; validation excluded, first epoch dropped).

    .venv/bin/python bench/train.py                       # loader, CPU: old vs new ms per clip
    python bench/train.py --device cuda --workers 14      # + model alone vs full loop
    .venv/bin/python bench/train.py --ddp [--model fan] [--epochs 3]   # 1 vs 2 DDP processes
    .venv/bin/python bench/train.py --routes [--epochs 3]  # FAN's frame encoders: epoch times
    .venv/bin/python bench/train.py --routes --route "facenet_irv1 frozen"   # one route

``--routes`` trains FAN with the real ``emoflow train`` on the workspace's data (params.yaml's
``train.fan`` with each route's keys over it, an empty feature cache in a temporary folder):
the run's wall time (the frozen routes compute their features in it), the seconds per epoch
(the trainer's ``train_seconds``, mean over epochs 2..n) and the epoch's clips per second.

Last lines: `loader CPU ms per clip: old <a>, new <b> (<a/b>x)` and, on a GPU,
`end to end / step alone: <ratio>`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from emoflow.models import registry

HERE = Path(__file__).resolve().parent
LABELS = ("anger", "happiness", "surprise")


def make_faces(root: Path, files: int, frames: int, size: int) -> list:
    """``files`` face files of ``frames`` frames cut from a photo (shifted per frame)."""
    import cv2
    import numpy as np

    from emoflow.datasets.clips import ClipRef
    from emoflow.faces.store import write_face_clip

    try:
        import skimage.data

        img = skimage.data.astronaut()
    except ImportError:  # a bare GPU machine: a drawn face (decoding costs much the same)
        img = np.full((512, 512, 3), (90, 120, 160), np.uint8)
        cv2.ellipse(img, (240, 250), (120, 160), 0, 0, 360, (200, 170, 150), -1)
        for x in (195, 285):
            cv2.circle(img, (x, 210), 14, (40, 30, 30), -1)
        cv2.ellipse(img, (240, 330), (45, 18), 0, 0, 180, (90, 50, 60), 6)
        img = cv2.GaussianBlur(img, (0, 0), 2) + np.random.default_rng(0).integers(
            0, 12, img.shape, dtype=np.uint8)  # fmt: skip
    refs = []
    for c in range(files):
        crops = [img[30 + 2 * i + c % 9 : 230 + 2 * i + c % 9, 140 + c % 7 : 340 + c % 7]
                 for i in range(frames)]  # fmt: skip
        rel = f"{LABELS[c % 3]}/c{c:04d}.faces.zip"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_face_clip(root / rel, [cv2.resize(f, (size, size)) for f in crops], {})
        refs.append(ClipRef(f"c{c:04d}", f"p{c % 8}", c % 3, root / rel, frames))
    return refs


def loader_cpu_ms(dataset, collate, clips: int, batch: int, workers: int, epochs: int,
                  new: bool) -> tuple[float, float]:  # fmt: skip
    """CPU ms per clip (main process + workers) and wall clips/s over ``epochs`` passes."""
    from torch.utils.data import DataLoader, RandomSampler

    from emoflow.datasets.clips import EpochSampler, face_loader

    def cpu() -> float:
        own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                     resource.RUSAGE_CHILDREN))  # fmt: skip
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    # One pass over clips x epochs samples: the workers start once, as persistent ones do.
    n = clips * epochs
    sampler = RandomSampler(range(len(dataset)), num_samples=n)
    c0, t0 = cpu(), time.perf_counter()
    if new:
        loader = face_loader(dataset, workers=workers, batch_size=batch,
                             sampler=EpochSampler(sampler), collate_fn=collate)  # fmt: skip
    else:  # 304a51a: a plain DataLoader
        loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                            collate_fn=collate)  # fmt: skip
    for _ in loader:
        pass
    del loader  # joins the workers, so RUSAGE_CHILDREN counts them
    return (cpu() - c0) * 1000 / n, n / (time.perf_counter() - t0)


def bench_loader(refs: list, args: argparse.Namespace) -> tuple[float, float]:
    sys.path.insert(0, str(HERE))
    from loader_baseline import OldClips, old_collate_clips

    from emoflow.config import AugmentParams
    from emoflow.datasets.clips import ClipDataset, collate_clips

    ds = ClipDataset(refs, train=True, frames_per_clip=3, augment_params=AugmentParams(),
                     seed=0, size=args.size)  # fmt: skip
    # The old loader first: it ran with OpenCV's default threads, which the new one turns off.
    old = loader_cpu_ms(OldClips(ds), old_collate_clips, args.clips, args.batch, args.workers,
                        args.epochs, new=False)  # fmt: skip
    new = loader_cpu_ms(ds, collate_clips, args.clips, args.batch, args.workers, args.epochs,
                        new=True)  # fmt: skip
    print(f"old loader (304a51a): {old[0]:6.2f} CPU ms per clip, {old[1]:7.1f} clips/s")
    print(f"new loader (uint8)  : {new[0]:6.2f} CPU ms per clip, {new[1]:7.1f} clips/s")
    return old[0], new[0]


def bench_gpu(refs: list, root: Path, args: argparse.Namespace) -> None:
    import torch

    from emoflow.config import Params
    from emoflow.datasets.clips import ClipDataset, collate_clips
    from emoflow.training.tasks import make_task
    from emoflow.training.trainer import make_optimizer, train_model, train_step

    device = torch.device(args.device)
    raw = {"train": {"workers": args.workers, "amp": True, "allow_corrupted_samples": 0,
                     "fan": {"epochs": args.gpu_epochs, "batch_size": args.batch,
                             "image_size": args.size, "frames_per_clip": 3}}}  # fmt: skip
    params = Params.model_validate(raw)
    task = make_task("fan", params.train, 0)
    model = task.prepare(task.build(len(LABELS)).to(device), device)
    cuda = device.type == "cuda"
    opt, scaler = make_optimizer(model, task, device), torch.amp.GradScaler("cuda", enabled=cuda)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    ds = ClipDataset(refs, train=True, frames_per_clip=3, size=args.size)
    batch = collate_clips([ds[i % len(ds)] for i in range(args.batch)])
    batch = tuple(t.pin_memory() for t in batch) if cuda else batch
    model.train()
    for _ in range(5):  # warm-up: cuDNN autotuning
        train_step(model, task, batch, opt, scaler, 5.0, device, cuda)
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        train_step(model, task, batch, opt, scaler, 5.0, device, cuda)
    sync()
    alone = args.steps * args.batch * 3 / (time.perf_counter() - t0)

    # The whole trainer: manifests that list the files over and over (page-cached, like a
    # dataset that fits in memory), a small val split.
    splits = root / "splits"
    splits.mkdir()
    for name, n in (("train", args.clips), ("val", 12)):
        with (splits / f"{name}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["trial_id", "participant", "label", "file", "frames"])
            for i in range(n):
                r = refs[i % len(refs)]
                w.writerow([f"{name}{i}", r.participant, LABELS[r.label],
                            r.path.relative_to(root / "faces"), r.frames])  # fmt: skip
    result = train_model("fan", params, root / "faces", splits, root / "model")
    clips_s = [h["samples_per_s"] for h in result.history[1:]]
    loop = 3 * sum(clips_s) / len(clips_s)
    print(f"FAN step alone     : {alone:8.0f} images/s (batch {args.batch} x 3 x {args.size} px"
          f"{', AMP, channels-last' if cuda else ''})")
    print(f"trainer loop       : {loop:8.0f} images/s ({args.workers} workers, "
          f"{args.clips} clips/epoch)")
    print(f"end to end / step alone: {loop / alone:.2f}")


def run_ddp(model: str, processes: int, epochs: int, params: Path, work: Path) -> float:
    """Clips (FAN) or frames (Deep-Emotion) per second of training, mean over epochs 2..n."""
    raw = yaml.safe_load(params.read_text())
    raw["train"][model]["epochs"] = epochs
    p = work / f"params_{processes}.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = work / f"out_{processes}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    cmd = [sys.executable, "-m", "emoflow.cli", "train", "--model", model, "--params", str(p),
           "--out", str(out), "--processes", str(processes)]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = json.loads((out / "history.json").read_text())[1:]
    return sum(h["samples_per_s"] for h in history) / len(history)


# FAN's frame encoders (train.fan keys over params.yaml's; each route names every key that sets
# the route, whatever params.yaml's default is): docs/training.md
DLIB = {"image_size": 150, "backbone": "dlib_resnet29", "pretrained": None}
FACENET = {"image_size": 160, "backbone": "facenet_irv1", "pretrained": None}
ROUTES = {
    "resnet18 (scratch)": {"image_size": 96, "backbone": "resnet18", "pretrained": None,
                           "backbone_lr_scale": 1.0, "features": "appearance"},
    "dlib_resnet29 frozen": {**DLIB, "backbone_lr_scale": 0.0, "features": "appearance"},
    "dlib_resnet29 fine-tuned (lr x 0.1)": {**DLIB, "backbone_lr_scale": 0.1,
                                            "features": "appearance"},
    "blendshapes": {"features": "blendshapes"},
    "fused (dlib frozen + blendshapes)": {**DLIB, "backbone_lr_scale": 0.0, "features": "fused"},
    "facenet_irv1 frozen": {**FACENET, "backbone_lr_scale": 0.0, "features": "appearance"},
    "fused (facenet frozen + blendshapes)": {**FACENET, "backbone_lr_scale": 0.0,
                                             "features": "fused"},
    "facenet_irv1 fine-tuned (lr x 0.1)": {**FACENET, "backbone_lr_scale": 0.1,
                                           "features": "appearance"},
}  # fmt: skip


def run_route(name: str, keys: dict, epochs: int, params: Path, work: Path
              ) -> tuple[float, float, float]:  # fmt: skip
    """(wall s of `emoflow train`, s per epoch, clips/s) of FAN with ``keys``."""
    raw = yaml.safe_load(params.read_text())
    raw["train"]["fan"].update(keys, epochs=epochs)
    slug = "".join(c if c.isalnum() else "_" for c in name)
    p = work / f"params_{slug}.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = work / f"out_{slug}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "EMOFLOW_WEIGHTS_CACHE": str(work / f"cache_{slug}")}  # fmt: skip
    cmd = [sys.executable, "-m", "emoflow.cli", "train", "--model", "fan", "--params", str(p),
           "--out", str(out)]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    history = json.loads((out / "history.json").read_text())[1:] or \
        json.loads((out / "history.json").read_text())
    epoch_s = sum(h["train_seconds"] for h in history) / len(history)
    return wall, epoch_s, sum(h["samples_per_s"] for h in history) / len(history)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu: the loader only; cuda: + the GPU")
    ap.add_argument("--files", type=int, default=24, help="distinct face files")
    ap.add_argument("--frames", type=int, default=8, help="frames per face file")
    ap.add_argument("--size", type=int, default=224, help="face size (px), FAN's image_size")
    ap.add_argument("--clips", type=int, default=96, help="clips per epoch")
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2, help="loader passes")
    ap.add_argument("--steps", type=int, default=30, help="GPU: timed steps of the model alone")
    ap.add_argument("--gpu-epochs", type=int, default=3, help="GPU: trainer epochs")
    ap.add_argument("--step", action="store_true", help="time the model step on the CPU too")
    ap.add_argument("--ddp", action="store_true", help="the DDP benchmark: 1 vs 2 processes")
    ap.add_argument("--routes", action="store_true", help="FAN's frame encoders: epoch times")
    ap.add_argument("--route", action="append", choices=list(ROUTES), metavar="NAME",
                    help="--routes: only this route (repeatable); default: all")
    ap.add_argument("--model", default="fan", choices=registry.NAMES, help="--ddp only")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"),
                    help="--ddp and --routes only")
    args = ap.parse_args()
    if args.routes:
        with tempfile.TemporaryDirectory() as tmp:
            for name, keys in ROUTES.items():
                if args.route and name not in args.route:
                    continue
                wall, epoch_s, rate = run_route(name, keys, args.epochs, args.params, Path(tmp))
                print(f"{name:38s} train {wall:7.1f} s in all, {epoch_s:6.2f} s per epoch "
                      f"({rate:7.1f} clips/s)", flush=True)  # fmt: skip
        return
    if args.ddp:
        unit = "clips" if args.model == "fan" else "frames"
        with tempfile.TemporaryDirectory() as tmp:
            one = run_ddp(args.model, 1, args.epochs, args.params, Path(tmp))
            two = run_ddp(args.model, 2, args.epochs, args.params, Path(tmp))
        print(f"{args.model}: 1 process  {one:8.1f} {unit}/s")
        print(f"{args.model}: 2 processes {two:8.1f} {unit}/s (DDP, gloo)")
        print(f"train speedup (2 vs 1 processes): {two / one:.2f}x")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        refs = make_faces(root / "faces", args.files, args.frames, args.size)
        print(f"{args.files} face files x {args.frames} frames at {args.size} px; FAN items "
              f"(K = 3, augmented), batch {args.batch}, {args.workers} workers")  # fmt: skip
        old, new = bench_loader(refs, args)
        if args.device != "cpu" or args.step:
            bench_gpu(refs, root, args)
    print(f"loader CPU ms per clip: old {old:.2f}, new {new:.2f} ({old / new:.1f}x)")


if __name__ == "__main__":
    main()
