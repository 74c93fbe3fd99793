"""What the service keeps of an answered prediction, and a downstream system's correction."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, Field, field_validator

from emoflow.inference.schema import ClipResult, FrameResult, ModelRef

ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


def new_prediction_id() -> str:
    """A random id (uuid4 hex): no order, no host, nothing to guess from."""
    return uuid.uuid4().hex


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class PredictionRecord(BaseModel):
    """One answered prediction as the service kept it (no pixels; the clip is a separate file)."""

    prediction_id: str
    time: str = Field(default_factory=now, description="UTC, ISO 8601")
    endpoint: str
    model: ModelRef
    label: str
    confidence: float
    margin: float = Field(description="top probability minus the second")
    probabilities: dict[str, float]
    frames: list[FrameResult] = Field(description="the frames used: index, time, box, weight")
    faces_found: int
    frames_decoded: int
    warnings: list[str] = Field(default_factory=list)
    clip: str | None = Field(None, description="the kept clip's key in the store, if kept")
    keep_reasons: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, prediction_id: str, endpoint: str, result: ClipResult) -> PredictionRecord:
        top = sorted(result.probabilities.values(), reverse=True)
        return cls(prediction_id=prediction_id, endpoint=endpoint, model=result.model,
                   label=result.label, confidence=result.confidence,
                   margin=top[0] - (top[1] if len(top) > 1 else 0.0),
                   probabilities=result.probabilities,
                   frames=result.frames,
                   faces_found=result.faces_found, frames_decoded=result.frames_decoded,
                   warnings=result.warnings)  # fmt: skip


class FeedbackIn(BaseModel):
    """``POST /feedback``: the label a downstream system (or a person) gives a prediction."""

    prediction_id: str = Field(description="as returned by /predict")
    label: str = Field(description="one of the served model's classes")
    source: str | None = Field(None, max_length=200, description="who says so (free text)")

    @field_validator("prediction_id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not ID_PATTERN.match(v):
            raise ValueError("not a prediction id (32 lower-case hex digits)")
        return v


class FeedbackRecord(FeedbackIn):
    time: str = Field(default_factory=now)
    served_label: str
    model: ModelRef

    @property
    def agrees(self) -> bool:
        return self.label == self.served_label
