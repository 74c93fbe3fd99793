"""Shared fixtures: a small sample generated once per test session, with the real generator."""

from __future__ import annotations

from pathlib import Path

import pytest

from emoflow.config import SampleParams


@pytest.fixture(scope="session")
def small_sample_params() -> SampleParams:
    # 3 × 7 = 21 trials: default flag rates then flag at least one trial of each kind.
    return SampleParams(participants=3, trials_per_participant=7, seed=7, workers=2)


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory: pytest.TempPathFactory, small_sample_params: SampleParams
                 ) -> Path:  # fmt: skip
    from emoflow.sample.generate import generate_sample

    root = tmp_path_factory.mktemp("sample") / "data"
    generate_sample(small_sample_params, root)
    return root


@pytest.fixture(scope="session")
def small_trials(small_sample: Path) -> Path:
    """``emoflow segment`` over the small sample: data/interim/trials beside it."""
    from emoflow.config import SegmentParams
    from emoflow.ingest.segment import segment_sessions

    out = small_sample / "interim" / "trials"
    segment_sessions(small_sample / "raw" / "sessions", small_sample / "raw" / "protocol.csv",
                     out, SegmentParams(workers=2))  # fmt: skip
    return out
