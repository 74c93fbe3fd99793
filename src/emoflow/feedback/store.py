"""Where kept predictions, clips and feedback live: a folder, or an S3-compatible bucket.

One code path for both (fsspec): ``/var/lib/emoflow/capture`` or ``s3://bucket/prefix`` (the
endpoint of an S3-compatible store such as the compose stack's SeaweedFS from settings,
credentials from the usual ``AWS_*`` variables). Every object is written whole: a folder
through a temp name and a rename, S3 by one PUT. Keys:

    records/<prediction_id>.json     PredictionRecord
    clips/<prediction_id><ext>       the uploaded clip, when a keep rule matched
    feedback/<prediction_id>.json    FeedbackRecord (the latest correction)
"""

from __future__ import annotations

import os
import uuid
from pathlib import PurePosixPath
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from emoflow.errors import EmoflowError
from emoflow.feedback.records import FeedbackRecord, PredictionRecord

RECORDS, CLIPS, FEEDBACK = "records", "clips", "feedback"


class StoreError(EmoflowError):
    """The store could not be read or written (down, no rights, no such bucket)."""


class CaptureStore:
    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        options: dict[str, Any] = {}
        if url.startswith("s3://") and endpoint_url:
            options["client_kwargs"] = {"endpoint_url": endpoint_url}
        self.url = url
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url, **options)
        except (ImportError, ValueError) as exc:
            raise StoreError(f"{url}: cannot use this store ({exc})") from exc
        self.local = isinstance(self.fs, LocalFileSystem)

    def _path(self, key: str) -> str:
        return str(PurePosixPath(self.root) / key)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            if self.local:  # a reader never sees half a file
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = f"{path}.{uuid.uuid4().hex}.tmp"
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            else:
                self.fs.pipe_file(path, data)
        except Exception as exc:  # any failure of the store is the store's, reported as such
            raise StoreError(f"{self.url}: cannot write {key} ({type(exc).__name__}: "
                             f"{exc})") from exc  # fmt: skip

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none under ``key``."""
        try:
            return self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise StoreError(f"{self.url}: cannot read {key} ({type(exc).__name__}: "
                             f"{exc})") from exc  # fmt: skip

    def keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (one level), sorted; temp files excluded."""
        try:
            names = self.fs.ls(self._path(prefix), detail=False)
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise StoreError(f"{self.url}: cannot list {prefix} ({exc})") from exc
        return sorted(f"{prefix}/{PurePosixPath(n).name}" for n in names
                      if not n.endswith(".tmp"))  # fmt: skip

    # -- typed objects -------------------------------------------------------------------------

    def put_record(self, record: PredictionRecord) -> None:
        self.put(f"{RECORDS}/{record.prediction_id}.json", record.model_dump_json().encode())

    def record(self, prediction_id: str) -> PredictionRecord | None:
        data = self.get(f"{RECORDS}/{prediction_id}.json")
        return PredictionRecord.model_validate_json(data) if data is not None else None

    def put_feedback(self, feedback: FeedbackRecord) -> None:
        self.put(f"{FEEDBACK}/{feedback.prediction_id}.json", feedback.model_dump_json().encode())

    def feedback(self, prediction_id: str) -> FeedbackRecord | None:
        data = self.get(f"{FEEDBACK}/{prediction_id}.json")
        return FeedbackRecord.model_validate_json(data) if data is not None else None

    def records(self) -> list[PredictionRecord]:
        out = []
        for key in self.keys(RECORDS):
            data = self.get(key)
            if data is not None:
                out.append(PredictionRecord.model_validate_json(data))
        return out
