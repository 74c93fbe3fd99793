"""Running a stage's per-item work on every core, with a progress bar.

Workers come from a fork server, not from ``fork()`` of the caller: a parent that has already
used OpenMP (scikit-learn's K-means), dlib or FFmpeg threads cannot be forked safely, and its
children die at random.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

J = TypeVar("J")
R = TypeVar("R")


def cpu_threads() -> int:
    """Cores this process may use (the affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_count(requested: int, jobs: int) -> int:
    """``requested`` processes (0 = one per core), never more than there are jobs."""
    return max(1, min(requested or cpu_threads(), jobs))


def parallel_map(fn: Callable[[J], R], jobs: Sequence[J], workers: int, desc: str,
                 unit: str = "item") -> list[R]:  # fmt: skip
    """``[fn(j) for j in jobs]`` in order, on ``workers`` processes (0 = one per core)."""
    n = worker_count(workers, len(jobs))
    # The bar is closed (its line ended) before an error propagates, so the CLI's `error:` line
    # starts a line of its own instead of landing on the bar's.
    with tqdm(total=len(jobs), desc=desc, unit=unit) as bar:
        if n == 1:
            out = []
            for j in jobs:
                out.append(fn(j))
                bar.update()
            return out
        ctx = multiprocessing.get_context("forkserver")
        pool = ProcessPoolExecutor(n, mp_context=ctx)
        try:
            out = []
            for r in pool.map(fn, jobs, chunksize=1):
                out.append(r)
                bar.update()
            return out
        except BaseException:
            # One failed job fails the stage: do not run the queued ones first.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)


def parallel_imap(fn: Callable[[J], R], jobs: Iterable[J], total: int, workers: int, desc: str,
                  unit: str = "item", done: int = 0) -> Iterator[R]:  # fmt: skip
    """``fn(j) for j in jobs``, yielded in order, with at most two jobs per worker in flight.

    For stages of many items: jobs are drawn lazily and results handed on as they come, so
    memory does not grow with the item count (``parallel_map`` queues every job and keeps
    every result). ``total`` and ``done`` (items finished before, e.g. by a resumed run) size
    the progress bar.
    """
    n = worker_count(workers, max(total - done, 1))
    with tqdm(total=total, initial=done, desc=desc, unit=unit) as bar:
        if n == 1:
            for j in jobs:
                yield fn(j)
                bar.update()
            return
        pending: deque[Future[R]] = deque()
        it = iter(jobs)
        with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("forkserver")) as pool:
            try:
                for j in it:
                    pending.append(pool.submit(fn, j))
                    if len(pending) >= 2 * n:
                        yield pending.popleft().result()
                        bar.update()
                while pending:
                    yield pending.popleft().result()
                    bar.update()
            finally:
                for f in pending:  # a failed job (or a consumer that stopped) ends the stage
                    f.cancel()
