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
        name="emoflow_predictions", documentation="Clips answered, by predicted label and the "
        "model version that answered", labelnames=["label", "endpoint", "version"])  # fmt: skip


@functools.cache
def _confidence() -> Any:
    return bentoml.metrics.Histogram(
        name="emoflow_prediction_confidence", documentation="Top probability of each answer",
        labelnames=["endpoint", "version"],
        buckets=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0))  # fmt: skip


@functools.cache
def _captured() -> Any:
    return bentoml.metrics.Counter(
        name="emoflow_captured", documentation="Prediction records and clips written to the "
        "capture store", labelnames=["kind"])  # fmt: skip


@functools.cache
def _capture_failures() -> Any:
    return bentoml.metrics.Counter(
        name="emoflow_capture_failures", documentation="Records or clips the capture store "
        "could not take (the answer was given all the same)", labelnames=["kind"])  # fmt: skip


@functools.cache
def _feedback() -> Any:
    return bentoml.metrics.Counter(
        name="emoflow_feedback", documentation="Corrections received, by whether they agree "
        "with the served label", labelnames=["agrees", "version"])  # fmt: skip


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


def predicted(label: str, endpoint: str, version: str, confidence: float) -> None:
    _predictions().labels(label=label, endpoint=endpoint, version=version).inc()
    _confidence().labels(endpoint=endpoint, version=version).observe(confidence)


def captured(kind: str) -> None:
    _captured().labels(kind=kind).inc()


def capture_failed(kind: str) -> None:
    _capture_failures().labels(kind=kind).inc()


def feedback(agrees: bool, version: str) -> None:
    _feedback().labels(agrees=str(agrees).lower(), version=version).inc()


def rejected(reason: str) -> None:
    _rejections().labels(reason=reason).inc()


def stage(name: str, endpoint: str, seconds: float) -> None:
    _stage_seconds().labels(stage=name, endpoint=endpoint).observe(seconds)
