"""``emoflow train``: one trainer for FAN and Deep-Emotion, on one or many processes.

Per epoch: segment-sampled (FAN) or per-frame (Deep-Emotion) batches through DDP, AMP on GPU,
gradient clipping; validation on rank 0; the learning rate from the milestones and the plateau
rule; a checkpoint written atomically. Started again after a crash or a kill, it resumes from
the last checkpoint and ends with the same weights as an uninterrupted run (on CPU): the
dropout seed is set per epoch and the data's randomness is a function of (seed, epoch, index).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from emoflow.artifact import (
    CHECKPOINTS,
    HISTORY,
    MODEL_FILE,
    ModelMeta,
    load_state,
    save_model_file,
    save_state,
)
from emoflow.config import FacesParams, Params, TrainParams, model_names
from emoflow.datasets.clips import NO_MANIFEST, ClipRef, read_manifest
from emoflow.errors import EmoflowError, InputError
from emoflow.fsio import atomic_write_text
from emoflow.tables import read_table
from emoflow.training import checkpoint as ckpt
from emoflow.training.distributed import (
    Dist,
    all_sum,
    broadcast_object,
    init_distributed,
    wait_for_all,
)
from emoflow.training.metrics import classification_report
from emoflow.training.tasks import (
    Batch,
    SkipCorrupt,
    Task,
    group_lr,
    make_task,
    train_loader,
)

log = logging.getLogger(__name__)


class TrainingError(EmoflowError):
    """Training cannot go on (too many corrupted samples, no data)."""


class Logger(Protocol):
    run_id: str | None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def continues(self, run_id: str) -> None: ...


class _NoLog:
    run_id = None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def continues(self, run_id: str) -> None:
        pass


def resolve_classes(configured: tuple[str, ...], faces_dir: Path, labels: set[str]) -> list[str]:
    """Classes and their order: an imported dataset's ``classes.txt``, else params.yaml's list
    when it covers the data, else the data's labels sorted."""
    listed = faces_dir / "classes.txt"
    if listed.exists():
        return [c.strip() for c in listed.read_text().splitlines() if c.strip()]
    if labels <= set(configured):
        return list(configured)
    return sorted(labels)


def _labels(manifest: Path) -> set[str]:
    return {r["label"] for r in read_table(manifest, ("label",), NO_MANIFEST)}


def lr_at(cfg_lr: float, milestones: dict[int, float], epoch: int, reductions: int,
          divisor: float) -> float:  # fmt: skip
    """The milestone schedule's rate at ``epoch``, divided once per plateau."""
    lr = cfg_lr
    for at in sorted(milestones):
        if epoch >= at:
            lr = milestones[at]
    return lr / divisor**reductions


@dataclass
class TrainResult:
    best_epoch: int
    best_score: float
    history: list[dict[str, float]]
    model_file: Path  # written by rank 0
    model: nn.Module  # this process's final weights (all ranks hold the same under DDP)
    main: bool  # rank 0, the one that logs and writes


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, task: Task, device: torch.device) -> torch.optim.Optimizer:
    """The task's optimiser (``optimizer`` of its params section) over its parameter groups."""
    # Fused kernels on CUDA: AMP's scaler then skips an overflowing step on the device instead
    # of reading the overflow flag on the host every step. CPU keeps the default kernels.
    o, fused = task.cfg.optimizer, True if device.type == "cuda" else None
    groups = task.param_groups(model)  # a backbone may train at its own rate, or not at all
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum,
                               weight_decay=o.weight_decay, fused=fused)  # fmt: skip
    return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay, fused=fused)


# The optimiser's implementation choices: what this machine's optimiser was built with, not what
# the checkpoint's machine used.
IMPL_FLAGS = ("fused", "foreach", "capturable", "differentiable")


def restore_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load ``saved`` into ``optimizer`` keeping ``optimizer``'s own implementation flags.

    ``load_state_dict`` restores the saved ``fused`` flag: a CPU checkpoint resumed on a GPU
    would step the non-fused kernel while AMP's scaler, seeing a fused optimiser, hands it
    ``grad_scale`` (PyTorch asserts). The flags are set before loading, so the state is also
    cast for them (a fused optimiser's ``step`` lives on the parameters' device)."""
    own = [{k: g[k] for k in IMPL_FLAGS if k in g} for g in optimizer.param_groups]
    groups = [{**g, **flags} for g, flags in zip(saved["param_groups"], own, strict=True)]
    optimizer.load_state_dict({**saved, "param_groups": groups})


def _init_weights(model: nn.Module, train: TrainParams, device: torch.device) -> dict | None:
    """Apply ``train.init``; return the checkpoint to continue from (``continue``) or None."""
    if train.init == "scratch":
        return None
    if not train.init_from:
        raise InputError("params.yaml", f"train.init is {train.init!r} but train.init_from is "
                                        "not set", "key train.init_from")  # fmt: skip
    state = load_state(Path(train.init_from), device)
    weights = state.get("model") or state.get("state_dict") or state
    own = model.state_dict()
    # Transfer keeps every tensor whose name and shape match: a new class list gets a new head.
    usable = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise InputError(train.init_from, "no weights match this model")
    model.load_state_dict(usable, strict=False)
    log.info("train: %s from %s: %d of %d tensors loaded", train.init, train.init_from,
             len(usable), len(own))  # fmt: skip
    return state if train.init == "continue" else None


@dataclass(frozen=True)
class TrainData:
    classes: list[str]
    train: list[ClipRef]
    val: list[ClipRef]


def load_data(configured: tuple[str, ...], faces_dir: Path, splits_dir: Path) -> TrainData:
    """The classes and the train and val clips of ``splits_dir``'s manifests."""
    classes = resolve_classes(configured, faces_dir, _labels(splits_dir / "train.csv"))
    train_refs = read_manifest(splits_dir / "train.csv", faces_dir, classes)
    val_refs = read_manifest(splits_dir / "val.csv", faces_dir, classes)
    if not train_refs or not val_refs:
        raise TrainingError(f"{splits_dir}: train and val manifests must both hold clips")
    return TrainData(classes, train_refs, val_refs)


@dataclass
class Progress:
    """Where a training stands besides its weights (checkpointed under these names)."""

    epoch: int = 0  # epochs done
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = -1.0
    best_epoch: int = -1
    reductions: int = 0  # plateau rule: times the learning rate was divided
    bad_epochs: int = 0  # epochs since the score last improved
    best_loss: float = float("inf")  # the kept epoch's val loss: it breaks ties of the score

    def record(self, row: dict[str, float], score: float, patience: int) -> bool:
        """Add the epoch's ``row``; whether it is the best so far: a higher ``score``, or the
        same with a lower val loss (the plateau rule counts the others). On a small val split
        the score saturates early (14 clips: 1.000 by epoch 7); keeping the first epoch to
        reach it kept heads that had barely trained (5 sample folds, fused FAN: mean test UAR
        0.860 ± 0.106 against 0.957 ± 0.057 with the loss as the tie-break)."""
        loss = row["val_loss"]
        improved = score > self.best_score or (score == self.best_score and loss < self.best_loss)
        if improved and not math.isfinite(loss):
            loss = float("inf")  # a NaN loss kept would refuse every later tie
        if improved:
            self.best_score, self.best_epoch, self.bad_epochs = score, int(row["epoch"]), 0
            self.best_loss = loss
        else:
            self.bad_epochs += 1
            if patience and self.bad_epochs >= patience:
                self.reductions, self.bad_epochs = self.reductions + 1, 0
        self.history.append(row)
        self.epoch = int(row["epoch"])
        return improved


def _resume(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
            state: dict[str, Any] | None) -> Progress:  # fmt: skip
    """Load a checkpoint's weights, optimiser and scaler; its progress (new without one)."""
    if state is None or "optimizer" not in state:
        return Progress()
    model.load_state_dict(state["model"])
    restore_optimizer(optimizer, state["optimizer"])  # on this device, with its kernels
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return Progress(state["epoch"], state["history"], state["best_score"], state["best_epoch"],
                    state["reductions"], state["bad_epochs"],
                    state.get("best_loss", float("inf")))  # fmt: skip


def train_model(model_name: str, params: Params, faces_dir: Path, splits_dir: Path,
                out_dir: Path, logger: Logger | None = None) -> TrainResult:  # fmt: skip
    """Train ``model_name`` on ``splits_dir/train.csv``, select on ``val.csv``."""
    d = init_distributed()
    tp = params.train
    task = make_task(model_name, tp, tp.seed)
    data = load_data(params.classes, faces_dir, splits_dir)
    classes = data.classes
    _seed_everything(tp.seed)
    model = task.prepare(task.build(len(classes)).to(d.device), d.device)
    resume_from = _init_weights(model, tp, d.device)
    optimizer = make_optimizer(model, task, d.device)
    use_amp = tp.amp and d.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    ckpt_dir = out_dir / CHECKPOINTS
    # More epochs, processes or loader workers do not change what the epochs so far computed:
    # such a change resumes the last checkpoint; other settings, data or code start afresh.
    fp = ckpt.fingerprint(
        model_name, ckpt.code_fingerprint(), task.cfg.model_dump(exclude={"epochs"}),
        tp.model_dump(exclude={*model_names(), "processes", "workers"}), classes,
        [r.trial_id for r in data.train], [r.trial_id for r in data.val],
        ckpt.files_fingerprint([r.path for r in (*data.train, *data.val)]),
    )  # fmt: skip
    last = ckpt_dir / ckpt.LAST
    state = resume_from
    if last.exists():
        own = load_state(last, d.device)
        if own.get("fingerprint") == fp:
            state = own
        elif d.main:
            log.warning("train: %s is from other settings or data: starting afresh", last)
    progress = _resume(model, optimizer, scaler, state)
    start = progress.epoch
    if d.main and state is not None and "optimizer" in state:
        log.info("train: resuming %s at epoch %d of %d", model_name, start + 1,
                 task.cfg.epochs)  # fmt: skip
        if start >= task.cfg.epochs:
            log.info("train: already trained %d epochs: restoring the kept model", start)
    net: nn.Module = model
    if d.world > 1:
        log.info("train: process %d of %d (%s)", d.rank + 1, d.world, d.device)
        net = DistributedDataParallel(model, device_ids=[d.device.index] if d.device.index is not
                                      None else None)  # fmt: skip
    loader = train_loader(SkipCorrupt(task.train_dataset(data.train)), task.cfg.batch_size,
                          task.collate, workers=task.loader_workers(tp.workers), seed=tp.seed,
                          world=d.world, rank=d.rank, pin_memory=d.device.type == "cuda",
                          balance=[r.label for r in data.train]
                          if getattr(task.cfg, "balanced_sampling", False) else None,
                          )  # fmt: skip
    logger = logger if (logger is not None and d.main) else _NoLog()
    previous_run = state.get("mlflow_run_id") if state is not None else None
    if previous_run and previous_run != logger.run_id:
        logger.continues(previous_run)  # link the runs; close the one a kill left open
    opt = task.cfg.optimizer
    if d.main:
        log.info("train: %s, %d classes, %d train / %d val clips, %d process(es) on %s, "
                 "epochs %d..%d", model_name, len(classes), len(data.train), len(data.val),
                 d.world, d.device, start + 1, task.cfg.epochs)  # fmt: skip
    for epoch in range(start, task.cfg.epochs):
        lr = lr_at(opt.lr, opt.milestones, epoch, progress.reductions, opt.plateau_divisor)
        for g in optimizer.param_groups:
            g["lr"] = group_lr(g, lr, epoch)
        row: dict[str, float] = {"epoch": epoch + 1, "lr": lr, **train_one_epoch(
            net, task, loader, optimizer, scaler, tp, d, epoch, use_amp)}  # fmt: skip
        val = None
        if d.main:  # validation on rank 0; the others get its score for the plateau rule
            val = evaluate_refs(task, model, data.val, classes, d.device, tp.workers)
        val = broadcast_object(val, d)
        assert isinstance(val, dict)
        row.update({"val_loss": val["loss"], "val_war": val["war"], "val_uar": val["uar"]})
        improved = progress.record(row, row[tp.select_on], opt.plateau_patience)
        if d.main:
            logger.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
            log.info("epoch %d/%d: loss %.3f acc %.3f | val loss %.3f war %.3f uar %.3f | "
                     "lr %.4g%s", epoch + 1, task.cfg.epochs, row["train_loss"], row["train_acc"],
                     row["val_loss"], row["val_war"], row["val_uar"], lr,
                     " *" if improved else "")  # fmt: skip
            if improved:
                _save_model(ckpt_dir / ckpt.BEST, model_name, task, classes, model, epoch + 1, val,
                            params.faces)  # fmt: skip
            save_state(last, {
                "fingerprint": fp, "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "history": progress.history, "best_score": progress.best_score,
                "best_epoch": progress.best_epoch, "reductions": progress.reductions,
                "bad_epochs": progress.bad_epochs, "best_loss": progress.best_loss,
                "mlflow_run_id": logger.run_id,
            })  # fmt: skip
        if d.world > 1:
            wait_for_all()  # rank 0 wrote the checkpoint alone
    if d.main:
        # The kept model lives beside the checkpoints (which DVC persists) and is copied out
        # at the end: a stage rerun that resumes a finished training restores its outputs.
        save_state(out_dir / MODEL_FILE, load_state(ckpt_dir / ckpt.BEST))
        atomic_write_text(out_dir / HISTORY, json.dumps(progress.history, indent=1))
    return TrainResult(progress.best_epoch, progress.best_score, progress.history,
                       out_dir / MODEL_FILE, model, d.main)  # fmt: skip


def train_one_epoch(net: nn.Module, task: Task, loader: DataLoader,
                    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    tp: TrainParams, d: Dist, epoch: int, use_amp: bool
                    ) -> dict[str, float]:  # fmt: skip
    """One pass over ``loader`` (0-based ``epoch``); the loss, accuracy, skipped samples and
    speed, summed over every process."""
    loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
    net.train()
    t0 = time.perf_counter()
    # Starting the workers draws their seed from torch's RNG (only in the first epoch with
    # persistent workers, so in another epoch after a resume): seed the dropout after it.
    batches = iter(loader)
    torch.manual_seed(tp.seed * 100_003 + epoch)  # dropout: the same draws after a resume
    # Sums stay on the device and are read once per epoch: a read per step would make the
    # host wait for every step to finish before it could queue the next.
    loss_sum = torch.zeros((), dtype=torch.float64, device=d.device)
    correct = torch.zeros((), dtype=torch.float64, device=d.device)
    seen, corrupted, last_batch = 0, 0, None
    for batch, skipped in batches:
        corrupted += skipped
        if corrupted > tp.allow_corrupted_samples:
            raise TrainingError(f"{corrupted} unreadable samples in epoch {epoch + 1} "
                                f"(train.allow_corrupted_samples: "
                                f"{tp.allow_corrupted_samples})")  # fmt: skip
        if batch is None:
            if d.world == 1:
                continue
            # Under DDP every rank must step (the backward pass all-reduces): a rank whose
            # batch was all unreadable steps on a stand-in with weight 0.
            train_step(net, task, last_batch or task.placeholder(), optimizer, scaler,
                       tp.grad_clip, d.device, use_amp, weight=0.0)  # fmt: skip
            continue
        loss, n_correct = train_step(net, task, batch, optimizer, scaler, tp.grad_clip,
                                     d.device, use_amp)  # fmt: skip
        n = len(batch[-1])
        loss_sum += loss.double() * n
        correct += n_correct
        seen += n
        last_batch = batch
    loss_sum, correct, seen, corrupted_all = all_sum(
        [loss_sum.item(), correct.item(), seen, corrupted], d)  # fmt: skip
    seconds = time.perf_counter() - t0
    return {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
            "corrupted": corrupted_all, "train_seconds": seconds,
            "samples_per_s": seen / seconds}  # fmt: skip


def train_step(net: nn.Module, task: Task, batch: Batch, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, grad_clip: float, device: torch.device,
               use_amp: bool, weight: float = 1.0
               ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One optimiser step on ``batch``; returns the loss and the number correct, on the device
    (reading them would wait for the step). ``weight`` 0 contributes nothing but still takes
    part in DDP's all-reduce."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        loss, n_correct = task.loss(net, batch, device)
    scaler.scale(loss * weight if weight != 1.0 else loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), n_correct


def _save_model(path: Path, name: str, task: Task, classes: list[str], model: nn.Module,
                epoch: int, val: dict[str, Any], faces: FacesParams) -> None:  # fmt: skip
    cfg = task.cfg
    meta = ModelMeta(
        # The faces params the training data was made with: inference reads them back.
        preprocessing=faces.model_dump(exclude={"workers"}),
        arch=name, classes=classes, config=task.model_config(), epoch=epoch,
        val={k: val[k] for k in ("war", "uar", "macro_f1", "loss")},
        image_size=cfg.image_size, grayscale=getattr(cfg, "grayscale", False),
        frames_per_clip=getattr(cfg, "frames_per_clip", None), backbone=task.backbone_info(),
        tta_flip=getattr(cfg, "tta_flip", False),
    )  # fmt: skip
    save_model_file(path, meta, model.state_dict())


def evaluate_refs(task: Task, model: nn.Module, refs: list[ClipRef], classes: list[str],
                  device: torch.device, workers: int) -> dict[str, Any]:  # fmt: skip
    """Clip-level report (WAR, UAR, macro-F1, …), mean negative log-likelihood, and the
    predicted class index per clip (``predictions``)."""
    model.eval()
    probs = task.predict(model, refs, device, workers)
    y = np.array([r.label for r in refs])
    predictions = probs.argmax(1).tolist()
    report = classification_report(y.tolist(), predictions, classes)
    report["loss"] = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)).mean())
    report["predictions"] = predictions
    return report
