"""What the entry service keeps of its answers, written behind the answer, never before it.

Each answered ``/predict`` has a ``prediction_id``. With ``EMOFLOW_CAPTURE=records`` its record
(no pixels) goes to the capture store; with ``clips`` the uploaded clip goes too when a keep
rule matches (``emoflow.feedback.policy``). Writes run on one background thread per worker: a
slow or broken store never delays or fails an answer, it only counts
``emoflow_capture_failures_total``. A clip waits for its upload in a spool folder on disk
(the request's own temp folder goes when the request ends).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from emoflow.feedback.policy import keep_reasons
from emoflow.feedback.records import FeedbackIn, FeedbackRecord, PredictionRecord
from emoflow.feedback.store import CLIPS, CaptureStore, StoreError
from emoflow.inference import ClipResult
from emoserve import metrics
from emoserve.errors import Rejected
from emoserve.settings import ServiceSettings

log = logging.getLogger("emoflow.service")
MAX_PENDING = 32  # writes waiting for the store; past it new ones are dropped (and counted)


class Capture:
    def __init__(self, settings: ServiceSettings) -> None:
        self.mode = settings.capture
        self.rules = settings.keep_rules
        self.store = (CaptureStore(settings.capture_store, settings.capture_s3_endpoint)
                      if self.mode != "none" and settings.capture_store else None)  # fmt: skip
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="emoflow-capture")
        self._pending = threading.BoundedSemaphore(MAX_PENDING)
        self._spool = Path(tempfile.mkdtemp(prefix="emoflow-capture-")) if self.store else None

    def keep(self, prediction_id: str, endpoint: str, result: ClipResult,
             clip: Path | None = None, requested: bool = False) -> None:  # fmt: skip
        """Queue the record (and the clip when a rule says so); returns at once."""
        if self.store is None:
            return
        record = PredictionRecord.of(prediction_id, endpoint, result)
        spooled = None
        if self.mode == "clips" and clip is not None:
            record.keep_reasons = keep_reasons(record, self.rules, requested)
            if record.keep_reasons:
                record.clip = f"{CLIPS}/{prediction_id}{clip.suffix}"
                spooled = self._spool / f"{prediction_id}{clip.suffix}"  # type: ignore[operator]
                shutil.copyfile(clip, spooled)
        if not self._pending.acquire(blocking=False):
            metrics.capture_failed("record")
            log.warning("capture: %d writes pending; %s not kept", MAX_PENDING, prediction_id)
            if spooled is not None:
                spooled.unlink(missing_ok=True)
            return
        self._pool.submit(self._write, record, spooled)

    def _write(self, record: PredictionRecord, spooled: Path | None) -> None:
        assert self.store is not None
        try:
            if spooled is not None and record.clip is not None:
                try:  # the clip first: a record never names a clip that is not there
                    self.store.put(record.clip, spooled.read_bytes())
                    metrics.captured("clip")
                except StoreError as exc:
                    metrics.capture_failed("clip")
                    log.warning("capture: %s", exc)
                    record.clip = None
            self.store.put_record(record)
            metrics.captured("record")
        except StoreError as exc:
            metrics.capture_failed("record")
            log.warning("capture: %s", exc)
        finally:
            if spooled is not None:
                spooled.unlink(missing_ok=True)
            self._pending.release()

    def feedback(self, given: FeedbackIn, classes: list[str]) -> FeedbackRecord:
        """Record a correction of a kept prediction (blocking: call it off the event loop)."""
        if self.store is None:
            raise Rejected(409, "capture_off", "this service keeps no predictions "
                           "(EMOFLOW_CAPTURE=none): there is nothing to correct")  # fmt: skip
        if given.label not in classes:
            raise Rejected(422, "unknown_label", f"{given.label!r} is not one of the served "
                           f"model's classes: {', '.join(classes)}")  # fmt: skip
        try:
            record = self.store.record(given.prediction_id)
            if record is None:
                raise Rejected(404, "unknown_prediction", f"no kept prediction "
                               f"{given.prediction_id}")  # fmt: skip
            fb = FeedbackRecord(**given.model_dump(), served_label=record.label,
                                model=record.model)  # fmt: skip
            self.store.put_feedback(fb)
        except StoreError as exc:
            metrics.capture_failed("feedback")
            raise Rejected(503, "store_unavailable", str(exc)) from exc
        metrics.feedback(fb.agrees, record.model.version or "")
        return fb
