"""``parallel_imap``: results in order, jobs drawn lazily (flat memory), errors stop the run."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from emoflow.parallel import parallel_imap


@pytest.mark.parametrize("workers", [1, 2])
def test_in_order_and_jobs_drawn_lazily(workers: int) -> None:
    drawn = []

    def jobs() -> Iterator[int]:
        for j in range(40):
            drawn.append(j)
            yield j

    out = []
    for r in parallel_imap(math.factorial, jobs(), 40, workers, "test"):
        if not out:  # the first result comes before most jobs are even made
            assert len(drawn) <= 2 * workers + 1, drawn
        out.append(r)
    assert out == [math.factorial(j) for j in range(40)]


def test_a_failed_job_stops_the_run() -> None:
    drawn = []

    def jobs() -> Iterator[int]:
        for j in [3, 4, -1, *range(5, 200)]:  # factorial(-1) raises ValueError
            drawn.append(j)
            yield j

    got = []
    with pytest.raises(ValueError, match="factorial"):
        for r in parallel_imap(math.factorial, jobs(), 198, 2, "test"):
            got.append(r)
    assert got == [6, 24] and len(drawn) < 20  # the queued rest was never made
