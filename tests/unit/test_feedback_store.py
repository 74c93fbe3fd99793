"""The capture store (a folder here; S3 in the stack test), keep rules and records."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from emoflow.feedback.policy import KeepRules, keep_reasons
from emoflow.feedback.records import FeedbackIn, FeedbackRecord, PredictionRecord
from emoflow.feedback.store import CaptureStore, StoreError
from emoflow.inference.schema import ClipResult, FrameResult, ModelRef


def _result(probs: dict[str, float]) -> ClipResult:
    label = max(probs, key=probs.__getitem__)
    return ClipResult(label=label, confidence=probs[label], probabilities=probs,
                      frames=[FrameResult(index=3, time_s=0.1, box=(1, 2, 3, 4), weight=1.0)],
                      faces_found=5, frames_decoded=9,
                      model=ModelRef(name="emoflow-fan", version="4", backend="onnx"))  # fmt: skip


def test_records_round_trip_through_a_folder_store(tmp_path: Path) -> None:
    store = CaptureStore(str(tmp_path / "capture"))
    rec = PredictionRecord.of("a" * 32, "predict", _result({"anger": 0.7, "fear": 0.3}))
    assert rec.margin == pytest.approx(0.4)
    store.put_record(rec)
    assert store.record("a" * 32) == rec and store.record("b" * 32) is None
    store.put("clips/" + "a" * 32 + ".mp4", b"video")
    assert store.keys("clips") == ["clips/" + "a" * 32 + ".mp4"]
    assert store.records() == [rec]
    assert not list((tmp_path / "capture").rglob("*.tmp"))  # written through a rename
    fb = FeedbackRecord(prediction_id="a" * 32, label="fear", served_label=rec.label,
                        model=rec.model)  # fmt: skip
    store.put_feedback(fb)
    assert store.feedback("a" * 32) == fb and not fb.agrees


def test_a_broken_store_says_which_and_why(tmp_path: Path) -> None:
    (tmp_path / "capture").write_text("a file where the folder should be")
    store = CaptureStore(str(tmp_path / "capture"))
    with pytest.raises(StoreError, match="cannot write records/"):
        store.put_record(PredictionRecord.of("c" * 32, "predict", _result({"a": 1.0})))


def test_keep_rules() -> None:
    unsure = PredictionRecord.of("d" * 32, "predict", _result({"a": 0.4, "b": 0.35, "c": 0.25}))
    sure = PredictionRecord.of("e" * 32, "predict", _result({"a": 0.9, "b": 0.1}))
    rules = KeepRules(below_confidence=0.5, below_margin=0.1, sample_rate=0.0)
    assert keep_reasons(unsure, rules, False) == ["confidence 0.40 < 0.5", "margin 0.05 < 0.1"]
    assert keep_reasons(sure, rules, False) == []
    assert keep_reasons(sure, rules, True) == ["requested"]
    sampled = KeepRules(below_confidence=None, below_margin=None, sample_rate=0.5)
    rng = random.Random(0)
    kept = sum(bool(keep_reasons(sure, sampled, False, rng)) for _ in range(1000))
    assert 400 < kept < 600


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 32, "a" * 31, ""])
def test_feedback_ids_cannot_name_other_files(bad: str) -> None:
    with pytest.raises(ValueError, match="not a prediction id"):
        FeedbackIn(prediction_id=bad, label="anger")
