"""`dvc repro` end to end in a fresh repository: runs, no-op rerun, param reruns, push/pull."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DATA_STAGES = ("sample", "segment", "validate", "trim", "faces", "split")
MODEL_STAGES = tuple(f"{s}@{m}" for s in ("train", "evaluate") for m in ("fan", "deep_emotion"))
STAGES = DATA_STAGES + MODEL_STAGES

pytestmark = pytest.mark.slow


def _run(repo: Path, *cmd: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false"}  # fmt: skip
    env.pop("MLFLOW_TRACKING_URI", None)  # runs go to the test repo's own mlflow.db
    out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def _ran(log: str) -> set[str]:
    return {s for s in STAGES if f"Running stage '{s}'" in log}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("repo"), tmp_path_factory.mktemp("remote"))


def small_params() -> dict:
    """The project's params.yaml at the smallest sample a whole pipeline runs on in minutes (also
    the stack test's workspace)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    # Three participants: the least a subject-independent train/val/test split can take.
    params["sample"].update(participants=3, trials_per_participant=7)
    params["train"]["fan"].update(epochs=2, image_size=32, backbone="resnet18",
                                  backbone_lr_scale=1.0, features="appearance")  # fmt: skip
    params["train"]["deep_emotion"].update(epochs=2)
    return params


def make_repo(repo: Path, remote: Path, folders: tuple[str, ...] = ("src",)) -> Path:
    """A new git + DVC repository in ``repo`` holding the project's pipeline (and ``folders``)
    at a small sample size, with ``remote`` as its default DVC remote. Also used by
    test_pipeline_flow.py."""
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", "data/reviewed/reviewed.csv"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, repo / name)
    for name in folders:
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = small_params()
    params["split"].update(folds=3)
    params["train"].update(workers=0)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(repo, "git", "init", "-q")
    _run(repo, "dvc", "init", "-q")
    _run(repo, "dvc", "config", "core.analytics", "false")
    _run(repo, "dvc", "remote", "add", "-d", "local", str(remote))
    return repo


def test_repro_runs_every_stage_then_nothing(repo: Path) -> None:
    log = _run(repo, "dvc", "repro")
    assert _ran(log) == set(STAGES), log
    assert (repo / "data/processed/clips/clips.csv").exists()
    assert (repo / "reports/validation/summary.json").exists()
    for model in ("fan", "deep_emotion"):
        assert (repo / f"models/{model}/model.pt").exists()
        assert (repo / f"plots/{model}/confusion.png").exists()
    shown = _run(repo, "dvc", "metrics", "show")
    assert "metrics/fan.json" in shown and "metrics/deep_emotion.json" in shown
    again = _run(repo, "dvc", "repro")
    assert _ran(again) == set(), again
    assert "up to date" in _run(repo, "dvc", "status")


def test_a_param_reruns_only_the_stages_that_read_it(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())

    def change(section: str, key: str, value: object) -> set[str]:
        params[section][key] = value
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        return _ran(_run(repo, "dvc", "repro"))

    def upstream(stage: str) -> set[str]:
        return set(DATA_STAGES[: DATA_STAGES.index(stage)])

    assert change("validate", "max_label_share", 0.6) == {"validate"}  # same outputs: stops here
    # An experiment on one model's section (as users run them) leaves the other model alone.
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pipeline")
    exp = _run(repo, "dvc", "exp", "run", "-S", "train.deep_emotion.epochs=3")
    assert _ran(exp) == {"train@deep_emotion", "evaluate@deep_emotion"}, exp
    params["train"]["deep_emotion"]["epochs"] = 3
    # New outputs change the bytes later stages read: they follow; earlier ones never do.
    ran = change("split", "seed", 1)
    assert "split" in ran and not ran & upstream("split")
    ran = change("trim", "crf", 20)
    assert {"trim", "faces", "split"} <= ran and not ran & upstream("trim")


def test_push_then_pull_restores_the_data(repo: Path) -> None:
    _run(repo, "dvc", "push")
    clips = repo / "data/processed/clips/clips.csv"
    before = clips.read_bytes()
    reviewed = repo / "data/reviewed/reviewed.csv"  # git's, not DVC's: a clone brings it back
    table = reviewed.read_bytes()
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    reviewed.parent.mkdir(parents=True)
    reviewed.write_bytes(table)
    _run(repo, "dvc", "pull")
    assert clips.read_bytes() == before
    assert len(list((repo / "data/raw/sessions").glob("*.mp4"))) == 3
    assert "up to date" in _run(repo, "dvc", "status")
