"""PyTorch datasets over processed faces (``faces.csv`` + face files).

- :class:`ClipDataset` gives clips for video models (FAN): in training, segment-based sampling
  of K frames (the clip's selected frames cut into K equal segments, one random frame from each,
  redrawn every epoch); in evaluation, all selected frames.
- :class:`FrameDataset` gives single frames for image models (Deep-Emotion), optionally
  grayscale and resized; each item knows its clip so predictions can be aggregated per clip.

Randomness comes from ``(seed, epoch, index)``, so results do not depend on worker count.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from emoflow.config import AugmentParams
from emoflow.errors import InputError
from emoflow.faces.store import FaceClip
from emoflow.tables import read_table

NO_MANIFEST = "no split manifest: run `emoflow split` first"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass(frozen=True)
class ClipRef:
    trial_id: str
    participant: str
    label: int
    path: Path
    frames: int = 0  # selected frames in the face file; 0 = unknown (open it to count)


def read_manifest(manifest: Path, faces_dir: Path, classes: list[str]) -> list[ClipRef]:
    """Clips of a split manifest; labels as indices into ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    refs = []
    rows = read_table(manifest, ("trial_id", "participant", "label", "file"), NO_MANIFEST)
    for row_no, r in enumerate(rows, start=2):
        if r["label"] not in index:
            raise InputError(manifest, f"label {r['label']!r} is not one of {classes}",
                             f"row {row_no}")  # fmt: skip
        refs.append(ClipRef(r["trial_id"], r["participant"], index[r["label"]],
                            faces_dir / r["file"], int(r.get("frames") or 0)))  # fmt: skip
    return refs


def segment_indices(n: int, k: int, rng: np.random.Generator | None) -> list[int]:
    """K frame indices out of ``n``: one per equal segment, random (or the middle when no rng)."""
    if n <= 0:
        return []
    edges = np.linspace(0, n, k + 1)
    out = []
    for a, b in itertools.pairwise(edges):
        lo, hi = int(np.floor(a)), max(int(np.floor(a)) + 1, int(np.ceil(b)))
        hi = min(hi, n)
        out.append(int(rng.integers(lo, hi)) if rng is not None else (lo + hi - 1) // 2)
    return out


def augment(frames: list[np.ndarray], params: AugmentParams, rng: np.random.Generator
            ) -> list[np.ndarray]:  # fmt: skip
    """One random flip/zoom/rotation/brightness, applied alike to every frame of a clip."""
    flip = rng.random() < params.flip
    scale = rng.uniform(1 - params.zoom, 1 + params.zoom)
    angle = rng.uniform(-params.rotation_deg, params.rotation_deg)
    gain = rng.uniform(1 - params.brightness, 1 + params.brightness)
    out = []
    for f in frames:
        h, w = f.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        g = cv2.warpAffine(f, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if flip:
            g = g[:, ::-1]
        out.append(np.clip(g.astype(np.float32) * gain, 0, 255).astype(np.uint8))
    return out


def to_tensor(frames: list[np.ndarray], size: int | None, grayscale: bool) -> torch.Tensor:
    """``(T, C, H, W)`` float tensor, normalised (ImageNet statistics; 0.5/0.5 for gray)."""
    out = []
    for f in frames:
        if size is not None and f.shape[0] != size:
            f = cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA)
        x = f.astype(np.float32) / 255.0
        if grayscale:
            x = ((x if x.ndim == 2 else cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)) - 0.5) / 0.5
            x = x[None]
        else:
            if x.ndim == 2:
                x = np.repeat(x[..., None], 3, axis=2)
            x = ((x - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
        out.append(x)
    return torch.from_numpy(np.ascontiguousarray(np.stack(out)))


class _FaceData(Dataset):
    def __init__(self, clips: list[ClipRef], train: bool, augment_params: AugmentParams | None,
                 seed: int, size: int | None, grayscale: bool) -> None:  # fmt: skip
        self.clips = clips
        self.train = train
        self.augment_params = augment_params
        self.seed = seed
        self.size = size
        self.grayscale = grayscale
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Redraw the sampled frames and augmentations (call once per epoch)."""
        self.epoch = epoch

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _load(self, ref: ClipRef, which: list[int] | None, rng: np.random.Generator | None
              ) -> torch.Tensor:  # fmt: skip
        with FaceClip(ref.path) as clip:
            ids = range(len(clip)) if which is None else which
            frames = [clip.frame(i, grayscale=self.grayscale) for i in ids]
        if self.train and self.augment_params is not None and rng is not None:
            frames = augment(frames, self.augment_params, rng)
        return to_tensor(frames, self.size, self.grayscale)


class ClipDataset(_FaceData):
    """Clips as ``(frames (T, C, H, W), label)``; K sampled frames in training, all in eval."""

    def __init__(self, clips: list[ClipRef], train: bool, frames_per_clip: int = 3,
                 augment_params: AugmentParams | None = None, seed: int = 0,
                 size: int | None = None, grayscale: bool = False) -> None:  # fmt: skip
        super().__init__(clips, train, augment_params, seed, size, grayscale)
        self.k = frames_per_clip

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        ref = self.clips[index]
        if not self.train:
            return self._load(ref, None, None), ref.label
        rng = self._rng(index)
        with FaceClip(ref.path) as clip:
            n = len(clip)
        return self._load(ref, segment_indices(n, self.k, rng), rng), ref.label


class FrameDataset(_FaceData):
    """Every selected frame of every clip as ``(image (C, H, W), label, clip index)``."""

    def __init__(self, clips: list[ClipRef], train: bool,
                 augment_params: AugmentParams | None = None, seed: int = 0,
                 size: int | None = 48, grayscale: bool = True) -> None:  # fmt: skip
        super().__init__(clips, train, augment_params, seed, size, grayscale)
        self.items: list[tuple[int, int]] = []
        for ci, ref in enumerate(clips):
            n = ref.frames
            if not n:
                with FaceClip(ref.path) as clip:
                    n = len(clip)
            self.items.extend((ci, fi) for fi in range(n))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        ci, fi = self.items[index]
        ref = self.clips[ci]
        rng = self._rng(index) if self.train else None
        return self._load(ref, [fi], rng)[0], ref.label, ci


def collate_clips(batch: list[tuple[torch.Tensor, int]]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Pad clips of different lengths: ``(B, T_max, C, H, W)``, mask ``(B, T_max)``, labels."""
    t_max = max(x.shape[0] for x, _ in batch)
    first = batch[0][0]
    frames = first.new_zeros((len(batch), t_max, *first.shape[1:]))
    mask = torch.zeros(len(batch), t_max, dtype=torch.bool)
    for i, (x, _) in enumerate(batch):
        frames[i, : x.shape[0]] = x
        mask[i, : x.shape[0]] = True
    return frames, mask, torch.tensor([y for _, y in batch])
