"""What a run was made from: the git commit and the DVC hashes of the data it read."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

GIT_TIMEOUT_S = 10


def lineage_tags(repo: Path = Path("."), data_paths: Sequence[str] = ()) -> dict[str, str]:
    """What a run was made from: ``git.commit``, ``git.dirty`` and ``dvc.<path>`` per data path.

    ``git.commit`` and ``git.dirty`` are ``"unknown"`` outside a git repo or without git;
    ``git.dirty`` is ``"true"`` when tracked files differ from the commit (untracked files such as
    ``mlflow.db`` do not count). ``dvc.<path>`` is the md5 that ``dvc.lock`` records for the stage
    output at exactly ``path`` (or, for data added with ``dvc add``, that ``<path>.dvc`` records);
    a path DVC does not know gets no tag. Paths are repo-relative as in dvc.lock; an absolute path
    inside ``repo`` is made relative.
    """
    repo = Path(repo)
    tags = {"git.commit": "unknown", "git.dirty": "unknown"}
    commit = _git(repo, "rev-parse", "HEAD")
    if commit is not None:
        tags["git.commit"] = commit.strip()
        status = _git(repo, "status", "--porcelain", "--untracked-files=no")
        if status is not None:
            tags["git.dirty"] = "true" if status.strip() else "false"
    hashes = dvc_hashes(repo)
    for path in data_paths:
        key = _norm(_relative_to(repo, path))
        md5 = hashes.get(key) or _dvc_file_hash(repo, key)
        if md5:
            tags[f"dvc.{key}"] = md5
    return tags


def _git(repo: Path, *args: str) -> str | None:
    """stdout of ``git <args>`` in ``repo``, or None when git is missing or fails."""
    try:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def dvc_hashes(repo: Path = Path(".")) -> dict[str, str]:
    """``{out path: md5}`` over every stage's outs in ``repo/dvc.lock``; {} if absent or bad."""
    lock = Path(repo) / "dvc.lock"
    if not lock.exists():
        return {}
    try:
        doc = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        log.warning("%s: cannot read (%s); runs get no dvc.* lineage tags", lock, e)
        return {}
    out: dict[str, str] = {}
    stages = doc.get("stages") if isinstance(doc, dict) else None
    for stage in (stages or {}).values():
        for entry in (stage or {}).get("outs") or []:
            md5 = _out_hash(entry)
            if md5:
                out[_norm(entry["path"])] = md5
    return out


def _dvc_file_hash(repo: Path, path: str) -> str | None:
    """The md5 in ``<path>.dvc`` (``dvc add``) if there is one."""
    dvc_file = Path(repo) / f"{path}.dvc"
    if not dvc_file.exists():
        return None
    try:
        doc = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    outs = doc.get("outs") if isinstance(doc, dict) else None
    return _out_hash(outs[0]) if outs else None


def _out_hash(entry: object) -> str | None:
    """DVC 3 writes ``hash: md5`` and ``md5: <value>``; DVC 2 only ``md5``."""
    if not isinstance(entry, dict) or "path" not in entry:
        return None
    field = entry.get("hash", "md5")
    value = entry.get(field) or entry.get("md5")
    return str(value) if value else None


def _relative_to(repo: Path, path: str | Path) -> str:
    """An absolute path inside ``repo`` as the repo-relative path dvc.lock uses."""
    path = Path(path)
    if path.is_absolute():
        try:
            return path.resolve().relative_to(repo.resolve()).as_posix()
        except ValueError:
            return path.as_posix()
    return path.as_posix()


def _norm(path: str) -> str:
    return Path(path).as_posix().removeprefix("./").rstrip("/")
