"""The training loader as it was at 304a51a, kept callable as the baseline for bench/train.py and
for the test that the uint8 path gives the models the same input.

Per clip it opened the face file twice (the frame count, then the frames), augmented through
float (uint8 → float → uint8), and normalised on the CPU into float32 ``(T, C, H, W)``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from emoflow.config import AugmentParams
from emoflow.datasets.clips import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augmentation,
    ClipDataset,
    segment_indices,
)
from emoflow.faces.store import FaceClip


def old_augment(frames: list[np.ndarray], params: AugmentParams, rng: np.random.Generator
                ) -> list[np.ndarray]:  # fmt: skip
    """The same draws and geometry; the brightness through float32 and back."""
    a = Augmentation.draw(params, rng)
    return [np.clip(a.geometry(f).astype(np.float32) * a.gain, 0, 255).astype(np.uint8)
            for f in frames]  # fmt: skip


def old_to_tensor(frames: list[np.ndarray], size: int | None, grayscale: bool) -> torch.Tensor:
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


class OldClips(Dataset):
    """304a51a's ``ClipDataset.__getitem__`` over a (new) ClipDataset's clips and settings."""

    def __init__(self, ds: ClipDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def _load(self, path, which: list[int] | None, rng: np.random.Generator | None
              ) -> torch.Tensor:  # fmt: skip
        ds = self.ds
        with FaceClip(path) as clip:
            ids = range(len(clip)) if which is None else which
            frames = [clip.frame(i, grayscale=ds.grayscale) for i in ids]
        if ds.train and ds.augment_params is not None and rng is not None:
            frames = old_augment(frames, ds.augment_params, rng)
        return old_to_tensor(frames, ds.size, ds.grayscale)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        ds = self.ds
        ref = ds.clips[index]
        if not ds.train:
            return self._load(ref.path, None, None), ref.label
        rng = np.random.default_rng([ds.seed, ds.epoch, index])
        with FaceClip(ref.path) as clip:
            n = len(clip)
        return self._load(ref.path, segment_indices(n, ds.k, rng), rng), ref.label


def old_collate_clips(batch: list[tuple[torch.Tensor, int]]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    t_max = max(x.shape[0] for x, _ in batch)
    first = batch[0][0]
    frames = first.new_zeros((len(batch), t_max, *first.shape[1:]))
    mask = torch.zeros(len(batch), t_max, dtype=torch.bool)
    for i, (x, _) in enumerate(batch):
        frames[i, : x.shape[0]] = x
        mask[i, : x.shape[0]] = True
    return frames, mask, torch.tensor([y for _, y in batch])
