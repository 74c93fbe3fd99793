"""Which answered clips are worth keeping for a person to label: the ones the model was unsure
of, a random sample, and the ones a caller asks to keep."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from emoflow.feedback.records import PredictionRecord

Capture = Literal["none", "records", "clips"]


class KeepRules(BaseModel):
    """A clip is kept when any rule matches (with capture ``clips``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    below_confidence: float | None = Field(0.5, ge=0.0, le=1.0)
    below_margin: float | None = Field(0.1, ge=0.0, le=1.0,
                                       description="top probability minus the second")  # fmt: skip
    sample_rate: float = Field(0.0, ge=0.0, le=1.0, description="share kept at random")


def keep_reasons(record: PredictionRecord, rules: KeepRules, requested: bool,
                 rng: random.Random | None = None) -> list[str]:  # fmt: skip
    """Why this prediction's clip should be kept (empty: it should not)."""
    reasons = []
    if requested:
        reasons.append("requested")
    if rules.below_confidence is not None and record.confidence < rules.below_confidence:
        reasons.append(f"confidence {record.confidence:.2f} < {rules.below_confidence:g}")
    if rules.below_margin is not None and record.margin < rules.below_margin:
        reasons.append(f"margin {record.margin:.2f} < {rules.below_margin:g}")
    if rules.sample_rate > 0 and (rng or random).random() < rules.sample_rate:
        reasons.append(f"sampled at {rules.sample_rate:g}")
    return reasons
