"""Videos as users have them: phone sizes and rotation, variable frame rate, odd metadata,
cut-off uploads, several faces, headers that lie. Each went wrong once (issue 17)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hostile_videos import (
    drifting,
    framed,
    hopper,
    lying_duration,
    truncated,
    with_raw_title,
    write_video,
)

from emoflow.artifact import ModelMeta, ModelSpec
from emoflow.config import FacesParams
from emoflow.errors import InputError
from emoflow.faces.pipeline import process_frames
from emoflow.inference.predictor import find_faces
from emoflow.media.video import Cancelled, DecodeLimits, VideoFrames, iter_frames, probe

SPEC = ModelSpec(Path("."), ModelMeta(arch="fan", classes=["a", "b"], config={}, image_size=64),
                 FacesParams())  # fmt: skip


@pytest.mark.parametrize("size", [(600, 360), (572, 430), (360, 640), (1080, 1920)])
def test_any_frame_size_is_analysed(tmp_path: Path, size: tuple[int, int]) -> None:
    # Widths that are not a multiple of 16 made PyAV return padded rows, which dlib refused.
    clip = write_video(tmp_path / "odd.mp4", drifting(framed(size), 6))
    found = find_faces(SPEC, clip)
    assert found.faces_found == 6
    assert all(c.shape == (224, 224, 3) for c in found.chips)


def test_display_rotation_is_applied(tmp_path: Path) -> None:
    upright = drifting(framed((360, 480)), 6)
    sideways = [np.rot90(f, -1) for f in upright]  # stored turned, as phones store portrait
    clip = write_video(tmp_path / "phone.mp4", sideways, rotation=90)
    info = probe(clip)
    assert (info.width, info.height, info.rotation) == (360, 480, 90)
    first = next(iter_frames(clip, rgb=True))
    assert first.shape == (480, 360, 3) and first.flags["C_CONTIGUOUS"]
    assert np.abs(first.astype(int) - upright[0]).mean() < 8  # the codec's loss, not a turn
    found = find_faces(SPEC, clip)
    assert found.faces_found == 6
    _, _, x1, y1 = found.frames[0].box
    assert x1 <= 360 and y1 <= 480  # boxes in the upright picture's pixels


def test_variable_frame_rate_times_come_from_timestamps(tmp_path: Path) -> None:
    times = [0, 33, 66, 100, 133, 166, 200, 300, 400, 500, 600, 700]
    clip = write_video(tmp_path / "vfr.mp4", drifting(framed((480, 360)), 12),
                       times_ms=times)  # fmt: skip
    found = find_faces(dataclasses.replace(SPEC, preprocessing=FacesParams(frames=12)), clip)
    got = {f.index: f.time_s for f in found.frames}
    assert got == pytest.approx({i: t / 1000 for i, t in enumerate(times)}, abs=1e-3)


def test_metadata_that_is_not_utf8_is_read(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "plain.mp4", drifting(framed((480, 360)), 6))
    odd = with_raw_title(clip, tmp_path / "odd_title.mp4")
    assert probe(odd).frames == 6
    assert find_faces(SPEC, odd).faces_found == 6


def test_a_cut_off_upload_is_answered_with_a_warning(tmp_path: Path) -> None:
    frames = drifting(framed((480, 360)), 60)
    clip = write_video(tmp_path / "whole.mp4", frames, options={"movflags": "faststart"})
    cut = truncated(clip, tmp_path / "cut.mp4", share=0.4)
    found = find_faces(SPEC, cut)
    assert found.frames_decoded < 60
    assert any("truncated" in w and "of the 60 frames" in w for w in found.warnings)
    assert not find_faces(SPEC, clip).warnings


def test_with_several_faces_the_largest_is_chosen_and_said(tmp_path: Path) -> None:
    big, small = framed((480, 480)), hopper((280, 280))
    canvas = np.full((480, 960, 3), 90, np.uint8)
    canvas[:, :480] = big
    canvas[100:380, 600:880] = small
    clip = write_video(tmp_path / "two.mp4", [canvas] * 6)
    found = find_faces(SPEC, clip)
    assert found.faces_seen == 2
    assert any("2 faces in view" in w for w in found.warnings)
    _, _, x1, _ = found.frames[0].box
    assert x1 < 480  # the astronaut's (larger) face, on the left


def test_frames_decoded_again_equal_the_first_pass(tmp_path: Path) -> None:
    # B-frames (x264 superfast), key frames every 30 frames: `at` seeks, then matches timestamps.
    clip = write_video(tmp_path / "long.mp4", drifting(framed((480, 360)), 95, step=3))
    source = VideoFrames(clip)
    first = list(source)
    wanted = [0, 5, 31, 32, 61, 94, 2]
    again = source.at(wanted)
    assert sorted(again) == sorted(wanted)
    for i in wanted:
        assert np.array_equal(again[i], first[i]), i


def test_chips_are_the_same_when_frames_are_not_kept(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", drifting(framed((480, 360)), 40))
    params = FacesParams(frames=5)
    kept = process_frames(VideoFrames(clip), params)
    reread = process_frames(VideoFrames(clip), params, budget_bytes=0)
    assert kept.selected == reread.selected
    for a, b in zip(kept.chips, reread.chips, strict=True):
        assert np.array_equal(a, b)


def test_decoding_stops_at_the_limits_whatever_the_header_says(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "3s.mp4", drifting(framed((480, 360)), 90))
    liar = lying_duration(clip, tmp_path / "liar.mp4", seconds=0.5)
    assert probe(liar).duration_s < 1.0  # the header's claim
    assert len(list(iter_frames(liar))) == 90  # the truth
    with pytest.raises(InputError, match="longer than the limit of 1 s"):
        list(VideoFrames(liar, limits=DecodeLimits(max_seconds=1.0)))
    with pytest.raises(InputError, match="larger than the limit"):
        list(VideoFrames(clip, limits=DecodeLimits(max_pixels=320 * 200)))
    seen = []
    with pytest.raises(Cancelled):
        for f in VideoFrames(clip, stop=lambda: len(seen) >= 5):
            seen.append(f)
    assert len(seen) == 5
