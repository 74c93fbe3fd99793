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
    segment_indices,
)
from emoflow.faces.store import FaceClip, write_face_clip


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
    assert x0.shape == (3, 3, 64, 64) and y0 == 0
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
    assert frames.shape == (2, 10, 3, 64, 64)
    assert mask.sum(1).tolist() == [10, 4] and labels.tolist() == [0, 1]
    assert frames[1, 4:].abs().sum() == 0


def test_frame_dataset_is_grayscale_48_by_default(clips: list[ClipRef]) -> None:
    ds = FrameDataset(clips, train=False)
    assert len(ds) == 14
    x, y, ci = ds[12]
    assert x.shape == (1, 48, 48) and (y, ci) == (1, 1)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0


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
