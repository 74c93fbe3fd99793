"""The review side of the feedback loop: kept clips → a queue for `emoflow mark` → labelled
clips in the reviewed data → `emoflow trim`'s second source. Real files throughout: a folder
store, clips written with PyAV, marks and labels written by the labeller's state machine."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
import pytest

from emoflow.config import TrimParams
from emoflow.errors import InputError
from emoflow.feedback.accept import REVIEWED_COLUMNS, REVIEWED_CSV, accept, reviewed_ids
from emoflow.feedback.pull import pull_queue, trial_id_of
from emoflow.feedback.records import FeedbackRecord, PredictionRecord
from emoflow.feedback.store import CaptureStore
from emoflow.inference.schema import ClipResult, FrameResult, ModelRef
from emoflow.ingest.marks import marks_path
from emoflow.ingest.trim import trim_trials
from emoflow.labelling.app import labeller_for, with_review
from emoflow.labelling.clip import load_clip
from emoflow.labelling.queue import load_trials
from emoflow.labelling.review import label_path, load_review
from emoflow.labelling.state import Labeller, Outcome
from emoflow.tables import write_table

CLASSES = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
FRAMES = 12


def _clip_bytes(path: Path, frames: int = FRAMES) -> bytes:
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            img = np.full((48, 64, 3), i * 20, np.uint8)
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode())
    return path.read_bytes()


def _record(pid: str, probs: dict[str, float], peak: int | None = 7) -> PredictionRecord:
    label = max(probs, key=probs.__getitem__)
    frames = [] if peak is None else [FrameResult(index=i, weight=0.9 if i == peak else 0.05)
                                       for i in (2, peak, 9)]  # fmt: skip
    res = ClipResult(label=label, confidence=probs[label], probabilities=probs, frames=frames,
                     faces_found=3, frames_decoded=FRAMES,
                     model=ModelRef(name="emoflow-fan", version="3", backend="onnx"))  # fmt: skip
    return PredictionRecord.of(pid, "predict", res)


@pytest.fixture
def store(tmp_path: Path) -> CaptureStore:
    """Three kept clips (confidence 0.45, 0.30, 0.40), one record without a clip, and one
    correction."""
    store = CaptureStore(str(tmp_path / "capture"))
    clip = _clip_bytes(tmp_path / "served.mp4")
    for pid, conf in (("a" * 32, 0.45), ("b" * 32, 0.30), ("c" * 32, 0.40)):
        rest = (1 - 2 * conf + 0.05) / 2
        rec = _record(pid, {"fear": conf, "happiness": conf - 0.05, "anger": rest,
                            "sadness": rest})  # fmt: skip
        rec.clip = f"clips/{pid}.mp4"
        store.put(rec.clip, clip)
        store.put_record(rec)
    store.put_record(_record("d" * 32, {"anger": 0.2, "fear": 0.8}))  # a record only
    rec_b = store.record("b" * 32)
    assert rec_b is not None
    store.put_feedback(FeedbackRecord(prediction_id="b" * 32, label="sadness", source="crm",
                                      served_label=rec_b.label, model=rec_b.model))  # fmt: skip
    return store


def _label(queue: Path, marks: Path, trial_id: str, keys: str) -> Labeller:
    """What `emoflow mark` does for one queue clip, driven by key presses."""
    trial = next(t for t in load_trials(queue / "trials.csv") if t.trial_id == trial_id)
    review = load_review(queue / "trials.csv")
    assert review is not None
    clip = load_clip(trial.clip)
    labeller = with_review(labeller_for(clip, marks_path(marks, trial_id)), trial, review,
                           marks, "ana")  # fmt: skip
    for k in keys:
        assert labeller.press(ord(k)) is Outcome.CONTINUE, labeller.message
    return labeller


def test_pull_builds_a_least_confident_first_queue_for_mark(store: CaptureStore,
                                                            tmp_path: Path) -> None:  # fmt: skip
    queue = tmp_path / "queue"
    rows = pull_queue(store, queue, CLASSES)
    assert [r["prediction_id"][0] for r in rows] == ["b", "c", "a"]  # 0.30, 0.40, 0.45
    trials = load_trials(queue / "trials.csv")
    assert [t.trial_id for t in trials] == [trial_id_of(p * 32) for p in "bca"]
    assert [t.emotion for t in trials] == ["sadness", "fear", "fear"]  # feedback pre-fills
    assert trials[0].clip.read_bytes() == store.get("clips/" + "b" * 32 + ".mp4")
    review = load_review(queue / "trials.csv")
    assert review is not None and review.classes == tuple(CLASSES)
    hint = review.hints[trials[0].trial_id]
    assert (hint.served_label, hint.peak_frame, hint.feedback_label) == ("fear", 7, "sadness")
    assert load_review(tmp_path / "nope.csv") is None
    meta = json.loads((queue / "queue.json").read_text())
    (queue / "queue.json").write_text(json.dumps({**meta, "classes": [f"c{i}" for i in range(10)]}))
    with pytest.raises(InputError, match="2 to 9 distinct classes"):
        load_review(queue / "trials.csv")
    (queue / "queue.json").write_text(json.dumps(meta))
    # already reviewed ids stay out; nothing left leaves the old queue alone
    assert len(pull_queue(store, queue, CLASSES, reviewed={"b" * 32})) == 2
    assert pull_queue(store, queue, CLASSES, reviewed={p * 32 for p in "abc"}) == []
    assert len(load_trials(queue / "trials.csv")) == 2


def test_the_labeller_confirms_or_changes_the_class(store: CaptureStore, tmp_path: Path) -> None:
    queue, marks = tmp_path / "queue", tmp_path / "marks"
    pull_queue(store, queue, CLASSES)
    tid = trial_id_of("b" * 32)
    lab = _label(queue, marks, tid, "")
    assert lab.frame == 7 and lab.label == "sadness" and lab.dirty  # the hint, not confirmed
    lab = _label(queue, marks, tid, "aasddds3e")  # start 5, end 8, class fear, no peak
    assert lab.message == "not saved: mark peak first (S)" and lab.label == "fear"
    assert not marks_path(marks, tid).exists() and not label_path(marks, tid).exists()
    lab = _label(queue, marks, tid, "asddsas3e")  # start 6, end 8, peak 7, class 3 = fear
    assert lab.message == "saved (class fear)" and not lab.dirty
    assert marks_path(marks, tid).read_text() == "6\t8\t7\t0\t0\t0\t0\t0\n"
    doc = json.loads(label_path(marks, tid).read_text())
    assert doc["label"] == "fear" and doc["labeller"] == "ana"
    reopened = _label(queue, marks, tid, "")
    assert reopened.label == "fear" and not reopened.dirty  # the saved class, not the hint
    assert "8" not in CLASSES and _label(queue, marks, tid, "8").label == "fear"  # no 8th class


def test_accept_adds_labelled_clips_once_with_their_provenance(store: CaptureStore,
                                                               tmp_path: Path) -> None:  # fmt: skip
    queue, marks, out = tmp_path / "queue", tmp_path / "marks", tmp_path / "reviewed"
    pull_queue(store, queue, CLASSES)
    _label(queue, marks, trial_id_of("b" * 32), "asddsase")  # sadness, as the feedback said
    _label(queue, marks, trial_id_of("a" * 32), "sdddsas4")  # marked, class 4, no E: not saved
    added = accept(queue, marks, out, CLASSES, dvc=False)
    assert [r["prediction_id"] for r in added] == ["b" * 32]
    with (out / REVIEWED_CSV).open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(REVIEWED_COLUMNS)
    row = rows[0]
    assert (row["emotion"], row["served_label"], row["feedback_label"], row["labeller"],
            row["model_version"], row["start"], row["end"], row["peak"]) == (
        "sadness", "fear", "sadness", "ana", "3", "6", "8", "7")  # fmt: skip
    clip = out / "clips" / f"{row['trial_id']}.mp4"
    assert clip.read_bytes() == (queue / f"{row['trial_id']}.mp4").read_bytes()
    before = (out / REVIEWED_CSV).read_bytes()
    assert accept(queue, marks, out, CLASSES, dvc=False) == []  # idempotent
    assert (out / REVIEWED_CSV).read_bytes() == before
    assert reviewed_ids(out) == {"b" * 32}
    left = pull_queue(store, queue, CLASSES, reviewed_ids(out))
    assert [r["prediction_id"][0] for r in left] == ["c", "a"]


def test_accept_refuses_bad_labels_and_marks_naming_the_file(store: CaptureStore,
                                                             tmp_path: Path) -> None:  # fmt: skip
    queue, marks, out = tmp_path / "queue", tmp_path / "marks", tmp_path / "reviewed"
    pull_queue(store, queue, CLASSES)
    tid = trial_id_of("c" * 32)
    _label(queue, marks, tid, "asddsase")
    label = label_path(marks, tid)
    label.write_text(json.dumps({"label": "contempt", "labeller": "x", "time": "t"}))
    with pytest.raises(InputError, match=r"label 'contempt' is not one of the classes") as e:
        accept(queue, marks, out, CLASSES, dvc=False)
    assert e.value.path == label
    label.unlink()
    with pytest.raises(InputError, match="no label file") as e:
        accept(queue, marks, out, CLASSES, dvc=False)
    _label(queue, marks, tid, "asddsase")
    marks_path(marks, tid).write_text(f"1\t{FRAMES}\t2\t0\t0\t0\t0\t0\n")  # end past the clip
    with pytest.raises(InputError) as e:
        accept(queue, marks, out, CLASSES, dvc=False)
    assert e.value.path == marks_path(marks, tid) and "frame" in e.value.rule
    # an edited queue row: the participant must stay the clip's own group
    text = (queue / "trials.csv").read_text().replace(f",r{'c' * 32},", ",p001,")
    (queue / "trials.csv").write_text(text)
    with pytest.raises(InputError, match="participant 'p001'") as e:
        accept(queue, marks, out, CLASSES, dvc=False)
    assert e.value.where == "row 3"
    assert not out.exists()  # nothing half-written


def test_trim_reads_the_reviewed_clips_as_a_second_source(store: CaptureStore,
                                                          tmp_path: Path) -> None:  # fmt: skip
    queue, marks, out = tmp_path / "queue", tmp_path / "marks", tmp_path / "reviewed"
    pull_queue(store, queue, CLASSES)
    _label(queue, marks, trial_id_of("b" * 32), "asddsase")
    _label(queue, marks, trial_id_of("c" * 32), "aaaasdddddsaas1e")  # 3..8, peak 6, anger
    accept(queue, marks, out, CLASSES, dvc=False)
    valid = tmp_path / "valid_trials.csv"
    write_table(valid, REVIEWED_COLUMNS[:11], [])  # no lab trials passed: the reviewed only
    clips = trim_trials(valid, tmp_path / "trials", tmp_path / "clips", TrimParams(), out)
    got = {c["participant"]: (c["label"], c["frames"], c["peak"]) for c in clips}
    assert got == {f"r{'b' * 32}": ("sadness", 3, 1), f"r{'c' * 32}": ("anger", 6, 3)}
    assert (tmp_path / "clips" / "anger" / f"{trial_id_of('c' * 32)}.mp4").is_file()
    # a reviewed trial id that is also a lab trial id is refused
    lab = [{**r, "trial_id": trial_id_of("b" * 32)} for r in csv.DictReader(
        (out / REVIEWED_CSV).open(newline=""))][:1]  # fmt: skip
    write_table(valid, REVIEWED_COLUMNS[:11], lab)
    with pytest.raises(InputError, match="is also in"):
        trim_trials(valid, out / "clips", tmp_path / "clips2", TrimParams(), out)
