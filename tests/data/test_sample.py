"""The sample generator's output, checked with the real decoders and dlib."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from scipy.ndimage import median_filter

from emoflow.config import EMOTIONS, SampleParams
from emoflow.faces.dlib_models import hog_detector, shape_predictor_68, shape_to_array
from emoflow.ingest.marks import FLAG_NAMES, read_marks
from emoflow.media.video import iter_frames, read_audio


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _truth(root: Path) -> list[dict[str, str]]:
    return _rows(root / "sample_truth" / "trials.csv")


def test_sessions_have_h264_video_and_aac_audio(small_sample: Path, small_sample_params) -> None:
    p = small_sample_params
    sessions = {r["participant"]: r for r in _rows(small_sample / "sample_truth" / "sessions.csv")}
    files = sorted((small_sample / "raw" / "sessions").glob("*.mp4"))
    assert [f.stem for f in files] == ["p001", "p002", "p003"]
    for f in files:
        with av.open(str(f)) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            assert v.codec_context.name == "h264"
            assert v.average_rate == p.fps
            assert (v.codec_context.width, v.codec_context.height) == (p.width, p.height)
            assert a.codec_context.name == "aac" and a.rate == p.sample_rate
            n = sum(1 for _ in c.decode(v))
        assert n == int(sessions[f.stem]["frames"])
        audio, sr = read_audio(f)
        assert abs(len(audio) / sr - n / p.fps) < 0.1


def _beep_onsets(audio: np.ndarray, sr: int, freq: float, min_len: float) -> list[float]:
    """Onsets of sustained tones at ``freq``: band power dominates and lasts ``min_len``."""
    win, hop = 512, 48
    frames = np.lib.stride_tricks.sliding_window_view(audio, win)[::hop] * np.hanning(win)
    spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    bins = np.fft.rfftfreq(win, 1 / sr)
    band = spec[:, np.abs(bins - freq) <= 150].sum(1)
    ratio = band / (spec.sum(1) + 1e-12)
    on = (ratio > 0.6) & (band > 1e-3 * band.max())
    onsets, i = [], 0
    while i < len(on):
        if on[i]:
            j = i
            while j < len(on) and on[j]:
                j += 1
            if (j - i) * hop / sr >= min_len:
                # window i is the first one dominated by the tone: its centre is past the onset
                onsets.append((i * hop + win / 2) / sr - 0.5 * win / sr)
            i = j
        i += 1
    return onsets


def test_beeps_sit_at_the_true_onsets_and_nowhere_else(small_sample: Path,
                                                      small_sample_params: SampleParams) -> None:
    p = small_sample_params
    truth = _truth(small_sample)
    for f in sorted((small_sample / "raw" / "sessions").glob("*.mp4")):
        audio, sr = read_audio(f)
        found = _beep_onsets(audio, sr, p.beep.frequency_hz, 0.6 * p.beep.duration_s)
        want = [float(r["onset_s"]) for r in truth if r["participant"] == f.stem]
        assert len(found) == len(want), (f.name, found, want)
        assert np.max(np.abs(np.array(found) - want)) <= 1 / p.fps


def test_protocol_is_what_a_stimulus_program_logs(small_sample: Path) -> None:
    rows = _rows(small_sample / "raw" / "protocol.csv")
    assert list(rows[0]) == ["participant", "trial", "emotion", "stimulus"]
    truth = _truth(small_sample)
    assert [(r["participant"], r["trial"], r["emotion"]) for r in rows] == [
        (t["participant"], t["trial"], t["protocol_emotion"]) for t in truth
    ]
    for pid in {r["participant"] for r in rows}:  # every emotion once per 7 trials
        assert sorted(r["emotion"] for r in rows if r["participant"] == pid) == sorted(EMOTIONS)


def test_marks_parse_and_equal_the_rendered_truth(small_sample: Path, small_sample_params) -> None:
    frames = round(small_sample_params.trial_s * small_sample_params.fps)
    truth = _truth(small_sample)
    files = sorted((small_sample / "marks").glob("*.txt"))
    assert [f.stem for f in files] == [t["trial_id"] for t in truth]
    for t, f in zip(truth, files, strict=True):
        m = read_marks(f, frame_count=frames)
        assert (m.start, m.peak, m.end) == (int(t["start"]), int(t["peak"]), int(t["end"]))
        assert m.flags == {k: int(t[k]) for k in FLAG_NAMES}


def test_every_flag_is_rendered(small_sample: Path) -> None:
    truth = _truth(small_sample)
    for flag in FLAG_NAMES:
        assert any(t[flag] == "1" for t in truth), flag
    for t in truth:
        assert (t["protocol_emotion"] != t["rendered_emotion"]) == (t["non_correlating"] == "1")
        cov = float(t["occluder_coverage"])
        if t["heavy_occlusion"] == "1":
            assert cov >= 0.6, t
        elif t["low_occlusion"] == "1":
            assert 0.3 <= cov < 0.6, t
        else:
            assert cov == 0.0


def _aligned_landmarks(frames: list[np.ndarray]) -> np.ndarray:
    """68 landmarks per frame, similarity-aligned on eye corners and nose bridge."""
    rgb0 = cv2.cvtColor(frames[0], cv2.COLOR_BGR2RGB)
    boxes = hog_detector()(rgb0, 0)
    assert boxes, "no face on the trial's first frame"
    out = []
    ref = None
    rigid = [36, 39, 42, 45, 27, 28]
    for f in frames:
        lm = shape_to_array(shape_predictor_68()(cv2.cvtColor(f, cv2.COLOR_BGR2RGB), boxes[0]))
        if ref is None:
            ref = lm
        m, _ = cv2.estimateAffinePartial2D(lm[rigid], ref[rigid])
        out.append(np.c_[lm, np.ones(68)] @ m.T)
    return np.array(out)


def test_marked_peak_is_where_the_face_moves_most(small_sample: Path, small_sample_params) -> None:
    p = small_sample_params
    window = round(p.trial_s * p.fps)
    truth = [t for t in _truth(small_sample) if t["rendered_emotion"] not in ("neutral", "sadness")
             and all(t[k] == "0" for k in FLAG_NAMES)][:4]  # fmt: skip
    assert len(truth) >= 3
    by_session: dict[str, list[dict[str, str]]] = {}
    for t in truth:
        by_session.setdefault(t["participant"], []).append(t)
    for pid, trials in by_session.items():
        wanted = {int(t["onset_frame"]): t for t in trials}
        clips: dict[str, list[np.ndarray]] = {}
        active: list[str] = []
        for i, frame in enumerate(iter_frames(small_sample / "raw" / "sessions" / f"{pid}.mp4")):
            if i in wanted:
                clips[wanted[i]["trial_id"]] = []
                active.append(wanted[i]["trial_id"])
            for tid in list(active):
                clips[tid].append(frame)
                if len(clips[tid]) == window:
                    active.remove(tid)
        for t in trials:
            lm = _aligned_landmarks(clips[t["trial_id"]])
            start, peak, end = int(t["start"]), int(t["peak"]), int(t["end"])
            rest = lm[: max(start, 1)].mean(0)
            moving = [*range(17, 27), *range(48, 68)]  # brows and mouth: blinks move the lids
            dev = np.linalg.norm(lm[:, moving] - rest[moving], axis=2).mean(1)
            # A blink tugs the brows for a frame or two: a 5-frame median removes it.
            dev = median_filter(dev, 5, mode="nearest")
            dev -= np.median(dev[: max(start, 1)])  # landmark jitter of a still face
            # dlib's landmarks are noisy: the marked peak must be near the top, the movement's
            # maximum inside [start, end], and the face still before start and after end.
            assert dev[peak] >= 0.6 * dev.max(), t["trial_id"]
            assert start <= int(np.argmax(dev)) <= end, t["trial_id"]
            assert dev[: max(start, 1)].max() < 0.35 * dev[peak], t["trial_id"]
            if end + 10 < window:
                assert dev[end + 10 :].max() < 0.5 * dev[peak], t["trial_id"]


def test_dlib_hog_finds_the_face_in_95_percent_of_frames(small_sample: Path) -> None:
    det = hog_detector()
    seen = found = 0
    for f in sorted((small_sample / "raw" / "sessions").glob("*.mp4")):
        for i, frame in enumerate(iter_frames(f)):
            if i % 6 == 0:
                seen += 1
                found += bool(det(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), 0))
    assert found / seen >= 0.95, f"detection rate {found / seen:.3f} over {seen} frames"


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def test_same_seed_same_bytes_other_seed_other_video(tmp_path: Path) -> None:
    from emoflow.sample.generate import generate_sample

    params = SampleParams(participants=1, trials_per_participant=2, seed=5, workers=1)
    generate_sample(params, tmp_path / "a")
    generate_sample(params, tmp_path / "b")
    generate_sample(params.model_copy(update={"seed": 6}), tmp_path / "c")
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a == b
    assert a["raw/sessions/p001.mp4"] != c["raw/sessions/p001.mp4"]


def test_failed_run_leaves_no_output_that_looks_complete(tmp_path: Path, monkeypatch) -> None:
    from emoflow.sample import generate

    def boom(*args, **kwargs):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(generate, "render_session", boom)
    params = SampleParams(participants=1, trials_per_participant=1, seed=1, workers=1)
    with pytest.raises(RuntimeError):
        generate.generate_sample(params, tmp_path / "data")
    assert [p for p in (tmp_path / "data").rglob("*") if p.is_file()] == []
    assert not (tmp_path / "data" / "raw" / "sessions").exists()


def test_contact_sheet_shows_every_expression(small_sample: Path, tmp_path: Path) -> None:
    from emoflow.sample.contact_sheet import write_contact_sheet

    out = tmp_path / "sheet.png"
    write_contact_sheet(small_sample, "p001", out, tile_width=200)
    img = cv2.imread(str(out))
    assert img.shape == (2 * 150, 4 * 200, 3)
    tiles = [img[r * 150 : (r + 1) * 150, c * 200 : (c + 1) * 200]
             for r in (0, 1) for c in range(4)]  # fmt: skip
    assert all(t.std() > 10 for t in tiles[: len(EMOTIONS)])  # seven real frames
    assert tiles[-1].max() == 0  # the eighth slot is empty
