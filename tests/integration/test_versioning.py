"""A retrain run's commit (``emoflow.orchestration.versioning``) in a real git repository: the
lock and what it names that changed go on the run's branch; the checkout is left alone."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from emoflow.orchestration import versioning
from emoflow.orchestration.workspace import SyncError

LOCK = {"schema": "2.0", "stages": {"trim": {
    "cmd": "emoflow trim", "deps": [{"path": "data/reviewed", "md5": "x.dir"},
                                    {"path": "src/stage.py", "md5": "y"}],
    "params": {"params.yaml": {"trim": {"crf": 18}}},
    "outs": [{"path": "data/processed/clips", "md5": "z.dir"}]}}}  # fmt: skip


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # no identity anywhere: a worker's checkout may have none
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for key in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME",
                "GIT_COMMITTER_EMAIL"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    repo = tmp_path / "repo"
    (repo / "data" / "reviewed").mkdir(parents=True)
    (repo / "src").mkdir()
    (repo / ".gitignore").write_text("/data/**\n!/data/**/\n!/data/**/*.dvc\n"
                                     "!/data/reviewed/reviewed.csv\n")  # fmt: skip
    (repo / "data" / "reviewed" / "reviewed.csv").write_text("trial_id\n")
    (repo / "src" / "stage.py").write_text("v1\n")
    (repo / "params.yaml").write_text("trim: {crf: 18}\n")
    (repo / "notes.txt").write_text("not named by the lock\n")
    (repo / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    return repo


def test_the_run_commits_the_lock_and_what_it_names_on_its_branch(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    (repo / "dvc.lock").write_text(yaml.safe_dump({**LOCK, "schema": "2.0 "}))
    (repo / "data" / "reviewed" / "reviewed.csv").write_text("trial_id\nr1_001\n")
    (repo / "data" / "reviewed" / "clips.dvc").write_text("outs: []\n")
    (repo / "data" / "reviewed" / "clips").mkdir()
    (repo / "data" / "reviewed" / "clips" / "r1_001.mp4").write_bytes(b"video")  # DVC's
    (repo / "src" / "stage.py").write_text("v2\n")
    (repo / "notes.txt").write_text("edited, not the run's\n")
    branch = versioning.branch_name("crimson otter/7..x-1a2b3c4d")
    assert branch == "retrain/crimson-otter-7.x-1a2b3c4d"
    done = versioning.commit_run(repo, branch, "retrain crimson-otter")
    assert done.files == ("data/reviewed/clips.dvc", "data/reviewed/reviewed.csv", "dvc.lock",
                          "src/stage.py")  # fmt: skip
    assert _git(repo, "rev-parse", branch) == done.commit
    assert _git(repo, "rev-parse", f"{done.commit}^") == head
    assert _git(repo, "show", f"{done.commit}:src/stage.py") == "v2"
    assert _git(repo, "log", "-1", "--format=%an <%ae>", done.commit) == \
        "emoflow retrain <retrain@emoflow.invalid>"
    # the checkout: same branch, same HEAD, nothing staged, the files as they were
    assert _git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert _git(repo, "rev-parse", "HEAD") == head
    assert _git(repo, "diff", "--cached", "--name-only") == ""
    assert (repo / "notes.txt").read_text() == "edited, not the run's\n"
    # the same run again (a retry) moves its branch to a new commit of the same files
    again = versioning.commit_run(repo, branch, "retry")
    assert again.files == done.files and _git(repo, "rev-parse", branch) == again.commit


def test_push_goes_to_the_remote_and_fails_clearly_without_one(repo: Path, tmp_path: Path
                                                               ) -> None:  # fmt: skip
    remote = tmp_path / "remote.git"
    _git(tmp_path, "init", "-q", "--bare", str(remote))
    _git(repo, "remote", "add", "origin", str(remote))
    (repo / "dvc.lock").write_text(yaml.safe_dump({**LOCK, "schema": "2.0 "}))
    done = versioning.commit_run(repo, "retrain/r1", "run")
    versioning.push_branch(repo, "origin", "retrain/r1")
    assert _git(remote, "rev-parse", "retrain/r1") == done.commit
    with pytest.raises(SyncError, match="git push nowhere"):
        versioning.push_branch(repo, "nowhere", "retrain/r1")
    assert not versioning.is_git_checkout(tmp_path)
