"""Benchmark: the emotion service under load, adaptive batching on and off.

Starts the real service itself twice (`bentoml serve` of services/emotion on a free port,
EMOFLOW_BATCHING=1 then 0, each stopped by its PID) and drives it with concurrent clients for
``--seconds`` per phase:

  /predict_faces   16 clients, aligned face crops of one clip (JPEG, `faces.frames` of them)
  /predict         16 clients, a 6-second 640×480 30 fps clip (bench/infer.py's: a real
                   photograph's face drifting across the frame, or --clip), then 1, 2, 4 and 8
                   clients with batching on (--sweep), each against `predict` in one process
                   on the same clip (clips/s, measured first, on all cores and pinned to one):
                   the scaling ratio is clips/s ÷ (cores × one process's clips/s on one core)
                   (predict's own threads use the other cores, so the all-core figure is not
                   a per-core baseline)

Requests/s count answers completed within the phase; latencies are per request, client side.
Serves models/fan when it is there, else an untrained FAN of params.yaml's shape exported to
ONNX (speed does not depend on the weights). Last line: `serve batching speedup: <ratio>x`
(/predict_faces requests/s, batching on over off).

    .venv/bin/python bench/serve.py [--seconds 20] [--clients 16] [--sweep 1 2 4 8]
                                    [--clip data/interim/trials/p001_001.mp4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import skimage.data
from infer import model_folder, six_second_clip

from emoflow.artifact import MODEL_FILE, read_spec

ROOT = Path(__file__).resolve().parents[1]
BATCH_METRIC = "bentoml_service_adaptive_batch_size"
sys.path.insert(0, str(ROOT / "tests" / "service"))
from svc_helpers import serve  # noqa: E402  (the service tests' start/stop by PID)


@dataclass
class Phase:
    endpoint: str
    batching: bool
    clients: int
    ok: int
    errors: dict[str, int]
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float | None = None  # clips per model call (BentoML's adaptive_batch_size)
    server_ms: dict[str, float] | None = None  # /predict: the answers' own timings, medians

    def parts(self) -> str:
        """Where a request's time went: the service's timings against the client's p50."""
        if not self.server_ms:
            return ""
        t = self.server_ms
        rest = self.p50_ms - t["total"]
        return (f"  server (median ms): decode {t['decode']:.0f}, faces {t['faces']:.0f}, "
                f"expression {t['expression']:.0f}, model {t['model']:.0f}, total "
                f"{t['total']:.0f} (the handler's, the hop to the model service included); "
                f"the rest of the client's p50 (sending the upload, the HTTP exchange around "
                f"the handler) {rest:.0f}")  # fmt: skip

    def line(self) -> str:
        errs = ", ".join(f"{k}: {v}" for k, v in self.errors.items()) or "none"
        batch = f"; {self.mean_batch:.1f} clips a model call" if self.mean_batch else ""
        return (f"{self.endpoint:14s} batching {'on ' if self.batching else 'off'} "
                f"{self.clients:2d} clients: {self.rps:6.2f} req/s, p50 {self.p50_ms:6.0f} ms, "
                f"p95 {self.p95_ms:6.0f} ms, p99 {self.p99_ms:6.0f} ms ({self.ok} answered; "
                f"errors {errs}{batch})")  # fmt: skip


def batch_totals(url: str) -> tuple[float, float]:
    """(clips, model calls) so far: the batcher's histogram of the model's ``classify``."""
    totals = {"_sum": 0.0, "_count": 0.0}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        name, _, rest = line.partition("{")
        if name.startswith(BATCH_METRIC) and 'method_name="classify"' in rest:
            for suffix in totals:
                if name.endswith(suffix):
                    totals[suffix] += float(line.rsplit(" ", 1)[1])
    return totals["_sum"], totals["_count"]


def face_crops(size: int, n: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    """``n`` JPEG crops of the astronaut's face, shifted a little (a clip's aligned chips)."""
    img = cv2.cvtColor(skimage.data.astronaut()[30:250, 150:350], cv2.COLOR_RGB2BGR)
    files = []
    for i in range(n):
        m = np.float32([[1, 0, i % 7 - 3], [0, 1, 3 - i % 7]])
        crop = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT)
        jpg = cv2.imencode(".jpg", cv2.resize(crop, (size, size)))[1].tobytes()
        files.append(("faces", (f"{i}.jpg", jpg, "image/jpeg")))
    return files


def load(url: str, endpoint: str, files: list, clients: int, seconds: float, batching: bool
         ) -> Phase:  # fmt: skip
    """``clients`` threads posting ``files`` back to back until ``seconds`` have passed."""
    latencies: list[float] = []
    timings: list[dict[str, float]] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + seconds
    last = [start]

    def client() -> None:
        with httpx.Client(base_url=url, timeout=300) as c:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = c.post(endpoint, files=files)
                    key = None if r.status_code == 200 else f"{r.status_code}"
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                t1 = time.perf_counter()
                with lock:
                    if key is None:
                        latencies.append(t1 - t0)
                        timings.append(r.json().get("timings_ms") or {})
                    else:
                        errors[key] = errors.get(key, 0) + 1
                    last[0] = max(last[0], t1)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ms = sorted(1e3 * x for x in latencies) or [float("nan")]
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    parts = ("decode", "faces", "expression", "model", "total")
    server = ({k: statistics.median(t.get(k, 0.0) for t in timings) for k in parts}
              if timings and endpoint == "/predict" else None)  # fmt: skip
    return Phase(endpoint, batching, clients, len(latencies), errors,
                 len(latencies) / (last[0] - start), q[49], q[94], q[98],
                 server_ms=server)  # fmt: skip


def single_process(model: Path, clip: Path, seconds: float) -> float:
    """Clips/s of ``Predictor.predict_video`` on the clip back to back in this process: the
    baseline the service's scaling is measured against (after one warm-up clip)."""
    from emoflow.inference import Predictor

    predictor = Predictor.from_dir(model)
    predictor.predict_video(clip)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n == 0:
        predictor.predict_video(clip)
        n += 1
    return n / (time.perf_counter() - start)


def single_process_on_one_core(model: Path, clip: Path, seconds: float) -> float:
    """``single_process`` in a child process pinned to one core (its threads share it)."""
    code = ("import os, sys; from pathlib import Path; "
            "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            f"sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "from serve import single_process; "
            f"print(single_process(Path({str(model)!r}), Path({str(clip)!r}), {seconds!r}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd=ROOT)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def run_service(model: Path, batching: bool, root: Path, clip: bytes, crops: list,
                args: argparse.Namespace) -> list[Phase]:  # fmt: skip
    env = {"EMOFLOW_MODEL_DIR": str(model), "EMOFLOW_BATCHING": "1" if batching else "0",
           "EMOFLOW_API_KEY": "", "OMP_NUM_THREADS": str(os.cpu_count() or 1)}  # fmt: skip
    video = [("video", ("clip.mp4", clip, "video/mp4"))]
    t0 = time.perf_counter()
    with serve(root / ("on" if batching else "off"), env, ready_s=300) as s:
        print(f"service (batching {'on' if batching else 'off'}) ready in "
              f"{time.perf_counter() - t0:.0f} s at {s.url}, PID {s.proc.pid}", flush=True)
        with httpx.Client(base_url=s.url, timeout=300) as c:  # warm-up: model, dlib, pools
            for _ in range(2):
                c.post("/predict", files=video).raise_for_status()
                c.post("/predict_faces", files=crops).raise_for_status()
        before = batch_totals(s.url)
        phases = [load(s.url, "/predict_faces", crops, args.clients, args.seconds, batching)]
        clips, calls = (a - b for a, b in zip(batch_totals(s.url), before, strict=True))
        phases[0].mean_batch = clips / calls if calls else None
        phases.append(load(s.url, "/predict", video, args.clients, args.seconds, batching))
        if batching:
            for n in args.sweep:
                phases.append(load(s.url, "/predict", video, n, args.seconds, batching))
        for p in phases:
            print(p.line(), flush=True)
            if p.clients == 1:
                print(p.parts(), flush=True)
    return phases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="per phase")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--json", type=Path, help="write the phases here too")
    ap.add_argument("--clip", type=Path, help="a video to send to /predict (e.g. one of "
                    "data/interim/trials/*.mp4, a camera-like clip) [default: the 6-s 640×480 "
                    "clip of bench/infer.py]")
    ap.add_argument("--sweep", type=int, nargs="*", default=[1, 2, 4, 8],
                    help="/predict clients, batching on, one phase each")
    args = ap.parse_args()
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    with tempfile.TemporaryDirectory(prefix="bsrv") as tmp_name:  # short: unix socket paths
        tmp = Path(tmp_name)
        own = args.models / "fan"
        if (own / MODEL_FILE).is_file():
            model, what = own.resolve(), str(own)
        else:
            model, what = model_folder("fan", args.models, args.params, tmp), "untrained weights"
        spec = read_spec(model)
        print(f"model: fan, {spec.image_size} px, {spec.preprocessing.frames} frames a clip "
              f"({what})", flush=True)  # fmt: skip
        clip_path = args.clip or six_second_clip(tmp / "clip.mp4")
        clip = clip_path.read_bytes()
        crops = face_crops(spec.preprocessing.size, spec.preprocessing.frames)
        every = single_process(model, clip_path, args.seconds)
        single = single_process_on_one_core(model, clip_path, args.seconds)
        print(f"predict in one process: {every:.2f} clips/s on all cores, {single:.2f} on one "
              f"({clip_path.name}), load average {os.getloadavg()[0]:.1f}", flush=True)
        phases = [p for batching in (True, False)
                  for p in run_service(model, batching, tmp, clip, crops, args)]  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        args.json.write_text(json.dumps({"single_process_clips_per_s": every,
                                         "one_core_clips_per_s": single,
                                         "phases": [asdict(p) for p in phases]}, indent=2))
    faces = {p.batching: p.rps for p in phases if p.endpoint == "/predict_faces"}
    cores = len(os.sched_getaffinity(0))
    for p in phases:
        if p.endpoint == "/predict" and p.batching and p.clients in args.sweep:
            print(f"/predict {p.clients} clients: {p.rps:.2f} clips/s = "
                  f"{p.rps / (cores * single):.2f} × (cores × one process on one core's "
                  f"{single:.2f})")  # fmt: skip
    one = [p for p in phases if p.endpoint == "/predict" and p.clients == 1]
    if one:
        print(f"/predict at 1 client: p95 {one[0].p95_ms / 1e3:.2f} s (target <= 0.5 s)")
    print(f"serve batching speedup: {faces[True] / faces[False]:.2f}x")


if __name__ == "__main__":
    main()
