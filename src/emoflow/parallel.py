"""Running a stage's per-item work on every core, with a progress bar.

Workers come from a fork server, not from ``fork()`` of the caller: a parent that has already
used OpenMP (scikit-learn's K-means), dlib or FFmpeg threads cannot be forked safely, and its
children die at random.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

J = TypeVar("J")
R = TypeVar("R")


def worker_count(requested: int, jobs: int) -> int:
    """``requested`` processes (0 = one per core), never more than there are jobs."""
    return max(1, min(requested or os.cpu_count() or 1, jobs))


def parallel_map(fn: Callable[[J], R], jobs: Sequence[J], workers: int, desc: str,
                 unit: str = "item") -> list[R]:  # fmt: skip
    """``[fn(j) for j in jobs]`` in order, on ``workers`` processes (0 = one per core)."""
    n = worker_count(workers, len(jobs))
    if n == 1:
        return [fn(j) for j in tqdm(jobs, desc=desc, unit=unit)]
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(n, mp_context=ctx) as pool:
        return list(tqdm(pool.map(fn, jobs, chunksize=1), total=len(jobs), desc=desc, unit=unit))
