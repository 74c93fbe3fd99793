"""A frozen backbone's features per face file, computed once and cached: the heads then train on
them in seconds on a CPU, and every fold of a cross-validation reuses them.

Each face file gets ``(T, 2, d)`` float32: every selected frame and its mirror image (the one
augmentation a cached feature can still carry), computed exactly as the image path feeds the
trunk (resized to ``image_size`` like ``ClipDataset``, ``normalise``, the trunk in eval mode).
The cache key is the trunk's weights, the image size and the face file's content, so other
weights or a rewritten face file compute anew. Files: ``<cache>/features/<key>/<file hash>.pt``
(``$EMOFLOW_WEIGHTS_CACHE`` or ``~/.cache/emoflow/weights``), written atomically, read back with
``weights_only=True``.

:class:`BlendshapeCache` does the same for MediaPipe's 52 blendshape scores
(``faces/blendshapes.py``; or its normalised landmarks, ``train.fan.expression``), computed
on each stored chip and its mirror as they are (the extractor upscales small ones itself, as
it does for the inference path), keyed by the
``face_landmarker.task`` file and the extractor's framing; :class:`JoinedFeatures` concatenates
caches per frame (``fused``: the frozen trunk's ⊕ the blendshapes).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from emoflow.datasets.clips import ClipRef, Key, normalise, segment_indices, to_uint8
from emoflow.faces.store import FaceClip
from emoflow.fsio import atomic_path
from emoflow.models.fan import EXPRESSION_DIM, EXPRESSION_DIMS
from emoflow.models.weights_cache import default_cache_dir

log = logging.getLogger(__name__)

BATCH = 64  # frames per trunk call


def weights_fingerprint(module: nn.Module) -> str:
    """The weights and every buffer, the non-persistent ones too: a trunk's input
    normalisation (dlib's mean and scale, FaceNet's standardisation) lives there, and a change
    of it must compute the features anew."""
    h = hashlib.sha256()
    tensors = {**dict(module.named_buffers()), **module.state_dict()}
    for name, t in sorted(tensors.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class CachedFeatures:
    """Per-frame features of face files, ``(T, 2, d)``, from memory, disk (``dir``) or computed
    (``compute``, by a subclass)."""

    feature_dim: int
    dir: Path

    def __init__(self, key: str, cache_dir: Path | None) -> None:
        self.dir = (cache_dir or default_cache_dir()) / "features" / key
        self.memory: dict[Path, Tensor] = {}
        self.computed = 0

    def compute(self, path: Path) -> Tensor:
        raise NotImplementedError

    def get(self, path: Path) -> Tensor:
        if path not in self.memory:
            self.memory[path] = self._load_or_compute(path)
        return self.memory[path]

    def _load_or_compute(self, path: Path) -> Tensor:
        data = Path(path).read_bytes()
        file = self.dir / f"{hashlib.sha256(data).hexdigest()[:24]}.pt"
        if file.is_file():
            try:
                return torch.load(file, map_location="cpu", weights_only=True)
            except Exception as e:  # a damaged cache file is recomputed, not fatal
                log.warning("%s: unreadable (%s); computing again", file, e)
        feats = self.compute(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(file) as tmp:
            torch.save(feats, tmp)
        self.computed += 1
        return feats


class FeatureCache(CachedFeatures):
    """Features of face files under ``trunk`` (frozen)."""

    def __init__(self, trunk: nn.Module, feature_dim: int, image_size: int, device: torch.device,
                 cache_dir: Path | None = None) -> None:  # fmt: skip
        self.trunk = trunk
        self.feature_dim = feature_dim
        self.size = image_size
        self.device = device
        super().__init__(f"{type(trunk).__name__}-{image_size}-{weights_fingerprint(trunk)}",
                         cache_dir)  # fmt: skip

    @torch.no_grad()
    def compute(self, path: Path) -> Tensor:
        with FaceClip(path) as clip:
            frames = to_uint8(clip.frames(), self.size)  # (T, H, W, 3) uint8
        both = torch.stack([frames, frames.flip(2)], 1).flatten(0, 1)  # frame, mirror, ...
        was_training = self.trunk.training
        self.trunk.eval()
        try:
            out = [self.trunk(normalise(both[i : i + BATCH].to(self.device), False)).float().cpu()
                   for i in range(0, len(both), BATCH)]  # fmt: skip
        finally:
            self.trunk.train(was_training)
        return torch.cat(out).reshape(len(frames), 2, -1)


class BlendshapeCache(CachedFeatures):
    """MediaPipe's expression features of each stored chip and of its mirror image: its 52
    blendshape scores, or (``kind``) its normalised landmarks, or both."""

    feature_dim = EXPRESSION_DIM

    def __init__(self, cache_dir: Path | None = None, kind: str = "blendshapes") -> None:
        from emoflow.faces import blendshapes

        super().__init__(blendshapes.expression_fingerprint(kind), cache_dir)
        self.kind = kind
        self.feature_dim = EXPRESSION_DIMS[kind]
        self.missed = 0  # chips (or mirrors) where MediaPipe found no face: zero rows

    def compute(self, path: Path) -> Tensor:
        from emoflow.faces.blendshapes import extractor

        with FaceClip(path) as clip:
            chips = clip.frames()
        both = [c for chip in chips for c in (chip, np.ascontiguousarray(chip[:, ::-1]))]
        scores, missed = extractor().expression(both, self.kind)
        if missed:
            log.warning("%s: no face found by MediaPipe in %d of %d chips (mirrors included): "
                        "zero blendshapes there", path, missed, len(both))  # fmt: skip
        self.missed += missed
        return torch.from_numpy(scores).reshape(len(chips), 2, -1)


class JoinedFeatures:
    """Several caches' features side by side per frame: ``(T, 2, Σ d)``."""

    def __init__(self, parts: list[CachedFeatures]) -> None:
        self.parts = parts
        self.feature_dim = sum(p.feature_dim for p in parts)
        self.dir = parts[0].dir

    @property
    def computed(self) -> int:
        return sum(p.computed for p in self.parts)

    def get(self, path: Path) -> Tensor:
        return torch.cat([p.get(path) for p in self.parts], dim=-1)


class FeatureClipDataset(Dataset):
    """:class:`~emoflow.datasets.clips.ClipDataset` over cached features: ``(features (T, d),
    label)``; in training K segment-sampled frames and, with chance ``flip``, their mirrors (one
    draw per clip); in evaluation all frames as they are (``mirror``: their mirror images')."""

    def __init__(self, clips: list[ClipRef], cache: CachedFeatures | JoinedFeatures, train: bool,
                 frames_per_clip: int = 3, flip: float = 0.0, seed: int = 0,
                 mirror: bool = False) -> None:  # fmt: skip
        self.mirror = int(mirror)
        self.clips = clips
        self.train = train
        self.k = frames_per_clip
        self.flip = flip
        self.seed = seed
        self.epoch = 0
        before = cache.computed
        self.features = [cache.get(ref.path) for ref in clips]  # computed up front, in order
        computed = cache.computed - before
        log.log(logging.INFO if computed else logging.DEBUG,  # validation reads them every epoch
                "features: %d clips (%d computed, the rest cached) under %s", len(clips),
                computed, cache.dir)  # fmt: skip

    def __len__(self) -> int:
        return len(self.clips)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, key: Key) -> tuple[Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        feats, label = self.features[index], self.clips[index].label
        if not self.train:
            return feats[:, self.mirror], label
        rng = np.random.default_rng([self.seed, epoch, index])
        mirror = int(rng.random() < self.flip)
        return feats[segment_indices(len(feats), self.k, rng), mirror], label
