"""Face detection fallbacks, alignment geometry, tracking choice and K-means selection."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from emoflow.config import FacesParams
from emoflow.faces.align import chip, landmarks, shape_points
from emoflow.faces.detect import Box, detect, pick
from emoflow.faces.footage import cut_away, faceless, pan, scene
from emoflow.faces.pipeline import process_frames
from emoflow.faces.select import patch_features, select_frames, shape_features


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return skimage.data.astronaut()  # RGB, one face of ~90 px


def test_hog_finds_a_plain_face(face: np.ndarray) -> None:
    det = detect(face)
    assert det is not None and det.detector == "hog"
    assert Box(170, 70, 270, 170).iou(det.box) > 0.6


def test_a_very_dark_frame_falls_back_to_contrast_enhancement(face: np.ndarray) -> None:
    dark = (face.astype(np.float32) * 0.04).astype(np.uint8)  # levels 0..10: HOG sees nothing
    assert detect(dark, clahe=False, cnn=False) is None
    det = detect(dark, cnn=False)
    assert det is not None and det.detector == "hog_clahe"


def test_a_tilted_face_falls_back_to_the_cnn(face: np.ndarray) -> None:
    m = cv2.getRotationMatrix2D((225, 110), 60, 1.0)
    tilted = cv2.warpAffine(face, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
    assert detect(tilted, cnn=False) is None
    det = detect(tilted)
    assert det is not None and det.detector == "cnn"


def test_detection_on_a_downscaled_frame_returns_full_resolution_boxes(face: np.ndarray) -> None:
    big = cv2.resize(face, (1024, 1024))
    full, half = detect(big), detect(big, scale=0.5)
    assert full is not None and half is not None
    assert full.box.iou(half.box) > 0.7


def test_tracking_keeps_the_face_consistent_with_the_previous_frame() -> None:
    near, large = (Box(100, 100, 180, 180), 0.5), (Box(300, 80, 460, 240), 2.0)
    assert pick([near, large], None) == large  # no history: largest, surest
    assert pick([near, large], Box(105, 98, 183, 178)) == near


def _eyes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    det = detect(rgb)
    assert det is not None
    pts = shape_points(landmarks(rgb, det.box))
    return pts[36:42].mean(0), pts[42:48].mean(0)


def test_chips_put_the_eyes_level_and_in_the_same_place(face: np.ndarray) -> None:
    det = detect(face)
    assert det is not None
    straight = chip(face, landmarks(face, det.box), size=224, padding=0.25)
    m = cv2.getRotationMatrix2D((225, 110), 15, 1.3)
    turned = cv2.warpAffine(face, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
    det2 = detect(turned)
    assert det2 is not None
    other = chip(turned, landmarks(turned, det2.box), size=224, padding=0.25)
    assert straight.shape == other.shape == (224, 224, 3)
    (l1, r1), (l2, r2) = _eyes(straight), _eyes(other)
    assert abs(l1[1] - r1[1]) < 3 and abs(l2[1] - r2[1]) < 3  # level
    assert np.linalg.norm(l1 - l2) < 4 and np.linalg.norm(r1 - r2) < 4  # same place


def test_padding_enlarges_the_face_box(face: np.ndarray) -> None:
    det = detect(face)
    assert det is not None
    shape = landmarks(face, det.box)
    tight, loose = chip(face, shape, 150, 0.0), chip(face, shape, 150, 0.5)
    (lt, rt), (ll, rl) = _eyes(cv2.resize(tight, (300, 300))), _eyes(cv2.resize(loose, (300, 300)))
    ratio = np.linalg.norm(rt - lt) / np.linalg.norm(rl - ll)
    assert ratio == pytest.approx(2.0, rel=0.1)  # dlib: the span grows (1 + 2·0.5) / (1 + 2·0)


def _walk(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(68, 2)) * 30
    drift = np.cumsum(rng.normal(size=(n, 68, 2)), axis=0)
    return base + drift


def test_kmeans_selection_is_deterministic_ordered_and_keeps_the_peak() -> None:
    pts = _walk(90)
    feats = shape_features(pts)
    ids = list(range(90))
    a = select_frames(feats, ids, 16, peak=57, seed=3)
    b = select_frames(feats, ids, 16, peak=57, seed=3)
    assert a == b and len(a) == 16 and a == sorted(a) and 57 in a
    assert len(set(a)) == 16


def test_short_clips_keep_every_face_frame() -> None:
    pts = _walk(5)
    assert select_frames(shape_features(pts), [0, 2, 3, 7, 9], 16, peak=4) == [0, 2, 3, 7, 9]


def test_peak_without_a_face_is_replaced_by_the_nearest_face_frame() -> None:
    pts = _walk(40)
    ids = [i for i in range(40) if i != 20]
    sel = select_frames(shape_features(pts[ids]), ids, 8, peak=20, seed=0)
    assert 19 in sel or 21 in sel


def test_shape_features_ignore_position_and_scale() -> None:
    pts = _walk(3)
    moved = pts * 2.5 + np.array([40.0, -7.0])
    np.testing.assert_allclose(shape_features(pts), shape_features(moved), atol=1e-6)


# Real footage: cuts away from the face, and long stretches without one. The astronaut's face
# (~90 px) needs full-resolution detection; a 288² crop keeps the detectors quick.
FULL = {"frames": 8, "detect_scale": 1.0}


@pytest.fixture(scope="module")
def portrait(face: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(face[0:288, 80:368])  # the face at about (102, 83)–(189, 170)


def test_a_cut_to_black_and_sky_stores_no_face_from_them(portrait: np.ndarray) -> None:
    # 22 face frames: detections at 0, 5, …, 20, so 21 is tracked and 22–24 would be too.
    clip = cut_away(list(pan(portrait, 22)), black=2, sky_frames=10)
    r = process_frames(clip, FacesParams(**FULL))
    assert set(r.points) == set(r.sources) == set(r.boxes) == set(range(22))
    assert len(r.selected) == 8 and max(r.selected) < 22 and len(r.chips) == 8
    assert r.dropped >= 1  # the track was refused at the cut, not merely lost later


@pytest.mark.parametrize("check", ["cut", "appearance"])
def test_each_check_alone_drops_the_track_at_a_cut(portrait: np.ndarray, check: str) -> None:
    clip = cut_away(list(pan(portrait, 22)), black=2, sky_frames=10)
    alone = {"cut": {"track_similarity": -1.0}, "appearance": {"cut_threshold": 255.0}}[check]
    r = process_frames(clip, FacesParams(**FULL, **alone))
    assert max(r.sources) == 21 and r.dropped >= 1


def test_the_appearance_check_refuses_a_scene_of_similar_brightness(portrait: np.ndarray) -> None:
    # Coffee after the astronaut changes the thumbnails little: only the patch test sees it.
    clip = [*pan(portrait, 22), *pan(scene("coffee", (288, 288)), 6)]
    r = process_frames(clip, FacesParams(**FULL, cut_threshold=255.0))
    assert max(r.sources) == 21


def test_tracking_survives_the_checks_on_a_moving_face(portrait: np.ndarray) -> None:
    r = process_frames(list(pan(portrait, 30, step=3.0)), FacesParams(**FULL))
    assert r.face_frames == 30 and r.dropped == 0
    assert r.counts["tracked"] == 24 and r.detector_calls == {"hog": 6}
    x0, y0, x1, y1 = r.boxes[29]
    assert Box(102 + 87, 83, 189 + 87, 170).iou(Box(x0, y0, x1, y1)) > 0.5  # frame pixels


def test_faceless_footage_stays_within_its_detector_budget() -> None:
    # What made a face-less frame cost ~0.5 s was the CNN (and CLAHE) on every frame. With the
    # budget: HOG once a frame, each fallback once every `fallback_every` frames (from the
    # first). At the sample's 640×480 and detect_scale 0.5, HOG costs ~5 ms and the CNN ~0.3 s
    # on one core here: 95 frames cost about 95 · 5 ms + 2 · 0.3 s ≈ 1.1 s plus decoding,
    # well over 50 frames/s (bench/faces.py measures it).
    n, params = 95, FacesParams()
    r = process_frames(faceless(n), params)
    assert r.frames_decoded == n and not r.sources
    assert r.detector_calls["hog"] == n
    fallbacks = -(-n // params.fallback_every)
    assert r.detector_calls["cnn"] == r.detector_calls["hog_clahe"] == fallbacks == 2


def test_fallback_every_one_is_the_whole_chain_on_every_frame() -> None:
    r = process_frames(faceless(6, (320, 240)), FacesParams(fallback_every=1))
    assert r.detector_calls == {"hog": 6, "hog_clahe": 6, "cnn": 6}


def test_the_budget_still_lets_the_cnn_find_a_face_only_it_sees(portrait: np.ndarray) -> None:
    m = cv2.getRotationMatrix2D((145, 125), 60, 1.0)
    tilted = cv2.warpAffine(portrait, m, (288, 288), borderMode=cv2.BORDER_REFLECT)
    params = FacesParams(**FULL, fallback_every=20)
    clip = [*faceless(10, (288, 288)), *pan(tilted, 20, step=1.0)]
    r = process_frames(clip, params)
    # The fallbacks ran on frame 0, then not before frame 20, where the CNN finds the face;
    # tracking (with the CNN once per detection interval) holds it to the end.
    assert min(r.sources) == 20 and r.sources[20] == "cnn"
    assert sorted(r.sources) == list(range(20, 30))


def test_the_5_point_track_runs_the_68_points_on_the_selected_frames_only(
        portrait: np.ndarray) -> None:  # fmt: skip
    clip = list(pan(portrait, 30, step=3.0))
    light = process_frames(clip, FacesParams(**FULL, track_points=5))
    full = process_frames(clip, FacesParams(**FULL))  # track_points 68, the default
    assert light.sources == full.sources and light.face_frames == 30
    assert sorted(light.points) == light.selected and len(light.chips) == 8
    assert sorted(full.points) == list(range(30))  # the thesis's loop: every face frame
    assert all(p.shape == (68, 2) for p in light.points.values())
    # The same face on the same frames: the 68 points agree within a pixel or two.
    gap = [np.linalg.norm(light.points[i] - full.points[i], axis=1).mean() for i in light.points]
    assert np.mean(gap) < 1.5, gap


def test_tracking_with_finer_points_than_the_chips_is_refused() -> None:
    with pytest.raises(ValueError, match="track_points 68 needs landmarks 68"):
        FacesParams(landmarks=5, track_points=68)
    assert FacesParams(landmarks=5, track_points=5).track_points == 5


def test_patch_features_ignore_brightness_and_contrast() -> None:
    rng = np.random.default_rng(0)
    patches = rng.uniform(0, 255, (3, 24, 24)).astype(np.float32)
    f = patch_features(np.stack([patches[0], patches[0] * 0.5 + 40, patches[1]]))
    assert f.shape == (3, 576) and np.allclose(np.linalg.norm(f, axis=1), 1, atol=1e-5)
    assert np.allclose(f[0], f[1], atol=1e-5) and not np.allclose(f[0], f[2], atol=0.1)
