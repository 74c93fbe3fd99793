"""The service's own Prometheus metrics, beside BentoML's request metrics on ``/metrics``.

``bentoml.metrics`` (not ``prometheus_client``) so the multiprocess registry of BentoML's
workers collects them; they are created on first use, inside a worker.
"""

from __future__ import annotations

import functools
from typing import Any

import bentoml

STAGES = ("upload", "decode", "faces", "model", "total")


@functools.cache
def _predictions() -> Any:
    return bentoml.metrics.Counter(
        name="emoflow_predictions", documentation="Clips answered, by predicted label",
        labelnames=["label", "endpoint"])  # fmt: skip


@functools.cache
def _rejections() -> Any:
    return bentoml.metrics.Counter(
        name="emoflow_rejected_requests", documentation="Requests refused, by reason",
        labelnames=["reason"])  # fmt: skip


@functools.cache
def _stage_seconds() -> Any:
    return bentoml.metrics.Histogram(
        name="emoflow_stage_seconds", documentation="Latency of each stage of a prediction",
        labelnames=["stage", "endpoint"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0))  # fmt: skip


def predicted(label: str, endpoint: str) -> None:
    _predictions().labels(label=label, endpoint=endpoint).inc()


def rejected(reason: str) -> None:
    _rejections().labels(reason=reason).inc()


def stage(name: str, endpoint: str, seconds: float) -> None:
    _stage_seconds().labels(stage=name, endpoint=endpoint).observe(seconds)
