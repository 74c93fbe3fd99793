"""``emoflow sample``: write the sample recordings, protocol, marks and ground truth."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from emoflow.config import SampleParams
from emoflow.fsio import atomic_dir, atomic_path
from emoflow.guards import check_outputs, params_inputs
from emoflow.ingest.marks import FLAG_NAMES, marks_path, write_marks
from emoflow.parallel import parallel_map, worker_count
from emoflow.sample.plan import SessionPlan, plan_sample
from emoflow.sample.portraits import build_portrait, identity_for
from emoflow.sample.render import render_session

log = logging.getLogger(__name__)

SESSIONS_DIR = Path("raw/sessions")
PROTOCOL_CSV = Path("raw/protocol.csv")
MARKS_DIR = Path("marks")
TRUTH_DIR = Path("sample_truth")


def _render_one(args: tuple[SessionPlan, SampleParams, Path]) -> tuple[str, dict[str, float]]:
    plan, params, out_dir = args
    ident = identity_for(plan.index, np.random.default_rng([params.seed, plan.index, 3]))
    portrait = build_portrait(ident, (params.width, params.height))
    path = out_dir / f"{plan.participant}.mp4"
    coverages = render_session(plan, portrait, ident.expressiveness, params, path)
    return plan.participant, coverages


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def generate_sample(params: SampleParams, root: Path) -> None:
    """Render every session (in parallel), then put all outputs in place atomically."""
    check_outputs(params_inputs(params), {str(p): root / p for p in
                                          (SESSIONS_DIR, PROTOCOL_CSV, MARKS_DIR, TRUTH_DIR)})
    plans = plan_sample(params)
    n_trials = sum(len(p.trials) for p in plans)
    log.info("sample: %d participants, %d trials, %d workers, seed %d", len(plans), n_trials,
             worker_count(params.workers, len(plans)), params.seed)  # fmt: skip
    coverages: dict[str, float] = {}
    with atomic_dir(root / SESSIONS_DIR) as sessions:
        jobs = [(p, params, sessions) for p in plans]
        for _, cov in parallel_map(_render_one, jobs, params.workers, "sessions", "video"):
            coverages.update(cov)
        with atomic_dir(root / MARKS_DIR) as marks_dir:
            for plan in plans:
                for t in plan.trials:
                    write_marks(marks_path(marks_dir, t.trial_id), t.marks(plan.trial_frames))
            _write_truth(root / TRUTH_DIR, plans, params, coverages)
            _write_csv(
                root / PROTOCOL_CSV,
                ["participant", "trial", "emotion", "stimulus"],
                [[t.participant, t.trial, t.protocol_emotion,
                  f"{t.protocol_emotion}_{(t.trial * 7919 + plan.index) % 40 + 1:02d}.mp4"]
                 for plan in plans for t in plan.trials],
            )  # fmt: skip
    log.info(
        "sample: wrote %d session videos to %s, %d marks files to %s, protocol %s",
        len(plans), root / SESSIONS_DIR, n_trials, root / MARKS_DIR, root / PROTOCOL_CSV,
    )  # fmt: skip


def _write_truth(out: Path, plans: list[SessionPlan], params: SampleParams,
                 coverages: dict[str, float]) -> None:  # fmt: skip
    """What the tests check against, kept apart from what a lab would have."""
    header = ["trial_id", "participant", "trial", "protocol_emotion", "rendered_emotion",
              "onset_s", "onset_frame", "start", "peak", "end", *FLAG_NAMES,
              "occluder", "occluder_coverage"]  # fmt: skip
    rows = []
    for plan in plans:
        for t in plan.trials:
            m = t.marks(plan.trial_frames)
            rows.append([t.trial_id, t.participant, t.trial, t.protocol_emotion,
                         t.rendered_emotion, f"{t.onset_s:.6f}", t.onset_frame, m.start, m.peak,
                         m.end, *(t.flags[f] for f in FLAG_NAMES), t.occluder or "",
                         f"{coverages.get(t.trial_id, 0.0):.3f}"])  # fmt: skip
    with atomic_dir(out) as tmp:
        _write_csv(tmp / "trials.csv", header, rows)
        _write_csv(
            tmp / "sessions.csv",
            ["participant", "frames", "duration_s", "fps", "trials"],
            [[p.participant, p.n_frames, f"{p.n_frames / params.fps:.3f}", params.fps,
              len(p.trials)] for p in plans],
        )  # fmt: skip
