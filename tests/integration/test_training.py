"""Training as users run it: 2-process DDP on CPU, and kill -9 then resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent


def _env(cwd: Path) -> dict[str, str]:
    # Runs land in a throwaway MLflow store in the test's folder.
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
            "PYTHONUNBUFFERED": "1"}  # fmt: skip


def test_two_process_ddp_keeps_ranks_identical_and_learns(tiny_faces: Path, tiny_params: Path,
                                                         tmp_path: Path) -> None:  # fmt: skip
    worker = str(HERE / "ddp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           worker, str(tiny_params), str(tiny_faces), str(tmp_path)]  # fmt: skip
    out = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                         timeout=600, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["state"].keys() == r1["state"].keys()
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    losses = [h["train_loss"] for h in r0["history"]]
    assert losses[-1] < losses[0], losses


def _params(tiny_params: Path, out: Path, **train: object) -> Path:
    """tiny_params with ``train`` keys changed (``deep_emotion__epochs=1`` for nested ones)."""
    import yaml

    params = yaml.safe_load(tiny_params.read_text())
    for key, value in train.items():
        *path, last = key.split("__")
        section = params["train"]
        for k in path:
            section = section[k]
        section[last] = value
    out.write_text(yaml.safe_dump(params))
    return out


def test_ddp_ranks_agree_when_one_rank_gets_only_unreadable_samples(
    tiny_faces: Path, tiny_params: Path, tmp_path: Path
) -> None:
    """Batches of one frame and a broken training clip: some steps find nothing readable on
    one rank while the other rank has a frame. Both must step (DDP all-reduces in backward),
    else the ranks hang or drift apart."""
    import csv
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_faces, data)
    with (data / "splits" / "train.csv").open(newline="") as f:
        (data / "faces" / next(csv.DictReader(f))["file"]).write_bytes(b"not a zip")
    params = _params(tiny_params, tmp_path / "params.yaml", workers=2, allow_corrupted_samples=6,
                     deep_emotion__epochs=1, deep_emotion__batch_size=1)  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "ddp_worker.py"), str(params), str(data), str(tmp_path)]  # fmt: skip
    out = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                         timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert r0["history"][0]["corrupted"] == 6  # the clip's six frames, summed over the ranks


def test_crossval_runs_torchrun_per_fold_training(tiny_faces: Path, tiny_params: Path,
                                                   tmp_path: Path) -> None:  # fmt: skip
    """With train.processes 2, each fold's training runs under torchrun; crossval itself (its
    evaluations and the summary) runs once."""
    import yaml

    p = _params(tiny_params, tmp_path / "params.yaml", processes=2, deep_emotion__epochs=1)
    raw = yaml.safe_load(p.read_text())
    raw["split"]["folds"] = 2
    p.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "emoflow.cli", "crossval", "--model", "deep_emotion",
           "--params", str(p), "--faces", str(tiny_faces / "faces"), "--splits",
           str(tiny_faces / "splits")]  # fmt: skip
    out = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                         timeout=600, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.count("2 process(es)") == 2, out.stderr[-3000:]  # a DDP run per fold
    assert out.stderr.count("cross-validation over 2 folds") == 1, out.stderr[-3000:]
    assert (tmp_path / "metrics" / "deep_emotion_cv.json").exists()


def _train_cmd(params: Path, data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "emoflow.cli", "train", "--model", "deep_emotion", "--params",
            str(params), "--faces", str(data / "faces"), "--splits", str(data / "splits"),
            "--out", str(out)]  # fmt: skip


def _epochs_done(out: Path) -> int:
    last = out / "checkpoints" / "last.pt"
    if not last.exists():
        return 0
    try:
        return int(torch.load(last, weights_only=False)["epoch"])
    except Exception:  # read while being replaced: try again
        return 0


def test_killed_training_resumes_to_the_same_weights(tiny_faces: Path, tiny_params: Path,
                                                      tmp_path: Path) -> None:  # fmt: skip
    import yaml

    params = yaml.safe_load(tiny_params.read_text())
    params["train"]["deep_emotion"]["epochs"] = 12
    params["train"]["workers"] = 2  # the default: persistent workers must redraw every epoch
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    env = _env(tmp_path)
    done = subprocess.run(_train_cmd(p, tiny_faces, whole), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    proc = subprocess.Popen(_train_cmd(p, tiny_faces, resumed), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while _epochs_done(resumed) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = _epochs_done(resumed)
    assert 3 <= killed_at < 12, killed_at

    again = subprocess.run(_train_cmd(p, tiny_faces, resumed), cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming deep_emotion at epoch {killed_at + 1}" in again.stderr
    a = torch.load(whole / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 12
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    # In MLflow the killed run is closed as KILLED and the resuming run links to it.
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("emoflow-deep_emotion")
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    resumed_run = runs[b["mlflow_run_id"]]
    killed_id = resumed_run.data.tags["emoflow.resumed_from_run"]
    assert runs[killed_id].info.status == "KILLED"
    assert resumed_run.info.status == "FINISHED"


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("model", ["fan", "deep_emotion"])
def test_training_on_gpu_with_amp(model: str, tiny_faces: Path, tiny_params: Path,
                                  tmp_path: Path) -> None:  # fmt: skip
    """As users run it on a GPU: AMP, 2 loader workers (pinned uint8 batches, normalised on the
    device), channels-last and cuDNN autotuning for FAN; then evaluation on the GPU."""
    from emoflow.config import load_params
    from emoflow.training.evaluate import evaluate_model
    from emoflow.training.trainer import train_model

    params = load_params(_params(tiny_params, tmp_path / "params.yaml", workers=2))
    assert params.train.amp and params.train.workers == 2
    r = train_model(model, params, tiny_faces / "faces", tiny_faces / "splits", tmp_path / model)
    assert next(r.model.parameters()).is_cuda
    if model == "fan":
        w = r.model.trunk.conv1.weight
        assert w.is_contiguous(memory_format=torch.channels_last)
        assert torch.backends.cudnn.benchmark
    losses = [h["train_loss"] for h in r.history]
    assert all(np.isfinite(losses))  # AMP's scaler kept the float16 loss finite
    assert all(0.0 <= h["train_acc"] <= 1.0 for h in r.history)
    if model == "deep_emotion":  # 6 epochs: enough to see it learn (3 for FAN are not)
        assert losses[-1] < losses[0]
    m = evaluate_model(model, params, tiny_faces / "faces", tiny_faces / "splits",
                       tmp_path / model, tmp_path / "m.json", tmp_path / "plots")  # fmt: skip
    assert m["test_clips"] > 0 and 0.0 <= m["war"] <= 1.0


@pytest.mark.gpu
@needs_cuda
def test_device_normalisation_is_the_cpu_one_bit_for_bit() -> None:
    from emoflow.datasets.clips import normalise

    x = torch.randint(0, 256, (2, 3, 40, 40, 3), dtype=torch.uint8)
    for gray, t in ((False, x), (True, x[..., :1])):
        on_gpu = normalise(t.cuda(), gray, channels_last=True)
        assert on_gpu.is_cuda and on_gpu.shape == (2, 3, 3 - 2 * gray, 40, 40)
        assert torch.equal(on_gpu.cpu(), normalise(t, gray))


@pytest.mark.gpu
@needs_cuda
def test_a_cpu_checkpoint_resumes_on_the_gpu_with_amp(tiny_faces: Path, tiny_params: Path,
                                                      tmp_path: Path) -> None:  # fmt: skip
    """Epoch 1 on the CPU (no GPU visible), epochs 2-3 resumed on the GPU with AMP and its fused
    optimiser: the first GPU step used to hit PyTorch's non-fused grad_scale assertion."""
    from emoflow.config import load_params
    from emoflow.training.trainer import train_model

    one = _params(tiny_params, tmp_path / "one.yaml", workers=0, deep_emotion__epochs=1)
    three = _params(tiny_params, tmp_path / "three.yaml", workers=0, deep_emotion__epochs=3)
    env = {**_env(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / "de"
    done = subprocess.run(_train_cmd(one, tiny_faces, out), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    saved = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert saved["epoch"] == 1 and not saved["scaler"]  # written on the CPU: no AMP scaler
    params = load_params(three)
    assert params.train.amp
    r = train_model("deep_emotion", params, tiny_faces / "faces", tiny_faces / "splits", out)
    assert [h["epoch"] for h in r.history] == [1, 2, 3]  # resumed, not restarted
    assert next(r.model.parameters()).is_cuda
    assert all(np.isfinite(h["train_loss"]) for h in r.history)


@pytest.mark.parametrize(("wait_s", "ok"), [(600, True), (1, False)])
def test_ranks_wait_for_rank_0_on_the_wait_groups_timeout(wait_s: int, ok: bool,
                                                          tmp_path: Path) -> None:  # fmt: skip
    """Rank 0 alone for 4 s, twice (validation; model upload) with the collectives' timeout at
    2 s: the others wait on the gloo side group, whose timeout (EMOFLOW_DDP_WAIT_S) decides;
    set it below rank 0's work and the wait fails instead (so the waits do use it)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "ddp_wait_worker.py"), str(tmp_path), "4"]  # fmt: skip
    env = {**_env(tmp_path), "EMOFLOW_DDP_TIMEOUT_S": "2", "EMOFLOW_DDP_WAIT_S": str(wait_s)}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300, check=False)  # fmt: skip
    assert (out.returncode == 0) == ok, out.stderr[-3000:]
    if ok:
        assert {p.read_text() for p in tmp_path.glob("rank*.txt")} == {"2.0 {'war': 0.5}"}
    else:
        assert "timed out" in out.stderr.lower() or "timeout" in out.stderr.lower()
