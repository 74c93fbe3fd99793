"""``emoflow predict``: one answer per video file, whatever happens to the others.

Several files are shared between this process and a pool of others, one per core in all
(``workers``): a clip's decode and faces work is one core's Python (dlib holds the GIL), so
files in parallel are what fills the others. Each worker opens the same model folder on the same
backend once, with a share of the cores for the model's threads; answers come in the order of
the files.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from emoflow.errors import EmoflowError
from emoflow.inference.predictor import Predictor
from emoflow.inference.schema import ClipResult
from emoflow.parallel import cpu_threads, worker_count

log = logging.getLogger(__name__)


def summary_line(path: Path, r: ClipResult) -> str:
    warnings = "".join(f"; warning: {w}" for w in r.warnings)
    return (f"{path}: {r.label} {r.confidence:.2f} (face in {r.faces_found} of "
            f"{r.frames_decoded} frames, {len(r.frames)} used; {r.model.name} on "
            f"{r.model.backend}, {r.timings_ms.total:.0f} ms){warnings}")  # fmt: skip


def predict_files(predictor: Predictor, paths: Sequence[Path], as_json: bool = False,
                  out: TextIO | None = None, err: TextIO | None = None,
                  workers: int = 1) -> int:  # fmt: skip
    """Predict every file; print a line (or a JSON line) per file, an ``error:`` line on
    stderr for each file that fails (not a video, no face; with ``as_json`` also a JSON line
    ``{"file", "error"}``). ``workers``: processes (0: one per core this process may use;
    never more than files). Returns the number of files that failed."""
    out, err = out or sys.stdout, err or sys.stderr
    failed = 0
    bar = tqdm(total=len(paths), desc="predict", unit="video", file=err,
               disable=len(paths) < 2, leave=False)  # fmt: skip
    n = worker_count(workers or cpu_threads(), len(paths))
    for path, r in _answers(predictor, paths, n):
        bar.update()
        if isinstance(r, str):
            failed += 1
            tqdm.write(f"error: {r}", file=err)
            if as_json:
                tqdm.write(json.dumps({"file": str(path), "error": r}), file=out)
            continue
        line = json.dumps({"file": str(path), **r.model_dump(mode="json")}) if as_json else (
            summary_line(path, r))  # fmt: skip
        tqdm.write(line, file=out)
    bar.close()
    return failed


@dataclass(frozen=True)
class _Recipe:
    """How a worker opens the parent's model: its folder, resolved backend, name, threads."""

    folder: str
    backend: str
    name: str
    version: str | None
    alias: str | None
    threads: int


def _answers(predictor: Predictor, paths: Sequence[Path], n: int
             ) -> Iterator[tuple[Path, ClipResult | str]]:  # fmt: skip
    """(path, result or error message) per file, in order. With ``n`` above 1 this process
    takes files too, beside ``n - 1`` pool workers: its model is loaded already, and it works
    while theirs load."""
    if n <= 1:
        for path in paths:
            yield path, _predict(predictor, path)
        return
    ref = predictor.ref
    recipe = _Recipe(str(predictor.spec.folder), predictor.backend, ref.name, ref.version,
                     ref.alias, max(1, cpu_threads() // n))  # fmt: skip
    todo = deque(enumerate(paths))
    flying: dict[int, Future[ClipResult | str]] = {}
    done: dict[int, ClipResult | str] = {}
    first = 0  # the next index to hand on
    pool_ok = True  # a worker that cannot open the model, or dies, leaves the files to us
    ctx = multiprocessing.get_context("forkserver")  # see emoflow.parallel: no fork()
    with ProcessPoolExecutor(n - 1, mp_context=ctx) as pool:
        try:
            while todo or flying:
                while pool_ok and todo and len(flying) < 2 * (n - 1):  # two files a worker
                    i, path = todo.popleft()
                    flying[i] = pool.submit(_in_worker, recipe, path)
                if todo:
                    i, path = todo.popleft()
                    done[i] = _predict(predictor, path)
                elif flying:
                    wait(flying.values(), return_when=FIRST_COMPLETED)
                for i in [i for i, f in flying.items() if f.done()]:
                    try:
                        done[i] = flying.pop(i).result()
                    except Exception as exc:  # the worker failed, not the file (_predict catches)
                        if pool_ok:
                            log.warning("predict: a worker process failed (%s: %s); this "
                                        "process predicts the rest", type(exc).__name__, exc)
                        pool_ok = False
                        done[i] = _predict(predictor, paths[i])
                while first in done:
                    yield paths[first], done.pop(first)
                    first += 1
        finally:
            for f in flying.values():
                f.cancel()


def _predict(predictor: Predictor, path: Path) -> ClipResult | str:
    try:
        return predictor.predict_video(path)
    except Exception as exc:  # one file's failure, a bug included, never stops the batch
        if isinstance(exc, EmoflowError):
            return str(exc)
        log.error("predict: %s failed", path, exc_info=exc)
        return f"{path}: unexpected error ({type(exc).__name__}: {exc})"


_worker: dict[_Recipe, Predictor] = {}


def _in_worker(recipe: _Recipe, path: Path) -> ClipResult | str:
    """A pool worker's file, on the worker's own predictor (opened on its first file)."""
    if recipe not in _worker:
        import torch

        torch.set_num_threads(recipe.threads)
        _worker[recipe] = Predictor.from_dir(recipe.folder, recipe.backend, name=recipe.name,
                                             version=recipe.version, alias=recipe.alias,
                                             threads=recipe.threads)  # fmt: skip
    return _predict(_worker[recipe], path)
