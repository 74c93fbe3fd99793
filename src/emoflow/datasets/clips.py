"""PyTorch datasets over processed faces (``faces.csv`` + face files).

- :class:`ClipDataset` gives clips for video models (FAN): in training, segment-based sampling
  of K frames (the clip's selected frames cut into K equal segments, one random frame from each,
  redrawn every epoch); in evaluation, all selected frames.
- :class:`FrameDataset` gives single frames for image models (Deep-Emotion), optionally
  grayscale and resized; each item knows its clip so predictions can be aggregated per clip.

Items are uint8 and channels-last — a clip ``(T, H, W, C)``, a frame ``(H, W, C)`` — and
:func:`normalise` turns a batch into the models' float input on the device: a quarter of the
bytes through shared memory, pinning and the host-to-device copy, and no float arithmetic in
the workers.

Randomness comes from ``(seed, epoch, index)``, so results do not depend on worker count. The
epoch travels with each index (:class:`EpochSampler`): persistent DataLoader workers hold their
own copy of the dataset, which a ``set_epoch`` in the main process never reaches.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from emoflow.config import AugmentParams
from emoflow.errors import InputError
from emoflow.faces.store import FaceClip
from emoflow.tables import read_table

NO_MANIFEST = "no split manifest: run `emoflow split` first"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

Key = int | tuple[int, int]  # an index, or (epoch, index) from EpochSampler


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


@dataclass(frozen=True)
class Augmentation:
    """One draw of flip/zoom/rotation/brightness, applied alike to every frame of a clip."""

    flip: bool
    scale: float
    angle: float
    gain: float

    @classmethod
    def draw(cls, params: AugmentParams, rng: np.random.Generator) -> Augmentation:
        flip = bool(rng.random() < params.flip)
        scale = rng.uniform(1 - params.zoom, 1 + params.zoom)
        angle = rng.uniform(-params.rotation_deg, params.rotation_deg)
        gain = rng.uniform(1 - params.brightness, 1 + params.brightness)
        return cls(flip, scale, angle, gain)

    def geometry(self, f: np.ndarray) -> np.ndarray:
        """Zoom and rotation about the centre (reflected borders), then the flip."""
        h, w = f.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), self.angle, self.scale)
        g = cv2.warpAffine(f, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return cv2.flip(g, 1) if self.flip else g


def augment(frames: list[np.ndarray], params: AugmentParams, rng: np.random.Generator
            ) -> list[np.ndarray]:  # fmt: skip
    """One random augmentation (:class:`Augmentation`) for all frames of a clip, in uint8: the
    brightness gain is a 256-entry table (``clip(v * gain)`` truncated, exactly what a float
    pass gives), so no frame makes a float round trip."""
    a = Augmentation.draw(params, rng)
    table = np.clip(np.arange(256, dtype=np.float32) * a.gain, 0, 255).astype(np.uint8)
    return [cv2.LUT(a.geometry(f), table) for f in frames]


def to_uint8(frames: list[np.ndarray], size: int | None) -> torch.Tensor:
    """``(T, H, W, C)`` uint8 tensor (C = 1 for grayscale frames), resized to ``size``."""
    out = []
    for f in frames:
        if size is not None and f.shape[0] != size:
            f = cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA)
        out.append(f if f.ndim == 3 else f[..., None])
    return torch.from_numpy(np.stack(out))


@functools.lru_cache(maxsize=16)
def _table(device: torch.device, grayscale: bool) -> torch.Tensor:
    """Each channel's 256 normalised values, channel-major, float32 as numpy computes them."""
    v = np.arange(256, dtype=np.float32)[:, None] / 255.0
    t = (v - 0.5) / 0.5 if grayscale else (v - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(t.T).reshape(-1)).to(device)


@functools.lru_cache(maxsize=16)
def _offsets(device: torch.device, channels: int) -> torch.Tensor:
    return (torch.arange(channels, dtype=torch.int32) * 256).to(device)


def normalise(x: torch.Tensor, grayscale: bool, channels_last: bool = False) -> torch.Tensor:
    """The models' input from uint8 channels-last images, on the images' device.

    ``x``: uint8 ``(..., H, W, C)`` (the datasets' items and batches), C = 1 (gray) or 3 (RGB).
    Returns float32 ``(..., C, H, W)``: ``(v / 255 - mean) / std`` with ImageNet's statistics
    for colour and 0.5 / 0.5 for grayscale; a gray image for a colour model is repeated to three
    channels. The values are looked up in a table computed in float32 exactly as the former
    CPU path computed them, so every device gives the same bits. ``channels_last=True`` skips
    the final copy into the default layout (the memory is NHWC already; for a channels-last
    model on a GPU).
    """
    if x.dtype != torch.uint8:
        raise TypeError(f"normalise expects uint8 images, got {x.dtype}")
    channels = x.shape[-1]
    if channels not in (1, 3) or (grayscale and channels != 1):
        raise ValueError(f"normalise expects (..., H, W, {1 if grayscale else '1 or 3'}), got "
                         f"{tuple(x.shape)}")  # fmt: skip
    if channels == 1 and not grayscale:
        x, channels = x.expand(*x.shape[:-1], 3), 3
    idx = x.to(torch.int32) + _offsets(x.device, channels)
    out = _table(x.device, grayscale)[idx].movedim(-1, -3)
    return out if channels_last else out.contiguous()


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` from an inner sampler, so the epoch reaches the dataset in any
    worker: persistent workers keep the dataset copy they started with, and a resumed run's
    workers start at the resumed epoch. ``set_epoch`` also reshuffles the inner sampler (e.g.
    a ``DistributedSampler``)."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, int(i)) for i in self.inner)

    def __len__(self) -> int:
        assert isinstance(self.inner, Sized)
        return len(self.inner)


def _worker_init(_worker_id: int) -> None:
    cv2.setNumThreads(1)  # a spawned or forkserver worker starts with OpenCV's default


def face_loader(dataset: Dataset, *, workers: int, **kwargs: Any) -> DataLoader:
    """A DataLoader over face files whose workers run OpenCV on one thread.

    Workers decode one item at a time: OpenCV's thread pool (a thread per core in every
    worker) only oversubscribes the CPU. A forked worker cannot shrink a pool its parent
    started (OpenCV deadlocks), so the parent drops to one thread before its workers start
    (a training process does not decode) and each worker sets it again for spawned starts.
    """
    if workers > 0:
        cv2.setNumThreads(1)
    return DataLoader(dataset, num_workers=workers,
                      worker_init_fn=_worker_init if workers > 0 else None, **kwargs)  # fmt: skip


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
        """The epoch for plain integer indices (direct access, no EpochSampler)."""
        self.epoch = epoch

    def _key(self, key: Key) -> tuple[int, int]:
        return key if isinstance(key, tuple) else (self.epoch, key)

    def _rng(self, epoch: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, index])

    def _load(self, clip: FaceClip, which: list[int] | range, rng: np.random.Generator | None
              ) -> torch.Tensor:  # fmt: skip
        frames = [clip.frame(i, grayscale=self.grayscale) for i in which]
        if self.train and self.augment_params is not None and rng is not None:
            frames = augment(frames, self.augment_params, rng)
        return to_uint8(frames, self.size)


class ClipDataset(_FaceData):
    """Clips as ``(frames uint8 (T, H, W, C), label)``; K sampled frames in training, all in
    eval."""

    def __init__(self, clips: list[ClipRef], train: bool, frames_per_clip: int = 3,
                 augment_params: AugmentParams | None = None, seed: int = 0,
                 size: int | None = None, grayscale: bool = False) -> None:  # fmt: skip
        super().__init__(clips, train, augment_params, seed, size, grayscale)
        self.k = frames_per_clip

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int]:
        epoch, index = self._key(key)
        ref = self.clips[index]
        with FaceClip(ref.path) as clip:  # opened once: its frame count and frames
            if not self.train:
                return self._load(clip, range(len(clip)), None), ref.label
            rng = self._rng(epoch, index)
            return self._load(clip, segment_indices(len(clip), self.k, rng), rng), ref.label


class FrameDataset(_FaceData):
    """Every selected frame of every clip as ``(image uint8 (H, W, C), label, clip index)``."""

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

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int, int]:
        epoch, index = self._key(key)
        ci, fi = self.items[index]
        ref = self.clips[ci]
        rng = self._rng(epoch, index) if self.train else None
        with FaceClip(ref.path) as clip:
            return self._load(clip, [fi], rng)[0], ref.label, ci


def batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised batch; in a DataLoader worker it lives in shared memory (as
    ``default_collate`` does), so handing it to the main process copies nothing."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)


def collate_clips(batch: list[tuple[torch.Tensor, int]]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Pad clips of different lengths: ``(B, T_max, H, W, C)``, mask ``(B, T_max)``, labels."""
    t_max = max(x.shape[0] for x, _ in batch)
    first = batch[0][0]
    frames = batch_tensor((len(batch), t_max, *first.shape[1:]), first.dtype)
    mask = torch.zeros(len(batch), t_max, dtype=torch.bool)
    out = frames.numpy()  # numpy copies on one thread: torch's intra-op threads only cost here
    for i, (x, _) in enumerate(batch):
        out[i, : x.shape[0]] = x.numpy()
        out[i, x.shape[0] :] = 0
        mask[i, : x.shape[0]] = True
    return frames, mask, torch.tensor([y for _, y in batch])


def collate_frames(batch: list[tuple[torch.Tensor, int, int]]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Frames ``(B, H, W, C)``, labels, clip indices."""
    first = batch[0][0]
    x = batch_tensor((len(batch), *first.shape), first.dtype)
    np.stack([i[0].numpy() for i in batch], out=x.numpy())
    return x, torch.tensor([i[1] for i in batch]), torch.tensor([i[2] for i in batch])
