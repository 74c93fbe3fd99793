"""The trainer in-process on a tiny dataset: learning, selection on val, corrupted samples."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from emoflow.artifact import load_model_file
from emoflow.config import load_params
from emoflow.training import checkpoint as ckpt
from emoflow.training.evaluate import evaluate_model
from emoflow.training.tasks import make_task
from emoflow.training.trainer import (
    TrainingError,
    lr_at,
    make_optimizer,
    resolve_classes,
    restore_optimizer,
    train_model,
)


def test_lr_follows_milestones_then_plateau_divisions() -> None:
    ms = {250: 0.02}
    assert lr_at(0.1, ms, 0, 0, 10) == 0.1
    assert lr_at(0.1, ms, 249, 0, 10) == 0.1
    assert lr_at(0.1, ms, 250, 0, 10) == 0.02
    assert lr_at(0.1, ms, 300, 2, 10) == pytest.approx(0.0002)


@pytest.mark.parametrize("name", ["adam", "sgd"])
@pytest.mark.parametrize(("saved_on", "resumed_on"), [("cpu", "cuda"), ("cuda", "cpu")])
def test_a_checkpoint_resumes_with_this_devices_optimiser_kernels(
    name: str, saved_on: str, resumed_on: str
) -> None:
    """A CPU checkpoint resumed on a GPU with AMP: the fused optimiser the GPU run builds must
    stay fused after loading, or the scaler's grad_scale hits PyTorch's non-fused assertion at
    the first step (reproduced on the CPU: its optimisers have fused kernels and GradScaler
    works there too). The other way, the CPU keeps its default kernels."""
    from emoflow.config import Params

    params = Params.model_validate({"train": {"deep_emotion": {"optimizer": {"name": name}}}})
    task = make_task("deep_emotion", params.train, 0)
    torch.manual_seed(0)
    model = task.build(3)
    x, y = torch.randn(8, 1, 48, 48), torch.randint(0, 3, (8,))

    def step(opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        opt.zero_grad()
        scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
        scaler.step(opt)
        scaler.update()

    # make_optimizer decides the kernels from the device type alone (fused on CUDA).
    before = make_optimizer(model, task, torch.device(saved_on))
    step(before, torch.amp.GradScaler("cpu", enabled=saved_on == "cuda"))
    saved = before.state_dict()
    after = make_optimizer(model, task, torch.device(resumed_on))
    restore_optimizer(after, saved)
    fused = True if resumed_on == "cuda" else None
    assert all(g["fused"] is fused for g in after.param_groups)
    assert after.param_groups[0]["lr"] == saved["param_groups"][0]["lr"]
    assert len(after.state) == len(before.state)  # moments / momentum restored
    step(after, torch.amp.GradScaler("cpu", enabled=resumed_on == "cuda"))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_classes_come_from_the_data(tmp_path: Path) -> None:
    configured = ("anger", "happiness", "neutral")
    assert resolve_classes(configured, tmp_path, {"anger", "neutral"}) == list(configured)
    assert resolve_classes(configured, tmp_path, {"contempt", "anger"}) == ["anger", "contempt"]
    (tmp_path / "classes.txt").write_text("fear\ncontempt\n")
    assert resolve_classes(configured, tmp_path, {"fear"}) == ["fear", "contempt"]


def test_deep_emotion_learns_and_keeps_the_best_val_epoch(tiny_faces: Path, tiny_params: Path,
                                                          tmp_path: Path) -> None:  # fmt: skip
    params = load_params(tiny_params)
    out = tmp_path / "model"
    r = train_model("deep_emotion", params, tiny_faces / "faces", tiny_faces / "splits", out)
    losses = [h["train_loss"] for h in r.history]
    assert len(losses) == 6 and losses[-1] < losses[0]
    best = max(h["val_war"] for h in r.history)
    assert r.best_score == best
    assert r.history[r.best_epoch - 1]["val_war"] == best
    _, meta = load_model_file(out / "model.pt")
    assert meta.epoch == r.best_epoch and meta.arch == "deep_emotion"
    assert (out / "history.json").exists() and (out / "checkpoints" / "last.pt").exists()
    m = evaluate_model("deep_emotion", params, tiny_faces / "faces", tiny_faces / "splits", out,
                       tmp_path / "metrics.json", tmp_path / "plots")  # fmt: skip
    assert m["war"] > 1 / 3  # three distinct classes: better than chance
    assert (tmp_path / "plots" / "confusion.png").stat().st_size > 1000


def test_fan_trains_on_clips(tiny_faces: Path, tiny_params: Path, tmp_path: Path) -> None:
    params = load_params(tiny_params)
    r = train_model("fan", params, tiny_faces / "faces", tiny_faces / "splits", tmp_path / "m")
    assert len(r.history) == 3 and all(h["train_loss"] > 0 for h in r.history)
    model, meta = load_model_file(tmp_path / "m" / "model.pt")
    x = torch.zeros(1, 4, 3, 32, 32)
    assert model(x).shape == (1, len(meta.classes))


def test_corrupted_samples_are_skipped_up_to_the_budget(tiny_faces: Path, tiny_params: Path,
                                                        tmp_path: Path) -> None:  # fmt: skip
    data = tmp_path / "data"
    shutil.copytree(tiny_faces, data)
    with (data / "splits" / "train.csv").open(newline="") as f:
        victim = data / "faces" / next(csv.DictReader(f))["file"]  # a training clip
    victim.write_bytes(b"not a zip")
    params = load_params(tiny_params)
    raw = params.model_dump(by_alias=True)
    raw["train"]["deep_emotion"]["epochs"] = 1
    raw["train"]["allow_corrupted_samples"] = 0
    strict = type(params).model_validate(raw)
    with pytest.raises(TrainingError, match="unreadable samples in epoch 1"):
        train_model("deep_emotion", strict, data / "faces", data / "splits", tmp_path / "a")
    raw["train"]["allow_corrupted_samples"] = 6  # the clip's six frames
    lenient = type(params).model_validate(raw)
    r = train_model("deep_emotion", lenient, data / "faces", data / "splits", tmp_path / "b")
    assert r.history[0]["corrupted"] == 6


def test_new_face_files_mean_a_new_training(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"faces v1")
    b.write_bytes(b"other clip")
    before = ckpt.files_fingerprint([a, b])
    assert ckpt.files_fingerprint([a, b]) == before
    a.write_bytes(b"faces v2")
    assert ckpt.files_fingerprint([a, b]) != before


def test_a_tie_on_the_val_score_goes_to_the_lower_val_loss() -> None:
    from emoflow.training.trainer import Progress

    p = Progress()
    rows = [(1, 0.5, 1.2), (2, 1.0, 0.9), (3, 1.0, 0.95), (4, 1.0, 0.6), (5, 0.9, 0.1)]
    kept = [p.record({"epoch": e, "val_loss": loss}, score, patience=0)
            for e, score, loss in rows]  # fmt: skip
    assert kept == [True, True, False, True, False]  # a lower loss never beats a higher score
    assert (p.best_epoch, p.best_score, p.best_loss) == (4, 1.0, 0.6)
