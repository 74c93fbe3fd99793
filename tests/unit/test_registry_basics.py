"""Registry helpers that need no trained model: URIs, names, the cache folder, metrics files,
exit codes, and register + download of an untrained model against a temp sqlite store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from emoflow.artifact import MODEL_FILE, save_state
from emoflow.config import Params
from emoflow.errors import InputError
from emoflow.models import build_model
from emoflow.release import promote as pr
from emoflow.release import registry as reg
from emoflow.tracking import registry as fetching
from emoflow.tracking.store import RegistryError


@pytest.mark.parametrize(("uri", "parsed"), [
    ("models:/emoflow-fan@champion", ("emoflow-fan", "champion", None)),
    ("models:/emoflow-deep-emotion/12", ("emoflow-deep-emotion", None, "12")),
    (" models:/emoflow-fan@chall_2/ ", ("emoflow-fan", "chall_2", None)),
])  # fmt: skip
def test_model_uris_parse(uri: str, parsed: tuple) -> None:
    assert fetching.parse_model_uri(uri) == parsed


@pytest.mark.parametrize("uri", ["runs:/abc/model", "models:/emoflow-fan", "models:/a/b",
                                 "models:/emoflow-fan@", "models:/m-123/3/extra"])  # fmt: skip
def test_other_uris_are_refused(uri: str) -> None:
    with pytest.raises(RegistryError, match="not a model URI"):
        fetching.parse_model_uri(uri)


def test_registered_names() -> None:
    assert reg.registered_name("fan") == "emoflow-fan"
    assert reg.registered_name("deep_emotion") == "emoflow-deep-emotion"
    with pytest.raises(RegistryError, match="unknown model 'resnet'"):
        reg.registered_name("resnet")


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                                           ) -> None:  # fmt: skip
    monkeypatch.delenv(fetching.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fetching.default_cache_dir() == tmp_path / "xdg" / "emoflow" / "models"
    monkeypatch.setenv(fetching.CACHE_ENV, str(tmp_path / "mine"))
    assert fetching.default_cache_dir() == tmp_path / "mine"


def test_metrics_file_gives_numbers_only(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"war": 0.5, "uar": 0.25, "macro_f1": True, "test_clips": 8,
                                "val_war": 0.9, "recall": {"a": 1.0}}))  # fmt: skip
    assert reg._read_metrics(path) == {"war": 0.5, "uar": 0.25, "test_clips": 8}
    assert reg._read_metrics(tmp_path / "missing.json") == {}
    path.write_text("{not json")
    with pytest.raises(InputError, match=r"m\.json: not valid JSON"):
        reg._read_metrics(path)


def test_exit_codes() -> None:
    kept = pr.Decision("kept", "kept champion v1", {})
    for outcome, promoted in (("first", True), ("promoted", True), ("kept", False),
                              ("unchanged", False)):  # fmt: skip
        d = pr.Decision(outcome, "", {})
        assert d.promoted is promoted
        assert pr.exit_code(d, require_promotion=True) == (0 if promoted else 3)
    assert pr.exit_code(kept, require_promotion=False) == 0


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow store: creating one takes seconds, copying it nothing."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def test_register_then_download_an_untrained_model(
        empty_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Without a training run: lineage from the workspace, files back byte for byte."""
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv(fetching.CACHE_ENV, str(tmp_path / "cache"))
    folder = tmp_path / "models" / "deep_emotion"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    model = build_model("deep_emotion", 3)
    save_state(folder / MODEL_FILE, {
        "arch": "deep_emotion", "classes": ["a", "b", "c"], "model_config": {},
        "state_dict": model.state_dict(), "epoch": 1, "val": {}, "image_size": 48,
        "grayscale": True, "frames_per_clip": None, "mlflow_run_id": "0" * 32})  # fmt: skip
    done = reg.register(folder, "deep_emotion", Params())
    assert (done.name, done.version, done.run_id) == ("emoflow-deep-emotion", "1", None)
    assert done.tags["lineage.source"] == "workspace"
    assert done.tags["git.commit"] == "unknown"  # no git repo here
    assert done.tags["training.run_id"] == "0" * 32  # recorded, though this store lacks it
    assert (tmp_path / "mlartifacts" / "models" / done.model_id).is_dir()
    got = fetching.download_version("models:/emoflow-deep-emotion@challenger")
    assert got.parent.parent == tmp_path / "cache" / "emoflow-deep-emotion"
    assert sorted(p.name for p in got.iterdir()) == [MODEL_FILE]
    assert (got / MODEL_FILE).read_bytes() == (folder / MODEL_FILE).read_bytes()
    mlmodel = yaml.safe_load((got.parent / "MLmodel").read_text())  # pyfunc's own file beside
    assert mlmodel["metadata"]["classes"] == ["a", "b", "c"]
    assert mlmodel["metadata"]["files"] == [MODEL_FILE]
    assert "python_function" in mlmodel["flavors"]
