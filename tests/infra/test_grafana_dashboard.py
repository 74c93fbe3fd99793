"""docker/grafana/emoflow-service.json: a dashboard Grafana imports, graphing only series the
service exports (names read from services/emotion/emoserve/metrics.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docker" / "grafana" / "emoflow-service.json"
# what prometheus_client adds to a counter's or a histogram's name
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def _exported() -> dict[str, set[str]]:
    """Metric name → its label names, from the service's own definitions."""
    text = (ROOT / "services/emotion/emoserve/metrics.py").read_text()
    found = re.findall(r'name="(emoflow_\w+)".*?labelnames=\[([^\]]*)\]', text, re.S)
    return {name: set(re.findall(r'"(\w+)"', labels)) for name, labels in found}


def test_every_query_names_an_exported_series_and_its_labels() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["panels"]
    exported = _exported()
    assert "emoflow_feedback" in exported
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    graphed = set()
    for panel in doc["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")"), expr
            labels = {"le"}
            for series, selector in re.findall(r"\b(emoflow_\w+)(\{[^}]*\})?", expr):
                base = next((series.removesuffix(s) for s in SUFFIXES if series.endswith(s)),
                            series)  # fmt: skip
                assert base in exported, f"{panel['title']}: {series} is not exported"
                graphed.add(base)
                labels |= exported[base]
                for label in re.findall(r"(\w+)=", selector):
                    assert label in exported[base], f"{panel['title']}: {base} has no {label}"
            for group in re.findall(r"by \(([^)]*)\)", expr):
                for label in group.split(","):
                    assert label.strip() in labels, f"{panel['title']}: no label {label}"
    # the series issue 22 asks a user to graph: predictions by label, confidence, no-face rate,
    # kept clips, store failures, feedback agreement
    assert graphed >= {"emoflow_predictions", "emoflow_prediction_confidence",
                       "emoflow_rejected_requests", "emoflow_captured",
                       "emoflow_capture_failures", "emoflow_feedback"}  # fmt: skip

