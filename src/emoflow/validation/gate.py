"""The gate: run the suite, quarantine failing trials, write the outputs, pass or fail.

Outputs (each written whole or not at all):

- ``<report>/``: the GX Data Docs site and ``summary.json`` (counts, reasons, verdict);
- ``<out>/quarantine.csv``: one row per failure (trial_id, file, expectation, detail);
- ``<out>/valid_trials.csv``: the trials that passed, with their marks, **only when the gate
  passes**. ``<out>`` is replaced as a whole, so after a failed gate no older valid_trials.csv
  is left behind for ``emoflow trim`` to read.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from emoflow.config import Params
from emoflow.errors import EmoflowError
from emoflow.fsio import atomic_dir
from emoflow.guards import check_outputs, keep_nonempty, params_inputs
from emoflow.ingest.marks import FIELD_NAMES, marks_path
from emoflow.validation.table import Tables, build_tables

if TYPE_CHECKING:
    from emoflow.validation.suite import Outcome

log = logging.getLogger(__name__)

QUARANTINE_COLUMNS: tuple[str, ...] = ("trial_id", "file", "expectation", "detail")
SUMMARY_NAME = "summary.json"
VALID_NAME = "valid_trials.csv"
QUARANTINE_NAME = "quarantine.csv"


class GateError(EmoflowError):
    """The validation gate failed: too many quarantined trials or structural errors."""


@dataclass(frozen=True)
class Failure:
    trial_id: str
    file: str
    expectation: str
    detail: str


@dataclass
class Verdict:
    """The gate's findings; ``summary()`` is what summary.json holds."""

    trials_read: int
    marks_files_read: int
    passed_rows: list[int]
    quarantined_rows: list[int]
    structural: list[Failure]
    quarantine: list[Failure]
    warnings: list[str]
    failures_by_expectation: dict[str, int]
    quarantined_trials: dict[str, list[str]]  # trial_id → the expectations it failed
    reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons

    def summary(self, thresholds: dict[str, float]) -> dict[str, object]:
        n = self.trials_read
        return {
            "verdict": "pass" if self.passed else "fail",
            "reasons": self.reasons,
            "trials_read": n,
            "marks_files_read": self.marks_files_read,
            "passed": len(self.passed_rows),
            "quarantined": len(self.quarantined_rows),
            "quarantined_share": round(len(self.quarantined_rows) / n, 4) if n else None,
            "structural_errors": len(self.structural),
            "structural": [asdict(f) for f in self.structural],
            "failures_by_expectation": self.failures_by_expectation,
            "quarantined_trials": self.quarantined_trials,
            "warnings": self.warnings,
            "thresholds": thresholds,
        }


def _text(v: object) -> str:
    return v if isinstance(v, str) else ""


def _blamed_file(blame: str, row: pd.Series, trials_csv: Path, marks_dir: Path) -> str:
    if blame == "marks":
        if isinstance(row.get("marks_file"), str):
            return row["marks_file"]
        tid = row.get("trial_id")
        return str(marks_path(marks_dir, tid)) if isinstance(tid, str) else str(marks_dir)
    if blame == "clip":
        return _text(row.get("clip_file"))
    return str(trials_csv)


def evaluate(
    tables: Tables, outcomes: list[Outcome], params: Params, trials_csv: Path, marks_dir: Path
) -> Verdict:
    """Turn check outcomes into quarantine rows, structural errors, warnings and a verdict."""
    frames = {
        "trials": tables.trials,
        "marks_files": tables.marks.set_index("file", drop=False),
        "participants": tables.participants.set_index("participant", drop=False),
    }
    found: list[tuple[int, int, Failure]] = []  # (row, check order, failure) for sorting
    # Found before GX ran (unreadable trials.csv, missing columns), or GX could not run a check.
    schema = [Failure(i.trial_id, i.file, i.rule, i.detail) for i in tables.structural]
    structural = list(schema)
    warnings: list[str] = []
    counts: Counter[str] = Counter()
    bad_rows: set[int] = set()
    for order, outcome in enumerate(outcomes):
        check = outcome.check
        if outcome.error is not None:
            # An expectation that cannot run leaves its rule unchecked: never a silent pass.
            failure = Failure(
                "", str(trials_csv), check.key, f"expectation could not run: {outcome.error}"
            )
            schema.append(failure)
            structural.append(failure)
            continue
        table = frames[check.asset]
        failing = [table.loc[i] for i in outcome.failing_ids]
        counts[check.key] += len(failing)
        if check.scope == "dataset":
            warnings.extend(check.detail(r) for r in failing)
            continue
        seen: set[str] = set()
        for r in failing:
            failure = Failure(
                _text(r.get("trial_id")),
                _blamed_file(check.blame, r, trials_csv, marks_dir),
                check.key,
                check.detail(r),
            )
            row = int(r["row"]) if check.asset == "trials" else 0
            found.append((row, order, failure))
            if check.asset == "trials":
                bad_rows.add(row)
            # A duplicated id is one structural error however many rows carry it.
            if check.scope == "structural" and failure.trial_id not in seen:
                seen.add(failure.trial_id)
                structural.append(failure)
    found.sort(key=lambda t: (t[0], t[1]))
    by_trial: dict[str, list[str]] = {}
    for row, _, f in found:
        if row:  # a trials.csv row (line numbers start at 2), not an orphan marks file
            by_trial.setdefault(f.trial_id, []).append(f.expectation)
    rows = [int(r) for r in tables.trials["row"]]
    verdict = Verdict(
        trials_read=len(rows),
        marks_files_read=len(tables.marks),
        passed_rows=[r for r in rows if r not in bad_rows],
        quarantined_rows=[r for r in rows if r in bad_rows],
        structural=structural,
        quarantine=schema + [f for *_, f in found],
        warnings=warnings,
        failures_by_expectation=dict(counts.most_common()),
        quarantined_trials=by_trial,
    )
    v = params.validate_
    if not rows:
        verdict.reasons.append("no trials to validate")
    if len(structural) > v.max_structural_errors:
        verdict.reasons.append(
            f"{len(structural)} structural errors > max_structural_errors {v.max_structural_errors}"
        )
    if rows and len(verdict.quarantined_rows) / len(rows) > v.max_failed_share:
        verdict.reasons.append(
            f"{len(verdict.quarantined_rows)}/{len(rows)} trials quarantined "
            f"({len(verdict.quarantined_rows) / len(rows):.0%}) > max_failed_share "
            f"{v.max_failed_share:.0%}"
        )
    return verdict


def _valid_trials(tables: Tables, rows: list[int]) -> pd.DataFrame:
    """The passing rows of trials.csv as written there, plus their marks as integers."""
    out = tables.raw.loc[rows].drop(columns=list(FIELD_NAMES), errors="ignore")
    marks = tables.trials.loc[rows, list(FIELD_NAMES)].astype(int)
    return pd.concat([out, marks], axis=1).reset_index(drop=True)


def _log(verdict: Verdict) -> None:
    log.info(
        "validated %d trials (%d marks files): %d passed, %d quarantined, %d structural errors",
        verdict.trials_read,
        verdict.marks_files_read,
        len(verdict.passed_rows),
        len(verdict.quarantined_rows),
        len(verdict.structural),
    )
    for key, n in verdict.failures_by_expectation.items():
        if n:
            log.info("  %4d × %s", n, key)
    for f in verdict.structural:
        log.warning("structural: %s: %s", f.file, f.detail)
    for w in verdict.warnings:
        log.warning("label distribution: %s", w)


def validate(
    params: Params, trials_csv: Path, marks_dir: Path, report_dir: Path, out_dir: Path
) -> Verdict:
    """Run the gate end to end; raise :class:`GateError` after writing the report if it fails."""
    check_outputs({"trials": trials_csv, "marks": marks_dir, **params_inputs(params)},
                  {"report": report_dir, "out": out_dir})  # fmt: skip
    # GX logs its internals at INFO (hundreds of lines on import); our log says what matters.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    from emoflow.validation.suite import checks, run_checks  # GX is slow to import

    tables = build_tables(trials_csv, marks_dir)
    # A failed gate replaces valid_trials.csv (no stale set for trim), but not over no input.
    keep_nonempty("validate", out_dir / VALID_NAME, len(tables.trials), f"{trials_csv} has no "
                  "trials")  # fmt: skip
    v = params.validate_
    thresholds = {
        "max_failed_share": v.max_failed_share,
        "max_structural_errors": v.max_structural_errors,
        "max_label_share": v.max_label_share,
    }
    with atomic_dir(report_dir) as tmp:
        outcomes = run_checks(tables, checks(v, params.classes), tmp)
        verdict = evaluate(tables, outcomes, params, trials_csv, marks_dir)
        summary = verdict.summary(thresholds) | {
            "inputs": {"trials": str(trials_csv), "marks": str(marks_dir)},
            "outputs": {
                "valid_trials": str(out_dir / VALID_NAME) if verdict.passed else None,
                "quarantine": str(out_dir / QUARANTINE_NAME),
            },
        }
        (tmp / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    with atomic_dir(out_dir) as tmp:
        quarantine = pd.DataFrame(
            [asdict(f) for f in verdict.quarantine], columns=list(QUARANTINE_COLUMNS)
        )
        quarantine.to_csv(tmp / QUARANTINE_NAME, index=False)
        if verdict.passed:
            _valid_trials(tables, verdict.passed_rows).to_csv(tmp / VALID_NAME, index=False)
    _log(verdict)
    if not verdict.passed:
        raise GateError(
            f"validation gate failed: {'; '.join(verdict.reasons)} "
            f"(see {report_dir / SUMMARY_NAME} and {out_dir / QUARANTINE_NAME})"
        )
    log.info(
        "gate passed: wrote %s (%d trials) and %s",
        out_dir / VALID_NAME,
        len(verdict.passed_rows),
        report_dir / "index.html",
    )
    return verdict
