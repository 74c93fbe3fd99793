"""Benchmark: training throughput of one trainer process against two (DDP, gloo, CPU).

Trains the chosen model for a few epochs on the processed sample with `emoflow train
--processes N` (the real command, torchrun and all) and reads the per-epoch training time from
history.json (validation excluded; the first epoch, which pays for start-up, is dropped).

    .venv/bin/python bench/train.py [--model fan] [--epochs 3]

Last line: `train speedup (2 vs 1 processes): <ratio>x`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml


def run(model: str, processes: int, epochs: int, params: Path, work: Path) -> float:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fan", choices=["fan", "deep_emotion"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args()
    unit = "clips" if args.model == "fan" else "frames"
    with tempfile.TemporaryDirectory() as tmp:
        one = run(args.model, 1, args.epochs, args.params, Path(tmp))
        two = run(args.model, 2, args.epochs, args.params, Path(tmp))
    print(f"{args.model}: 1 process  {one:8.1f} {unit}/s")
    print(f"{args.model}: 2 processes {two:8.1f} {unit}/s (DDP, gloo)")
    print(f"train speedup (2 vs 1 processes): {two / one:.2f}x")


if __name__ == "__main__":
    main()
