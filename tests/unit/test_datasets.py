"""Segment sampling, augmentation, padding and the two datasets, on face files from a photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from emoflow.config import AugmentParams
from emoflow.datasets.clips import (
    ClipDataset,
    ClipRef,
    FrameDataset,
    augment,
    collate_clips,
    normalise,
    segment_indices,
)
from emoflow.faces.store import FaceClip, write_face_clip
from emoflow.training.tasks import SkipCorrupt, train_loader


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[ClipRef]:
    """Two face files: 10 and 4 frames cut from the astronaut photo, shifted per frame."""
    root = tmp_path_factory.mktemp("faces")
    img = skimage.data.astronaut()
    refs = []
    for c, n in enumerate((10, 4)):
        frames = [cv2.resize(img[60 + 3 * i : 200 + 3 * i, 150:290], (64, 64)) for i in range(n)]
        path = root / f"c{c}.faces.zip"
        write_face_clip(path, frames, {"trial_id": f"c{c}"})
        refs.append(ClipRef(f"c{c}", f"p{c}", c, path))
    return refs


@pytest.mark.parametrize("n", [1, 2, 3, 4, 10, 16])
def test_segment_sampling_draws_one_frame_per_segment(n: int) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = segment_indices(n, 3, rng)
        assert len(idx) == 3 and idx == sorted(idx) and all(0 <= i < n for i in idx)
        if n >= 3:
            edges = np.linspace(0, n, 4)
            assert all(edges[k] - 1 < i < edges[k + 1] for k, i in enumerate(idx))


def test_face_file_round_trip(clips: list[ClipRef]) -> None:
    with FaceClip(clips[0].path) as c:
        assert len(c) == 10 and c.meta["trial_id"] == "c0"
        assert c.frame(3).shape == (64, 64, 3) and c.frame(3, grayscale=True).shape == (64, 64)


def test_training_clips_redraw_frames_each_epoch(clips: list[ClipRef]) -> None:
    ds = ClipDataset(clips, train=True, frames_per_clip=3, seed=5)
    x0, y0 = ds[0]
    assert x0.shape == (3, 64, 64, 3) and x0.dtype == torch.uint8 and y0 == 0
    again, _ = ds[0]
    assert torch.equal(x0, again)  # same epoch, same draw: deterministic
    draws = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        draws.append(ds[0][0])
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_eval_clips_return_every_selected_frame(clips: list[ClipRef]) -> None:
    ds = ClipDataset(clips, train=False)
    assert ds[0][0].shape[0] == 10 and ds[1][0].shape[0] == 4
    assert torch.equal(ds[1][0], ds[1][0])


def test_collate_pads_and_masks(clips: list[ClipRef]) -> None:
    ds = ClipDataset(clips, train=False)
    frames, mask, labels = collate_clips([ds[0], ds[1]])
    assert frames.shape == (2, 10, 64, 64, 3)
    assert mask.sum(1).tolist() == [10, 4] and labels.tolist() == [0, 1]
    assert frames[1, 4:].abs().sum() == 0


def test_frame_dataset_is_grayscale_48_by_default(clips: list[ClipRef]) -> None:
    ds = FrameDataset(clips, train=False)
    assert len(ds) == 14
    x, y, ci = ds[12]
    assert x.shape == (48, 48, 1) and x.dtype == torch.uint8 and (y, ci) == (1, 1)
    z = normalise(x, grayscale=True)
    assert z.shape == (1, 48, 48) and float(z.min()) >= -1.0 and float(z.max()) <= 1.0


def test_augmentation_changes_pixels_alike_across_a_clip() -> None:
    img = cv2.resize(skimage.data.astronaut()[60:200, 150:290], (64, 64))
    rng = np.random.default_rng(1)
    a, b = augment([img, img.copy()], AugmentParams(flip=1.0), rng)
    assert np.array_equal(a, b)  # one draw for the whole clip
    assert not np.array_equal(a, img)
    unchanged = augment([img], AugmentParams(flip=0, zoom=0, rotation_deg=0, brightness=0), rng)
    assert np.array_equal(unchanged[0], img)


def test_face_files_are_byte_identical_for_the_same_faces(tmp_path) -> None:
    import time

    faces = [cv2.resize(skimage.data.astronaut()[60:200, 150:290], (32, 32))]
    write_face_clip(tmp_path / "a.faces.zip", faces, {"trial_id": "x"})
    time.sleep(2.1)  # zip time stamps have a 2-second resolution
    write_face_clip(tmp_path / "b.faces.zip", faces, {"trial_id": "x"})
    assert (tmp_path / "a.faces.zip").read_bytes() == (tmp_path / "b.faces.zip").read_bytes()


@pytest.fixture(scope="module")
def six_clips(tmp_path_factory: pytest.TempPathFactory) -> list[ClipRef]:
    """Six 8-frame face files, each with its own label (so a batch names its clips)."""
    root = tmp_path_factory.mktemp("six")
    img = skimage.data.astronaut()
    refs = []
    for c in range(6):
        frames = [cv2.resize(img[40 + 4 * i + c : 180 + 4 * i + c, 150:290], (48, 48))
                  for i in range(8)]  # fmt: skip
        path = root / f"c{c}.faces.zip"
        write_face_clip(path, frames, {"trial_id": f"c{c}"})
        refs.append(ClipRef(f"c{c}", f"p{c}", c, path, frames=8))
    return refs


def _epoch(loader, epoch: int) -> list[tuple[list[int], torch.Tensor]]:
    """One epoch as the trainer runs it: (labels, frames) per batch."""
    loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
    return [(b[2].tolist(), b[0].clone()) for b, _ in loader]


def test_persistent_workers_redraw_every_epoch_and_a_resume_draws_alike(
    six_clips: list[ClipRef],
) -> None:
    """With 2 persistent workers (the default params), frames and augmentations are drawn anew
    every epoch, and epoch e draws the same whether the run started at 0 or resumed at e."""

    def loader():
        ds = SkipCorrupt(ClipDataset(six_clips, train=True, frames_per_clip=3,
                                     augment_params=AugmentParams(), seed=3))  # fmt: skip
        return train_loader(ds, 2, collate_clips, workers=2, seed=3)

    whole = loader()
    epochs = [_epoch(whole, e) for e in range(3)]
    per_clip = [{y: x[i] for ys, x in batches for i, y in enumerate(ys)} for batches in epochs]
    assert sorted(per_clip[0]) == list(range(6))
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        same = [c for c in range(6) if torch.equal(per_clip[a][c], per_clip[b][c])]
        assert not same, f"epochs {a} and {b} drew the same frames for clips {same}"
    resumed = loader()
    again = _epoch(resumed, 2)
    assert [ys for ys, _ in again] == [ys for ys, _ in epochs[2]]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(again, epochs[2], strict=True))


def _baseline():
    """bench/loader_baseline.py: the loader as it was (float32 normalised on the CPU)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "loader_baseline.py"
    spec = importlib.util.spec_from_file_location("loader_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("size", [None, 32, 48])
def test_models_get_the_same_input_as_from_the_float_loader(clips: list[ClipRef],
                                                            size: int | None) -> None:  # fmt: skip
    old = _baseline()
    for train in (False, True):  # all frames; K sampled frames without augmentation
        new_ds = ClipDataset(clips, train=train, frames_per_clip=3, seed=2, size=size)
        for i in range(len(clips)):
            x, y = new_ds[i]
            want, y_old = old.OldClips(new_ds)[i]
            got = normalise(x, grayscale=False)
            assert got.dtype == want.dtype == torch.float32 and y == y_old
            assert torch.equal(got, want)  # bit for bit
    gray = FrameDataset(clips, train=False, size=48, grayscale=True)
    x, _, ci = gray[3]
    with FaceClip(clips[ci].path) as c:
        want = old.old_to_tensor([c.frame(3, grayscale=True)], 48, True)[0]
    assert torch.equal(normalise(x, grayscale=True), want)
    frames = collate_clips([ClipDataset(clips, train=False)[i] for i in (0, 1)])[0]
    batch = normalise(frames, grayscale=False)  # (B, T, C, H, W), as FAN takes it
    assert torch.equal(batch[1, :4], old.OldClips(ClipDataset(clips, train=False))[1][0])


def test_uint8_augmentation_matches_the_float_round_trip() -> None:
    old = _baseline()
    img = cv2.resize(skimage.data.astronaut()[60:200, 150:290], (64, 64))
    for seed in range(8):
        p = AugmentParams(brightness=0.5)
        new = augment([img, img[::2, ::2].copy()], p, np.random.default_rng(seed))
        want = old.old_augment([img, img[::2, ::2].copy()], p, np.random.default_rng(seed))
        assert all(np.array_equal(a, b) for a, b in zip(new, want, strict=True))
