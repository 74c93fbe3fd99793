import numpy as np
import pytest

from emoflow.config import SegmentParams
from emoflow.ingest.beeps import Beep, describe_mismatch, detect_beeps
from emoflow.sample.audio import _vowel, tone

SR = 48000


def _track(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.003 * rng.normal(size=round(seconds * SR))).astype(np.float32)


def _add(y: np.ndarray, sig: np.ndarray, at: float, gain: float) -> None:
    i = round(at * SR)
    j = min(len(y), i + sig.size)
    y[i:j] += gain * sig[: j - i]


def test_beeps_at_the_very_start_and_end_and_across_level_changes() -> None:
    y = _track(30.0)
    onsets = [0.0, 7.3, 14.05, 29.8]
    for k, t in enumerate(onsets):
        _add(y, tone(1000, 0.2, SR), t, 0.3 if k % 2 else 0.02)  # 24 dB apart
    y[round(10 * SR) : round(20 * SR)] *= 8  # an automatic-gain step
    found = [b.onset_s for b in detect_beeps(y, SR, SegmentParams())]
    assert len(found) == len(onsets)
    np.testing.assert_allclose(found, onsets, atol=0.005)


def test_distractors_are_not_beeps() -> None:
    rng = np.random.default_rng(1)
    y = _track(20.0)
    for t, f in ((1.0, 440.0), (3.0, 1500.0), (5.0, 660.0), (7.0, 2200.0)):
        _add(y, tone(f, 0.3, SR), t, 0.3)  # loud tones at other frequencies
    at = 9.0
    while at < 15.0:  # speech whose harmonics cross 1 kHz
        d = rng.uniform(0.12, 0.35)
        _add(y, _vowel(d, SR, rng), at, 0.4)
        at += d + 0.05
    for t in rng.uniform(0, 20, 30):  # clicks
        _add(y, rng.normal(0, 1, 200).astype(np.float32), t, 0.8)
    _add(y, tone(1000, 0.03, SR), 17.0, 0.3)  # a blip of the right pitch, too short
    assert detect_beeps(y, SR, SegmentParams()) == []


def test_a_click_inside_a_beep_does_not_move_its_onset() -> None:
    y = _track(5.0)
    _add(y, tone(1000, 0.2, SR), 2.0, 0.1)
    _add(y, np.random.default_rng(2).normal(0, 1, 300).astype(np.float32), 2.04, 1.0)
    (beep,) = detect_beeps(y, SR, SegmentParams())
    assert beep.onset_s == pytest.approx(2.0, abs=0.005)


def test_band_is_a_parameter() -> None:
    y = _track(5.0)
    _add(y, tone(2500, 0.2, SR), 1.0, 0.2)
    assert detect_beeps(y, SR, SegmentParams()) == []
    params = SegmentParams.model_validate({"band_hz": {"min": 2400, "max": 2600}})
    assert [round(b.onset_s, 2) for b in detect_beeps(y, SR, params)] == [1.0]


def test_mismatch_points_at_the_gap() -> None:
    y = _track(40.0)
    for t in (1.0, 10.0, 19.0, 37.0):  # the beep near 28 s is missing
        _add(y, tone(1000, 0.2, SR), t, 0.2)
    beeps = detect_beeps(y, SR, SegmentParams())
    text = describe_mismatch(beeps, 5)
    assert text.startswith("4 trigger beeps detected, protocol lists 5 trials")
    assert "after the beep at 19.00 s" in text


def _beeps(onsets: list[float]) -> list[Beep]:
    return [Beep(t, 0.2, 30.0, 0.9) for t in onsets]


@pytest.mark.parametrize(
    ("onsets", "decoded_s", "declared_s", "says"),
    [
        ([1, 10, 19, 28], 36.0, 62.0, "most likely the recording is cut short: its audio "
                                      "decodes to 36.0 s of the 62.0 s"),
        ([1, 10, 19, 37], 45.0, 45.0, "a beep is probably missing there"),
        ([1, 10, 19, 28], 35.5, 35.5, "most likely the protocol has extra rows (row 6)"),
        ([1, 10, 19, 28], 60.0, 60.0, "either the protocol has extra rows (row 6) or the beeps "
                                      "there were not detected"),
        ([1], 60.0, 60.0, "too few beeps to compare gaps"),
    ],
)  # fmt: skip
def test_mismatch_names_its_most_likely_cause(onsets: list[float], decoded_s: float,
                                              declared_s: float, says: str) -> None:  # fmt: skip
    text = describe_mismatch(_beeps(onsets), 5, decoded_s, declared_s, 6.0, "row 6")
    assert says in text, text
    assert text.count("most likely") <= 1
