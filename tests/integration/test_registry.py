"""The registry on real tiny models: register with lineage, download round trip, the four
promotion cases scored now through the inference core, and the same against a real server.

A repo-like folder (git, dvc.lock, data/processed/{faces,splits}) holds one Deep-Emotion model
trained with its MLflow run and evaluated by ``emoflow evaluate``'s code; a weak model is the
same one with its weights scrambled. Each test gets its own copy of that MLflow store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_mlflow_server import mlflow_server  # noqa: F401  (the tracking tests' server fixture)
from typer.testing import CliRunner

from emoflow.artifact import MODEL_FILE, load_state, save_state
from emoflow.cli import app
from emoflow.config import Params, load_params
from emoflow.datasets.clips import read_manifest
from emoflow.errors import InputError
from emoflow.inference import Predictor
from emoflow.release import promote as pr
from emoflow.release import registry as reg
from emoflow.release.export import export_model
from emoflow.tracking import registry as fetching
from emoflow.tracking.params import flatten_params, training_params
from emoflow.tracking.store import RegistryError
from emoflow.training.evaluate import evaluate_model
from emoflow.training.run import run_training

pytestmark = pytest.mark.slow

ARCH = "deep_emotion"
NAME = "emoflow-deep-emotion"
FACES = Path("data/processed/faces")
SPLITS = Path("data/processed/splits")
DVC_LOCK = {"schema": "2.0", "stages": {
    "faces": {"cmd": "emoflow faces", "outs": [
        {"path": str(FACES), "hash": "md5", "md5": "f00dfeed00000000000000000000aaaa.dir"}]},
    "split": {"cmd": "emoflow split", "outs": [
        {"path": str(SPLITS), "hash": "md5", "md5": "5b1175b1175b1175b1175b1175b1bbbb.dir"}]},
}}  # fmt: skip


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}  # fmt: skip
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


@dataclass(frozen=True)
class Repo:
    root: Path
    params: Params
    good: Path  # model folder, trained with an MLflow run in root/mlflow.db
    weak: Path  # the same model with scrambled weights
    good_metrics: dict
    weak_metrics: dict
    commit: str


@pytest.fixture(scope="module")
def repo(tiny_faces: Path, tiny_params: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Repo]:  # fmt: skip
    root = tmp_path_factory.mktemp("repo")
    (root / "data" / "processed").mkdir(parents=True)
    (root / FACES).symlink_to(tiny_faces / "faces")
    (root / SPLITS).symlink_to(tiny_faces / "splits")
    (root / "dvc.lock").write_text(yaml.safe_dump(DVC_LOCK))
    _git(root, "init", "-q")
    _git(root, "add", "dvc.lock")
    _git(root, "commit", "-q", "-m", "data")
    params = load_params(tiny_params)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        good = root / "models" / ARCH
        run_training(ARCH, params, FACES, SPLITS, good)
        export_model(good, FACES, SPLITS)  # model.onnx + export.json travel with the version
        weak = root / "models" / "weak"
        weak.mkdir()
        meta = load_state(good / MODEL_FILE)
        g = torch.Generator().manual_seed(0)
        meta["state_dict"] = {k: v + 3 * v.float().std().nan_to_num() *
                              torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                              for k, v in meta["state_dict"].items()}  # fmt: skip
        save_state(weak / MODEL_FILE, meta)
        scores = [evaluate_model(ARCH, params, FACES, SPLITS, folder, root / "metrics" /
                                 f"{folder.name}.json", root / "plots" / folder.name)
                  for folder in (good, weak)]  # fmt: skip
    # The promotion cases need two models that really differ on the test split.
    assert scores[0]["uar"] > scores[1]["uar"] + 0.05, scores
    yield Repo(root, params, good, weak, *scores, _git(root, "rev-parse", "HEAD"))


@pytest.fixture
def store(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the repo's MLflow store (training runs, no registered model yet); cwd = repo."""
    db = tmp_path / "mlflow.db"
    shutil.copy(repo.root / "mlflow.db", db)
    monkeypatch.chdir(repo.root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv(fetching.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path


def _register(repo: Repo, folder: Path) -> reg.Registered:
    return reg.register(folder, ARCH, repo.params, repo.root / "metrics" / f"{folder.name}.json")


def _promote(store: Path, **kw: object) -> pr.Decision:
    return pr.promote(ARCH, manifest=SPLITS / "test.csv", faces_dir=FACES,
                      report_path=store / "promotion.json", **kw)  # type: ignore[arg-type]  # fmt: skip


def _alias(alias: str) -> str:
    return str(fetching.get_version(f"models:/{NAME}@{alias}").version)


# --------------------------------------------------------------------------- register


def test_register_tags_lineage_metrics_and_links_the_training_run(repo: Repo, store: Path
                                                                  ) -> None:  # fmt: skip
    done = _register(repo, repo.good)
    meta = load_state(repo.good / MODEL_FILE)
    c = fetching.client()
    mv = c.get_model_version(NAME, done.version)
    run = c.get_run(meta["mlflow_run_id"])
    assert done.version == "1" and _alias(fetching.CHALLENGER) == "1"
    assert mv.run_id == run.info.run_id == done.run_id  # linked to the training's run
    assert c.get_logged_model(done.model_id).source_run_id == run.info.run_id
    tags = mv.tags
    assert tags["lineage.source"] == "training run"
    assert tags["git.commit"] == repo.commit == run.data.tags["git.commit"]
    assert tags["dvc.data/processed/faces"] == DVC_LOCK["stages"]["faces"]["outs"][0]["md5"]
    assert tags["dvc.data/processed/splits"] == DVC_LOCK["stages"]["split"]["outs"][0]["md5"]
    expected_hash = reg.params_hash(flatten_params(training_params(ARCH, repo.params)))
    assert tags["params.hash"] == expected_hash == reg.params_hash(run.data.params)
    for key in ("war", "uar", "macro_f1"):
        assert float(tags[f"test.{key}"]) == repo.good_metrics[key]
    assert json.loads(tags["classes"]) == meta["classes"]
    assert tags["files"] == "model.pt model.onnx export.json"
    assert tags["training.run_id"] == run.info.run_id

    # Another version moves @challenger. The weak copy kept the run id, so its params hash is
    # the run's (what it was trained with), whatever params.yaml says now.
    other = reg.register(repo.weak, ARCH, repo.params.model_copy(update={"classes": ("x", "y")}))
    assert other.version == "2" and _alias(fetching.CHALLENGER) == "2"
    assert other.tags["lineage.source"] == "training run"
    assert other.tags["params.hash"] == expected_hash
    assert "test.uar" not in other.tags  # no metrics file given


def test_register_refuses_a_wrong_folder(repo: Repo, store: Path) -> None:
    with pytest.raises(InputError, match=r"no model\.pt"):
        reg.register(store, ARCH, repo.params)
    with pytest.raises(InputError, match="holds a deep_emotion model, not fan"):
        reg.register(repo.good, "fan", repo.params)
    # Retrained since the export: the ONNX file holds other weights than model.pt.
    stale = store / "stale"
    shutil.copytree(repo.good, stale)
    shutil.copy(repo.weak / MODEL_FILE, stale / MODEL_FILE)
    with pytest.raises(InputError, match=r"exported from another model\.pt"):
        reg.register(stale, ARCH, repo.params)
    shutil.copy(repo.good / MODEL_FILE, stale / MODEL_FILE)
    (stale / "engine.json").write_text("{}")
    with pytest.raises(InputError, match=r"model\.engine and engine\.json go together"):
        reg.register(stale, ARCH, repo.params)
    assert not fetching.client().search_registered_models()  # nothing half-registered


def test_download_round_trip_predicts_like_the_original(repo: Repo, store: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    done = _register(repo, repo.good)
    folder = fetching.download_version(f"models:/{NAME}@{fetching.CHALLENGER}")
    assert folder.is_relative_to(store / "cache")
    assert sorted(p.name for p in folder.iterdir()) == sorted(done.files)
    for name in done.files:
        assert (folder / name).read_bytes() == (repo.good / name).read_bytes(), name
    assert fetching.download_version(done.uri) == folder  # cached by version, alias or number

    for backend in ("torch", "onnx"):
        original = Predictor.from_dir(repo.good, backend)
        copy = Predictor.from_dir(folder, backend)
        refs = read_manifest(SPLITS / "test.csv", FACES, original.classes)
        want = original.predict_face_files([r.path for r in refs])
        got = copy.predict_face_files([r.path for r in refs])
        assert copy.backend == backend
        assert [r.probabilities for r in got] == [r.probabilities for r in want], backend
    served = Predictor.from_uri(f"models:/{NAME}@{fetching.CHALLENGER}")
    assert served.backend == "onnx"  # "auto"
    assert (served.ref.name, served.ref.version, served.ref.alias) == (NAME, done.version,
                                                                       fetching.CHALLENGER)

    # A new store numbers from 1 again: the cache must not answer with the other store's v1.
    shutil.copy(repo.root / "mlflow.db", store / "other.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'other.db'}")
    _register(repo, repo.weak)
    weak = fetching.download_version(f"models:/{NAME}/1")
    assert weak != folder
    assert (weak / MODEL_FILE).read_bytes() == (repo.weak / MODEL_FILE).read_bytes()


def test_unknown_versions_and_aliases_are_one_line_errors(repo: Repo, store: Path) -> None:
    with pytest.raises(RegistryError, match="not a model URI"):
        fetching.download_version("runs:/abc/model")
    _register(repo, repo.good)
    with pytest.raises(RegistryError, match=r"no version has alias 'champion'.*promote"):
        fetching.download_version(f"models:/{NAME}@champion")
    with pytest.raises(RegistryError, match="no version 7"):
        fetching.download_version(f"models:/{NAME}/7")


# --------------------------------------------------------------------------- promote


def _check_scores(record: dict, repo: Repo, challenger: str, champion: str | None) -> None:
    """promote's numbers are today's, computed through the inference core: they equal what
    ``emoflow evaluate`` measured for the same weights on the same test split."""
    expected = {"good": repo.good_metrics, "weak": repo.weak_metrics}
    for side, which in (("challenger", challenger), ("champion", champion)):
        if which is None:
            assert record[side] is None
            continue
        for key in ("war", "uar", "macro_f1"):
            assert record[side][key] == pytest.approx(expected[which][key], abs=1e-12), (side, key)
        assert record[side]["n"] == expected[which]["test_clips"]


def test_the_first_model_becomes_champion(repo: Repo, store: Path) -> None:
    _register(repo, repo.weak)
    decision = _promote(store)
    assert decision.outcome == "first" and decision.promoted
    assert _alias(fetching.CHAMPION) == "1"
    _check_scores(decision.record, repo, "weak", None)
    assert json.loads((store / "promotion.json").read_text()) == decision.record
    tags = fetching.client().get_model_version(NAME, "1").tags
    assert tags["promotion.outcome"] == "first" and "promotion.champion_score" not in tags
    assert float(tags["promotion.score"]) == pytest.approx(repo.weak_metrics["uar"], abs=1e-6)
    again = _promote(store)  # nothing new registered
    assert again.outcome == "unchanged" and pr.exit_code(again, require_promotion=True) == 3


def test_a_better_challenger_is_promoted(repo: Repo, store: Path) -> None:
    _register(repo, repo.weak)
    _promote(store)
    _register(repo, repo.good)
    decision = _promote(store)
    assert decision.outcome == "promoted" and _alias(fetching.CHAMPION) == "2"
    _check_scores(decision.record, repo, "good", "weak")
    c = fetching.client()
    tags = c.get_model_version(NAME, "2").tags
    assert tags["promotion.champion_version"] == "1"
    assert float(tags["promotion.champion_score"]) == pytest.approx(repo.weak_metrics["uar"],
                                                                    abs=1e-6)  # fmt: skip
    assert c.get_model_version(NAME, "1").tags["promotion.replaced_by"] == "2"
    assert pr.exit_code(decision, require_promotion=True) == 0


def test_a_worse_challenger_keeps_the_champion_and_fails_only_when_required(
        repo: Repo, store: Path) -> None:  # fmt: skip
    _register(repo, repo.good)
    _promote(store)
    _register(repo, repo.weak)
    args = ["promote", "--model", ARCH, "--test", str(SPLITS / "test.csv"), "--faces",
            str(FACES), "--report", str(store / "promotion.json")]  # fmt: skip
    plain = CliRunner().invoke(app, args)
    assert plain.exit_code == 0, plain.output
    record = json.loads((store / "promotion.json").read_text())
    good, weak = repo.good_metrics["uar"], repo.weak_metrics["uar"]
    assert plain.stdout.strip() == (f"kept champion v1 (UAR {good:.3f}) over v2 ({weak:.3f}), "
                                    f"margin 0.005")  # fmt: skip
    assert record["outcome"] == "kept" and _alias(fetching.CHAMPION) == "1"
    _check_scores(record, repo, "weak", "good")
    # As pipelines run it: the installed command's exit status.
    required = subprocess.run([sys.executable, "-m", "emoflow.cli", *args, "--require-promotion"],
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert required.returncode == 3, required.stderr[-2000:]
    assert required.stdout.strip() == plain.stdout.strip()
    assert _alias(fetching.CHAMPION) == "1"
    assert fetching.client().get_model_version(NAME, "2").tags["promotion.outcome"] == "kept"


def test_a_tie_within_the_margin_keeps_the_champion(repo: Repo, store: Path) -> None:
    _register(repo, repo.good)
    _promote(store)
    _register(repo, repo.good)  # the same weights again: the very same scores
    decision = _promote(store, min_delta=0.005)
    assert decision.outcome == "kept" and _alias(fetching.CHAMPION) == "1"
    _check_scores(decision.record, repo, "good", "good")
    # With no margin a tie is enough to win ("at least the margin").
    assert _promote(store, min_delta=0.0).outcome == "promoted" and _alias(fetching.CHAMPION) == "2"


def test_promote_refuses_bad_arguments(repo: Repo, store: Path) -> None:
    with pytest.raises(RegistryError, match="no version has alias 'challenger'"):
        _promote(store)
    _register(repo, repo.good)
    with pytest.raises(pr.EmoflowError, match="unknown metric 'f2'"):
        _promote(store, metric="f2")
    empty = store / "test.csv"
    empty.write_text("trial_id,participant,label,file\n")
    with pytest.raises(InputError, match="no clips"):
        pr.promote(ARCH, manifest=empty, faces_dir=FACES, report_path=store / "p.json")
    assert not (store / "p.json").exists()


# --------------------------------------------------------------------------- a tracking server


@pytest.mark.service
def test_register_and_promote_through_a_tracking_server(
        repo: Repo, mlflow_server: str, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(repo.root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv(fetching.CACHE_ENV, str(tmp_path / "cache"))
    before = sorted(p.name for p in (repo.root / "mlartifacts").iterdir())
    first = _register(repo, repo.weak)
    # The training run lives in the local store, not on the server: lineage from the workspace.
    assert first.run_id is None and first.tags["lineage.source"] == "workspace"
    assert first.tags["git.commit"] == repo.commit
    assert first.tags["dvc.data/processed/faces"] == DVC_LOCK["stages"]["faces"]["outs"][0]["md5"]
    assert _promote(tmp_path).outcome == "first"
    _register(repo, repo.good)
    decision = _promote(tmp_path)
    assert decision.outcome == "promoted" and _alias(fetching.CHAMPION) == "2"
    _check_scores(decision.record, repo, "good", "weak")
    folder = fetching.download_version(f"models:/{NAME}@champion")
    assert (folder / MODEL_FILE).read_bytes() == (repo.good / MODEL_FILE).read_bytes()
    # Everything went to the server's stores: nothing new in the local artifact folder.
    assert sorted(p.name for p in (repo.root / "mlartifacts").iterdir()) == before
    assert np.isclose(float(fetching.client().get_model_version(NAME, "2").tags["test.uar"]),
                      repo.good_metrics["uar"])  # fmt: skip


def test_a_retried_register_adds_no_version_and_sets_the_alias(repo: Repo, store: Path) -> None:
    """The retrain flow's register step (``release.register_once``) after a partial failure:
    the version was created, its alias was not set."""
    from emoflow.orchestration.release import register_once

    metrics = repo.root / "metrics" / "deep_emotion.json"
    first = register_once(repo.good, ARCH, repo.params, metrics, {"retrain.commit": "c1"})
    assert not first["existing"] and _alias("challenger") == first["version"]
    c = fetching.client()
    c.delete_registered_model_alias(NAME, "challenger")  # the failure: no alias
    again = register_once(repo.good, ARCH, repo.params, metrics, {"retrain.commit": "c2"})
    assert again["existing"] and again["version"] == first["version"]
    assert len(c.search_model_versions(f"name = '{NAME}'")) == 1
    assert _alias("challenger") == first["version"]
    assert c.get_model_version(NAME, first["version"]).tags["retrain.commit"] == "c2"
