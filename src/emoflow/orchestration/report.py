"""What a retrain run tells people: the gate's verdict, the metrics, the promotion, the run.

Markdown for Prefect artifacts (the UI renders it) and ``reports/retrain.json`` for machines;
both are built from files the stages wrote, never from numbers typed here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emoflow.fsio import atomic_write_text
from emoflow.layout import LAYOUT, Layout

# Relative to the repository root (``repo / GATE_SUMMARY``).
GATE_SUMMARY = LAYOUT.validation_report / "summary.json"
GATE_DOCS = LAYOUT.validation_report / "index.html"
RUN_REPORT = LAYOUT.retrain_report
METRIC_COLUMNS = ("war", "uar", "macro_f1", "test_clips", "best_epoch")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing or not an object."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def gate_summary(repo: Path, newer_than: float | None = None) -> dict[str, Any] | None:
    """The gate's ``summary.json``; None when absent or older than ``newer_than`` (a stale one
    from an earlier run must not speak for this one)."""
    path = repo / GATE_SUMMARY
    if newer_than is not None and (not path.exists() or path.stat().st_mtime < newer_than):
        return None
    return read_json(path)


def gate_markdown(summary: Mapping[str, Any], repo: Path) -> str:
    """The gate's verdict, counts, reasons and where its Data Docs and quarantine list are."""
    verdict = str(summary.get("verdict", "?")).upper()
    lines = [f"# Validation gate: {verdict}", ""]
    for reason in summary.get("reasons") or []:
        lines.append(f"- **{reason}**")
    if summary.get("reasons"):
        lines.append("")
    lines += ["| trials | marks files | passed | quarantined | structural errors |",
              "|---:|---:|---:|---:|---:|",
              f"| {summary.get('trials_read')} | {summary.get('marks_files_read')} | "
              f"{summary.get('passed')} | {summary.get('quarantined')} | "
              f"{summary.get('structural_errors')} |", ""]  # fmt: skip
    failures = {k: n for k, n in (summary.get("failures_by_expectation") or {}).items() if n}
    if failures:
        lines += ["| expectation | failures |", "|---|---:|"]
        lines += [f"| `{k}` | {n} |" for k, n in failures.items()]
        lines.append("")
    for s in (summary.get("structural") or [])[:10]:
        lines.append(f"- structural: `{s.get('file')}`: {s.get('detail')}")
    outputs = summary.get("outputs") or {}
    lines += ["", f"Data Docs: `{(repo / GATE_DOCS).resolve()}`",
              f"Quarantine: `{(repo / str(outputs.get('quarantine', ''))).resolve()}`"
              if outputs.get("quarantine") else ""]  # fmt: skip
    return "\n".join(lines).rstrip() + "\n"


def metrics_rows(repo: Path, models: Sequence[str]) -> list[dict[str, Any]]:
    """One row per model from ``metrics/<model>.json`` (what ``emoflow evaluate`` wrote)."""
    rows = []
    for m in models:
        doc = read_json(Layout(repo).metrics(m)) or {}
        rows.append({"model": m, **{k: doc.get(k) for k in METRIC_COLUMNS}})
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[str]:
    """A markdown table of ``rows`` over ``columns``."""
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return out


def run_markdown(run: Mapping[str, Any]) -> str:
    """The ``retrain`` report: metrics, registry and promotion per model, stages, the MLflow run."""
    lines = ["# Retrain report", ""]
    models = run.get("models") or {}
    rows = [{"model": m, **(info.get("metrics") or {})} for m, info in models.items()]
    lines += ["## Test metrics", "", *table(rows, ("model", *METRIC_COLUMNS)), ""]
    lines += ["## Registry and promotion", ""]
    for m, info in models.items():
        reg = info.get("registered") or {}
        version = (f"`{reg.get('name')}` v{reg.get('version')}"
                   + (" (already registered, same model.pt)" if reg.get("existing") else ""))
        promotion = info.get("promotion") or {}
        decision = (promotion.get("message") if isinstance(promotion, Mapping) else promotion)
        lines.append(f"- **{m}**: {version if reg else 'not registered'}; "
                     f"{decision or 'no promotion decision'}")  # fmt: skip
        if info.get("convert"):
            lines.append(f"  - convert: {info['convert']}")
        if info.get("mlflow_run"):
            lines.append(f"  - MLflow training run: {info['mlflow_run']}")
    lines += ["", "## DVC stages", ""]
    for step, res in (run.get("steps") or {}).items():
        ran = res.get("ran") or []
        skipped = [s for s in res.get("planned") or [] if s not in ran]
        lines.append(f"- {step}: ran {', '.join(ran) or 'nothing'}"
                     + (f"; up to date: {', '.join(skipped)}" if skipped else ""))  # fmt: skip
    lines += ["", "## Run", "", f"- sync: {_sync_text(run.get('sync') or {})}",
              f"- dvc push: {_push_text(run.get('push') or {})}",
              f"- result: {_version_text(run.get('version') or {})}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _version_text(version: Mapping[str, Any]) -> str:
    if not version.get("commit"):
        return f"not committed ({version.get('skipped') or 'pipeline.sync.commit = none'})"
    pushed = " (pushed)" if version.get("pushed") else ""
    return (f"commit {version['commit'][:10]} on branch `{version['branch']}`{pushed}: "
            + (", ".join(version.get("files") or []) or "no file changed since HEAD"))


def _sync_text(sync: Mapping[str, Any]) -> str:
    if sync.get("mode") != "pull":
        return "the workspace as it was"
    old, new = sync.get("git") or ("?", "?")
    pulled = sync.get("dvc") or {}
    return (f"git {old[:10]} → {new[:10]}; dvc pull "
            + (pulled.get("skipped") or f"from {pulled.get('remote')}"))


def _push_text(push: Mapping[str, Any]) -> str:
    if not push:
        return "not run"
    return push.get("skipped") or f"{push.get('pushed')} file(s) to {push.get('remote')}"


def write_run_report(repo: Path, run: Mapping[str, Any]) -> Path:
    """``reports/retrain.json``, written whole."""
    path = repo / RUN_REPORT
    atomic_write_text(path, json.dumps(run, indent=1, default=str) + "\n")
    return path
