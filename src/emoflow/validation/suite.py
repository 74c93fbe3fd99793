"""The expectations over the validation tables, and running them with great-expectations 1.x.

Each expectation is wrapped in a :class:`Check` that says what a failure means to the gate:
``row`` failures quarantine the trial, ``structural`` ones count against
``max_structural_errors`` (and quarantine the rows involved), ``dataset`` ones are warnings.
"""

from __future__ import annotations

import os

# No network at run time: GX must not send usage statistics (set before GX is imported).
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.expectations.metadata_types import FailureSeverity

from emoflow.config import ValidateParams
from emoflow.ingest.marks import FLAG_NAMES
from emoflow.validation.table import (
    FLOAT_COLUMNS,
    INT_COLUMNS,
    TEXT_COLUMNS,
    TRIALS_COLUMNS,
    Tables,
    text_column,
)

Scope = Literal["row", "structural", "dataset"]
Blame = Literal["trials", "marks", "clip"]

# The table each asset validates, and the column that identifies a failing row in it.
ASSET_IDS: dict[str, str] = {"trials": "row", "marks_files": "file", "participants": "participant"}

INT_RE = r"^\d+$"
FLOAT_RE = r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$"  # no groups: GX warns
TRIAL_ID_RE = r"^\S+_\d{3}$"


@dataclass(frozen=True)
class Check:
    """One expectation and how the gate reads its failures."""

    expectation: gxe.Expectation
    asset: str
    scope: Scope
    blame: Blame  # which file a failing row points the user at
    detail: Callable[[pd.Series], str]  # one line on a failing row of the asset's table

    @property
    def key(self) -> str:
        """``expect_...(columns)``: the name used in quarantine.csv, summary.json and Data Docs."""
        kw = self.expectation.dict()
        cols = [kw[k] for k in ("column", "column_A", "column_B") if kw.get(k)]
        return f"{self.expectation.expectation_type}({', '.join(cols)})"


@dataclass(frozen=True)
class Outcome:
    """What running one check found."""

    check: Check
    success: bool
    failing_ids: list[object]  # values of the asset's id column on the failing rows
    error: str | None = None  # the expectation itself could not run


def _num(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else repr(v)


def _row(r: pd.Series) -> str:
    return f"row {r['row']}"


def checks(params: ValidateParams, classes: Sequence[str]) -> list[Check]:
    """Every check of the gate, in the order the report lists them."""
    out: list[Check] = []

    def add(
        exp: gxe.Expectation,
        scope: Scope,
        blame: Blame,
        detail: Callable[[pd.Series], str],
        asset: str = "trials",
    ) -> None:
        out.append(Check(exp, asset, scope, blame, detail))

    # Schema and types of trials.csv.
    add(
        gxe.ExpectColumnValuesToBeUnique(column="trial_id"),
        "structural",
        "trials",
        lambda r: f"{_row(r)}: trial_id {r['trial_id']!r} appears more than once",
    )
    for name in TRIALS_COLUMNS:
        col = name if name in TEXT_COLUMNS else text_column(name)
        add(
            gxe.ExpectColumnValuesToNotBeNull(column=col),
            "row",
            "trials",
            lambda r, name=name: f"{_row(r)}: {name} is empty",
        )
    add(
        gxe.ExpectColumnValuesToMatchRegex(column="trial_id", regex=TRIAL_ID_RE),
        "row",
        "trials",
        lambda r: f"{_row(r)}: trial_id {r['trial_id']!r} is not <participant>_<3-digit trial>",
    )
    for names, regex, kind in (
        (INT_COLUMNS, INT_RE, "an integer"),
        (FLOAT_COLUMNS, FLOAT_RE, "a number"),
    ):
        for name in names:
            col = text_column(name)
            add(
                gxe.ExpectColumnValuesToMatchRegex(column=col, regex=regex),
                "row",
                "trials",
                lambda r, n=name, c=col, k=kind: f"{_row(r)}: {n}={r[c]!r} is not {k}",
            )

    # Values of trials.csv.
    add(
        gxe.ExpectColumnValuesToBeInSet(column="emotion", value_set=list(classes)),
        "row",
        "trials",
        lambda r: (
            f"{_row(r)}: emotion {r['emotion']!r} is not one of the classes in params "
            f"({', '.join(classes)})"
        ),
    )
    bounds = {
        name: (getattr(params, name).min, getattr(params, name).max)
        for name in ("fps", "duration_s", "width", "height")
    }
    bounds |= {"frames": (1, None), "beep_s": (0, None), "trial": (0, None)}
    for name, (lo, hi) in bounds.items():
        add(
            gxe.ExpectColumnValuesToBeBetween(column=name, min_value=lo, max_value=hi),
            "row",
            "trials",
            lambda r, n=name, lo=lo, hi=hi: (
                f"{_row(r)}: {n}={_num(r[n])} outside "
                f"[{_num(lo)}, {'∞' if hi is None else _num(hi)}]"
            ),
        )

    # Marks: one readable file per trial, start <= peak <= end < frames, flags 0/1.
    add(
        gxe.ExpectColumnValuesToNotBeNull(column="marks_file"),
        "row",
        "marks",
        lambda r: f"no marks file for trial {r['trial_id']}",
    )
    add(
        gxe.ExpectColumnValuesToBeNull(column="marks_error"),
        "row",
        "marks",
        lambda r: str(r["marks_error"]),
    )
    add(
        gxe.ExpectColumnValuesToBeBetween(column="start", min_value=0),
        "row",
        "marks",
        lambda r: f"start={_num(r['start'])} must be >= 0",
    )
    for a, b in (("end", "start"), ("peak", "start"), ("end", "peak")):
        add(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=a, column_B=b, or_equal=True, ignore_row_if="either_value_is_missing"
            ),
            "row",
            "marks",
            lambda r, a=a, b=b: f"{b}={_num(r[b])} > {a}={_num(r[a])} (start <= peak <= end)",
        )
    add(
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="frames", column_B="end", ignore_row_if="either_value_is_missing"
        ),
        "row",
        "marks",
        lambda r: f"end={_num(r['end'])} must be < frame count {_num(r['frames'])}",
    )
    for flag in FLAG_NAMES:
        add(
            gxe.ExpectColumnValuesToBeInSet(column=flag, value_set=[0, 1]),
            "row",
            "marks",
            lambda r, f=flag: f"flag {f}={_num(r[f])} must be 0 or 1",
        )

    # The clip: decodes to the end with the frame count trials.csv claims, and has audio.
    add(
        gxe.ExpectColumnValuesToBeNull(column="video_error"),
        "row",
        "clip",
        lambda r: str(r["video_error"]),
    )
    add(
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="decoded_frames", column_B="frames", ignore_row_if="either_value_is_missing"
        ),
        "row",
        "clip",
        lambda r: (
            f"decoded {_num(r['decoded_frames'])} frames, trials.csv says {_num(r['frames'])}"
        ),
    )
    add(
        gxe.ExpectColumnValuesToBeNull(column="audio_error"),
        "row",
        "clip",
        lambda r: str(r["audio_error"]),
    )

    # Dataset level: no marks file without a trial; no participant dominated by one label.
    add(
        gxe.ExpectColumnValuesToBeInSet(column="in_trials", value_set=[True]),
        "structural",
        "marks",
        lambda r: f"orphan marks file: trial {r['trial_id']} has no row in trials.csv",
        asset="marks_files",
    )
    add(
        gxe.ExpectColumnValuesToBeBetween(
            column="top_share", max_value=params.max_label_share, severity=FailureSeverity.WARNING
        ),
        "dataset",
        "trials",
        lambda r: (
            f"participant {r['participant']}: {r['top_label']} takes "
            f"{r['top_share']:.0%} of {r['trials']} trials "
            f"(max_label_share {params.max_label_share:.0%})"
        ),
        asset="participants",
    )
    assert len({c.key for c in out}) == len(out), "check keys name results: they must be unique"
    return out


def _context(docs_dir: Path) -> gx.data_context.AbstractDataContext:
    """An in-memory context whose only file output is the Data Docs site in ``docs_dir``."""
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),  # ours (tqdm) is over the clips
        data_docs_sites={
            "validation": {
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def run_checks(tables: Tables, all_checks: Sequence[Check], docs_dir: Path) -> list[Outcome]:
    """Validate each table with its suite and write the Data Docs site into ``docs_dir``."""
    context = _context(docs_dir)
    source = context.data_sources.add_pandas("emoflow")
    frames = {
        "trials": tables.trials,
        "marks_files": tables.marks,
        "participants": tables.participants,
    }
    run_id = RunIdentifier(run_name="emoflow-validate")
    by_key: dict[str, Check] = {}
    results = []
    for asset_name, id_column in ASSET_IDS.items():
        suite = context.suites.add(gx.ExpectationSuite(name=asset_name))
        for check in all_checks:
            if check.asset == asset_name:
                by_key[check.key] = check
                # A copy: GX gives the expectation an id in this suite; the Check stays reusable.
                exp = check.expectation.copy(update={"meta": {"check": check.key}}, deep=True)
                suite.add_expectation(exp)
        batch = source.add_dataframe_asset(asset_name).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=asset_name, data=batch, suite=suite)
        )
        # One checkpoint per table: batch parameters (the DataFrame) are per checkpoint run.
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=asset_name,
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
                result_format={
                    "result_format": "COMPLETE",
                    "unexpected_index_column_names": [id_column],
                },
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": frames[asset_name]}, run_id=run_id)
        for validation in result.run_results.values():
            results.extend((id_column, r) for r in validation.results)
    outcomes: dict[str, Outcome] = {}
    for id_column, r in results:
        check = by_key[r.expectation_config.meta["check"]]
        info = r.exception_info or {}
        error = info.get("exception_message") if info.get("raised_exception") else None
        ids = [entry[id_column] for entry in r.result.get("unexpected_index_list") or []]
        outcomes[check.key] = Outcome(check, bool(r.success), ids, error)
    # A check GX returned nothing for was not checked: report it rather than pass it.
    return [outcomes.get(c.key) or Outcome(c, False, [], "no result from GX") for c in all_checks]
