"""``emoflow review pull``: the capture store's kept clips → a labelling queue for ``emoflow mark``.

The queue is a folder ``mark`` walks as it walks the lab's trials: ``trials.csv`` (least
confident first) with one ``<trial_id>.mp4`` beside each row, plus ``queue.json`` (the classes,
which makes ``mark`` ask for the class too). ``emotion`` is pre-filled with the feedback label
when a downstream system sent one, else the model's label; the model's label, confidence and the
frame it weighted most are hints. Clips already in the reviewed data are left out.

Each kept prediction is its own participant, ``r<prediction_id>``, so a subject-independent split
keeps every reviewed clip in one set (a served clip's person is unknown).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from pathlib import Path

from emoflow.feedback.records import ID_PATTERN, PredictionRecord, now
from emoflow.feedback.store import CaptureStore
from emoflow.fsio import atomic_dir, atomic_write_text
from emoflow.labelling.queue import CLIP_SUFFIX
from emoflow.labelling.review import QUEUE_COLUMNS, QUEUE_META
from emoflow.tables import write_table

log = logging.getLogger(__name__)

TRIALS_CSV = "trials.csv"


def participant_of(prediction_id: str) -> str:
    return f"r{prediction_id}"


def trial_id_of(prediction_id: str) -> str:
    """The marks contract's ``<participant>_<trial, 3 digits>``: one trial per prediction."""
    return f"{participant_of(prediction_id)}_001"


def peak_frame(record: PredictionRecord) -> int | None:
    """The frame the model weighted most (its attention), if the record lists frames."""
    if not record.frames:
        return None
    return max(record.frames, key=lambda f: f.weight).index


def pull_queue(store: CaptureStore, out: Path, classes: Sequence[str],
               reviewed: Collection[str] = ()) -> list[dict]:  # fmt: skip
    """Write the queue of ``store``'s kept clips not in ``reviewed`` (prediction ids) to ``out``.

    ``out`` is replaced whole; marks and labels live elsewhere (``mark --marks-dir``), so a new
    pull keeps what was labelled: a clip's trial id is its prediction id.
    """
    rows: list[dict] = []
    clips: dict[str, bytes] = {}
    skipped = {"no clip": 0, "reviewed": 0}
    for record in store.records():
        pid = record.prediction_id
        if not ID_PATTERN.match(pid) or record.clip is None:
            skipped["no clip"] += 1
            continue
        if pid in reviewed:
            skipped["reviewed"] += 1
            continue
        data = store.get(record.clip)
        if data is None:  # the record says kept, the store lost it: nothing to label
            log.warning("review pull: %s names %s, which the store does not hold", pid,
                        record.clip)  # fmt: skip
            skipped["no clip"] += 1
            continue
        feedback = store.feedback(pid)
        fb_label = feedback.label if feedback is not None else ""
        prefill = next((lab for lab in (fb_label, record.label) if lab in classes), "")
        trial_id = trial_id_of(pid)
        clips[trial_id] = data
        rows.append({
            "trial_id": trial_id, "participant": participant_of(pid), "emotion": prefill,
            "prediction_id": pid, "model_name": record.model.name,
            "model_version": record.model.version or "", "served_label": record.label,
            "confidence": f"{record.confidence:.6f}", "margin": f"{record.margin:.6f}",
            "peak_frame": "" if (p := peak_frame(record)) is None else p,
            "feedback_label": fb_label,
            "feedback_source": (feedback.source or "") if feedback is not None else "",
            "predicted_at": record.time,
        })  # fmt: skip
    rows.sort(key=lambda r: (float(r["confidence"]), r["predicted_at"]))
    log.info("review pull: %d clips to review from %s (least confident first); left out: %d "
             "without a clip, %d already reviewed", len(rows), store.url, skipped["no clip"],
             skipped["reviewed"])  # fmt: skip
    if not rows:
        log.info("review pull: nothing to review; %s left as it was", out)
        return rows
    with atomic_dir(out) as tmp:
        for trial_id, data in clips.items():
            (tmp / f"{trial_id}{CLIP_SUFFIX}").write_bytes(data)
        write_table(tmp / TRIALS_CSV, QUEUE_COLUMNS, rows)
        atomic_write_text(tmp / QUEUE_META, json.dumps(
            {"classes": list(classes), "store": store.url, "pulled_at": now(),
             "clips": len(rows)}, indent=2) + "\n")  # fmt: skip
    return rows
