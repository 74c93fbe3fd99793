"""The workspace a retrain run works in: one run at a time, and the optional git sync.

The deployment's concurrency limit makes a second scheduled or clicked run wait on the server;
this lock covers what the server cannot see (a run started by hand with ``python
pipelines/retrain.py``, two deployments on one checkout): the second run waits here, before it
reads or writes anything, and says whom it waits for.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from emoflow.errors import EmoflowError
from emoflow.orchestration.retry import is_transient

LOCK_NAME = "emoflow-retrain.lock"
GIT_TIMEOUT_S = 600


class SyncError(EmoflowError):
    """git could not bring the workspace to the configured branch."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def lock_path(repo: Path) -> Path:
    return repo / ".dvc" / "tmp" / LOCK_NAME


@contextlib.contextmanager
def workspace_lock(repo: Path, holder: str, on_wait: Callable[[str], None]) -> Iterator[None]:
    """Hold the workspace's retrain lock; ``on_wait`` hears once who holds it when it is busy.

    An advisory ``flock``: the kernel drops it when the holder dies, so a killed run never
    leaves a stale lock behind.
    """
    path = lock_path(repo)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            on_wait(f"waiting for the workspace {repo}: another retrain run holds {path} "
                    f"({f.read().strip() or 'unknown holder'})")  # fmt: skip
            started = time.monotonic()
            fcntl.flock(f, fcntl.LOCK_EX)
            on_wait(f"got the workspace after {time.monotonic() - started:.0f} s")
        try:
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"holder": holder, "pid": os.getpid(),
                                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")  # fmt: skip
            f.flush()
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise SyncError(f"git {' '.join(args)} timed out after {GIT_TIMEOUT_S} s", True) from exc
    if done.returncode != 0:
        err = RuntimeError((done.stderr or done.stdout).strip())
        raise SyncError(f"git {' '.join(args)} failed: {err}", is_transient(err))
    return done.stdout.strip()


def git_pull(repo: Path, remote: str, branch: str) -> tuple[str, str]:
    """Fast-forward the checkout of ``branch`` from ``remote``; returns (old, new) commit.

    Refuses a checkout of another branch and local changes to tracked files other than
    ``dvc.lock`` (which every run rewrites): a merge is a person's decision, not a schedule's.
    """
    current = _git(repo, "rev-parse", "--abbrev-ref", "HEAD")
    if current != branch:
        raise SyncError(f"{repo} is on branch {current!r}, pipeline.sync.branch is {branch!r}: "
                        f"check out {branch} first")  # fmt: skip
    dirty = [line[3:] for line in _git(repo, "status", "--porcelain", "--untracked-files=no")
             .splitlines() if line[3:] != "dvc.lock"]  # fmt: skip
    if dirty:
        raise SyncError(f"{repo} has local changes to {', '.join(dirty[:5])}: commit or stash "
                        "them before a run pulls")  # fmt: skip
    old = _git(repo, "rev-parse", "HEAD")
    _git(repo, "pull", "--ff-only", remote, branch)
    return old, _git(repo, "rev-parse", "HEAD")
