"""A retrain run's result, versioned: a git commit of ``dvc.lock`` (and of the code, params and
``.dvc`` files it names, where they changed) on a branch named after the run.

The commit is made without touching the checkout: a temporary index over ``HEAD``, ``git
write-tree``, ``git commit-tree``, ``git update-ref``. The workspace stays on its branch with
its files as they are (``git_pull`` already tolerates the rewritten ``dvc.lock``), so the next
scheduled run starts from the same place, and a person merges the run's branch or not.

``pipeline.sync.commit`` says how far it goes: ``none`` (no commit), ``local`` (the branch in
the workspace's repository), ``push`` (also ``git push`` of the branch to ``sync.git_remote``,
after ``dvc push`` put the data where the commit says; a worker without push rights uses
``local``).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from emoflow.orchestration.workspace import SyncError, _git

BRANCH_PREFIX = "retrain/"
LOCK = "dvc.lock"
IDENTITY = {"GIT_AUTHOR_NAME": "emoflow retrain", "GIT_AUTHOR_EMAIL": "retrain@emoflow.invalid",
            "GIT_COMMITTER_NAME": "emoflow retrain",
            "GIT_COMMITTER_EMAIL": "retrain@emoflow.invalid"}  # fmt: skip


@dataclass(frozen=True)
class Versioned:
    branch: str
    commit: str
    files: tuple[str, ...]  # what the commit changed against its parent

    def as_dict(self) -> dict[str, object]:
        return {"branch": self.branch, "commit": self.commit, "files": list(self.files)}


def branch_name(run_name: str) -> str:
    """``retrain/<run name>`` with only characters git accepts in a ref anywhere."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", run_name).strip("-.") or "run"
    return BRANCH_PREFIX + safe.replace("..", ".")


def is_git_checkout(repo: Path) -> bool:
    done = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=repo,
                          capture_output=True, text=True, check=False)  # fmt: skip
    return done.returncode == 0 and done.stdout.strip() == "true"


def lock_paths(repo: Path) -> list[str]:
    """dvc.lock, and every dependency, params file and output it records: code, params and
    data inputs, and the outputs git holds (``cache: false`` metrics; the others are ignored)."""
    try:
        lock = yaml.safe_load((repo / LOCK).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return []
    paths = {LOCK}
    for stage in (lock.get("stages") or {}).values():
        for kind in ("deps", "outs"):
            paths.update(d["path"] for d in stage.get(kind) or [] if "path" in d)
        paths.update(stage.get("params") or {})
    return sorted(p for p in paths if (repo / p).exists() or p == LOCK)


def _changed(repo: Path, paths: Iterable[str]) -> list[str]:
    """Files under ``paths``, plus any ``.dvc`` file, that differ from HEAD or are new (not
    ignored): what the commit must hold for the lock to be true of it."""
    out = _git_env(repo, dict(os.environ), "status", "--porcelain=v1", "-z",
                   "--untracked-files=all", "--", *paths, "*.dvc", ":(glob)**/.gitignore",
                   strip=False)  # fmt: skip
    names = []
    for entry in out.split("\0"):
        if len(entry) > 3:
            names.append(entry[3:])
    return sorted(set(names))


def commit_run(repo: Path, branch: str, message: str) -> Versioned:
    """Commit what the run changed on ``branch`` (created or moved: one run, one branch)."""
    files = _changed(repo, lock_paths(repo))
    env = {**os.environ, **({} if _git(repo, "config", "--default", "", "user.email")
                            else IDENTITY)}  # fmt: skip
    head = _git(repo, "rev-parse", "HEAD")
    with tempfile.TemporaryDirectory() as tmp:
        env["GIT_INDEX_FILE"] = str(Path(tmp) / "index")
        _git_env(repo, env, "read-tree", "HEAD")
        if files:
            _git_env(repo, env, "add", "-A", "--", *files)
        tree = _git_env(repo, env, "write-tree")
    commit = _git_env(repo, env, "commit-tree", tree, "-p", head, "-m", message)
    _git(repo, "update-ref", f"refs/heads/{branch}", commit)
    return Versioned(branch, commit, tuple(files))


def push_branch(repo: Path, remote: str, branch: str) -> None:
    _git(repo, "push", remote, f"refs/heads/{branch}:refs/heads/{branch}")


def _git_env(repo: Path, env: dict[str, str], *args: str, strip: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        err = (done.stderr or done.stdout).strip()
        raise SyncError(f"git {' '.join(args[:2])} failed: {err}")
    return done.stdout.strip() if strip else done.stdout
