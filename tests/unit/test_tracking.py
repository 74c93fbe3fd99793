"""MLflow helpers against a temp sqlite store: params, lineage, metrics, models, plots, offline."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from torch import nn

from emoflow.models import build_model
from emoflow.tracking import models as tm
from emoflow.tracking import params as tp
from emoflow.tracking import store as ts
from emoflow.tracking.lineage import lineage_tags
from emoflow.tracking.params import flatten_params
from emoflow.tracking.run import RunLogger
from emoflow.training.metrics import classification_report
from emoflow.training.plots import plot_confusion, plot_curves

LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost"}


# --------------------------------------------------------------------------- flatten_params


def test_flatten_params_nests_lists_and_scalars() -> None:
    params = {"seed": 42, "train": {"lr": 1e-3, "model": {"arch": "fan", "relation": True},
                                    "milestones": [10, 20], "pair": (1, "a")},
              "classes": ["anger", "fear"], "empty": {}, "none": None}  # fmt: skip
    assert flatten_params(params) == {
        "seed": "42",
        "train.lr": "0.001",
        "train.model.arch": "fan",
        "train.model.relation": "True",
        "train.milestones": "[10, 20]",
        "train.pair": '[1, "a"]',
        "classes": '["anger", "fear"]',
        "empty": "{}",
        "none": "None",
    }
    assert flatten_params({"b": 1}, prefix="a") == {"a.b": "1"}


def test_flatten_params_truncates_to_mlflow_limit() -> None:
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    assert tp.MAX_PARAM_VALUE_LENGTH == MAX_PARAM_VAL_LENGTH
    flat = flatten_params({"long": "x" * 10_000, "list": list(range(5000))})
    assert all(len(v) == MAX_PARAM_VAL_LENGTH for v in flat.values())
    assert flat["long"].endswith("...") and flat["list"].startswith("[0, 1, 2")


# --------------------------------------------------------------------------- lineage


DVC_LOCK = """\
schema: '2.0'
stages:
  faces:
    cmd: emoflow faces
    outs:
    - path: data/processed/faces
      hash: md5
      md5: 1111aaaa.dir
      size: 10
      nfiles: 2
  split:
    cmd: emoflow split
    outs:
    - path: data/processed/splits
      md5: 2222bbbb.dir
"""


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}  # fmt: skip
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def test_lineage_tags_in_a_git_repo_with_dvc_lock(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "dvc.lock").write_text(DVC_LOCK)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw.dvc").write_text("outs:\n- md5: 3333cccc.dir\n  path: raw\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "init")
    head = _git(tmp_path, "rev-parse", "HEAD")

    tags = lineage_tags(tmp_path, [str(tmp_path / "data/processed/faces"),
                                   "./data/processed/splits/",
                                   "data/raw", "data/unknown"])  # fmt: skip
    assert tags == {
        "git.commit": head,
        "git.dirty": "false",
        "dvc.data/processed/faces": "1111aaaa.dir",
        "dvc.data/processed/splits": "2222bbbb.dir",
        "dvc.data/raw": "3333cccc.dir",
    }
    (tmp_path / "untracked.txt").write_text("x")
    assert lineage_tags(tmp_path)["git.dirty"] == "false"  # untracked files do not count
    (tmp_path / "dvc.lock").write_text(DVC_LOCK + "\n")
    assert lineage_tags(tmp_path)["git.dirty"] == "true"


def test_lineage_tags_outside_git_and_without_dvc_lock(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    env_dir = tmp_path / "nogit"
    env_dir.mkdir()
    # GIT_CEILING_DIRECTORIES stops git from finding a repo above tmp_path.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    tags = lineage_tags(env_dir, ["data/processed/faces"])
    assert tags == {"git.commit": "unknown", "git.dirty": "unknown"}


def test_lineage_tags_survive_a_broken_dvc_lock(tmp_path: Path) -> None:
    (tmp_path / "dvc.lock").write_text("stages: [unclosed\n")
    assert "dvc.data/x" not in lineage_tags(tmp_path, ["data/x"])


# --------------------------------------------------------------------------- RunLogger


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow sqlite store: creating one takes ~5 s, copying it nothing."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_db: Path) -> Iterator[Path]:
    """A fresh sqlite store in tmp_path, cwd = tmp_path (the 'repo root')."""
    import mlflow

    shutil.copy(empty_db, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    yield tmp_path
    mlflow.set_tracking_uri(None)  # forget it; monkeypatch restores the env variable


@pytest.fixture
def no_internet(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records (and refuses) every connection or name lookup that leaves the machine."""
    attempts: list[object] = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in LOCAL_HOSTS:
            attempts.append((threading.current_thread().name, address))
            raise OSError("network disabled in this test")
        return real_connect(self, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host not in LOCAL_HOSTS and host is not None:
            attempts.append((threading.current_thread().name, host))
            raise OSError("network disabled in this test")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


class TinyNet(nn.Module):
    """A model small enough to log in a unit test."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_run_logger_records_params_tags_metrics_and_a_model(store: Path, no_internet: list
                                                            ) -> None:  # fmt: skip
    import mlflow
    import mlflow.pytorch

    torch.manual_seed(0)
    model = TinyNet()
    example = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    params = {"train": {"lr": 0.01, "milestones": [5, 9]}, "model": "tiny",
              **{f"many.p{i}": i for i in range(150)}}  # more than one batch of params
    with RunLogger("unit", run_name="r1", params=params, tags={"git.commit": "abc"}) as run:
        assert run.run_id is not None
        for epoch in (1, 2):
            run.log_metrics({"train_loss": 1.0 / epoch, "val_war": 0.5 * epoch, "note": "x",
                             "missing": None}, step=epoch)  # fmt: skip
        info = run.log_model(model, torch.from_numpy(example))

    client = mlflow.MlflowClient()
    data = client.get_run(run.run_id)
    assert data.info.status == "FINISHED"
    assert data.info.run_name == "r1"
    assert data.data.params["train.lr"] == "0.01"
    assert data.data.params["train.milestones"] == "[5, 9]"
    assert data.data.params["many.p149"] == "149"
    assert data.data.tags["git.commit"] == "abc"
    assert data.data.metrics["val_war"] == 1.0  # the latest step
    history = client.get_metric_history(run.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5)]
    assert "note" not in data.data.metrics and "missing" not in data.data.metrics

    # The signature keeps the batch axis variable; the model reloads and gives equal outputs.
    assert info is not None and info.signature.inputs.inputs[0].shape == (-1, 3, 4, 4)
    loaded = mlflow.pytorch.load_model(f"runs:/{run.run_id}/model")
    with torch.no_grad():
        np.testing.assert_array_equal(loaded(torch.from_numpy(example)).numpy(),
                                      model.eval()(torch.from_numpy(example)).numpy())
    reqs = (Path(mlflow.artifacts.download_artifacts(f"runs:/{run.run_id}/model")) /
            "requirements.txt").read_text()  # fmt: skip
    assert "torch==" in reqs and "+" not in reqs
    assert no_internet == []


def test_default_store_puts_artifacts_in_mlartifacts(tmp_path: Path, empty_db: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    shutil.copy(empty_db, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert ts.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    try:
        report = tmp_path / "report.json"
        report.write_text("{}")
        with RunLogger("local", params={"a": 1}, system_metrics=False) as run:
            run.log_artifact(report, "reports")
            run.log_dict({"war": 0.5}, "metrics/test.json")
        exp = mlflow.MlflowClient().get_experiment_by_name("local")
        assert exp.artifact_location == (tmp_path.resolve() / "mlartifacts").as_uri()
        files = {p.name for p in (tmp_path / "mlartifacts").rglob("*") if p.is_file()}
        assert {"report.json", "test.json"} <= files
        assert (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    finally:
        mlflow.set_tracking_uri(None)


def test_run_logger_marks_failed_runs_and_reuses_the_experiment(store: Path) -> None:
    import mlflow

    with pytest.raises(RuntimeError), RunLogger("unit", system_metrics=False) as failed:
        raise RuntimeError("boom")
    with RunLogger("unit", system_metrics=False) as ok:
        pass
    client = mlflow.MlflowClient()
    assert client.get_run(failed.run_id).info.status == "FAILED"
    assert client.get_run(ok.run_id).info.status == "FINISHED"
    assert client.get_run(failed.run_id).info.experiment_id == ok.experiment_id
    assert mlflow.active_run() is None


def test_disabled_run_logger_does_nothing(store: Path) -> None:
    with RunLogger("unit", params={"a": 1}, enabled=False) as run:
        run.log_metrics({"x": 1.0}, step=1)
        run.log_artifact(store / "nothing.txt")
        run.log_dict({}, "x.json")
        assert run.log_model(TinyNet(), np.zeros((1, 3, 4, 4), np.float32)) is None
        assert run.run_id is None
    assert not (store / "mlartifacts").exists()


def test_fan_signature_has_variable_clip_length() -> None:
    model = build_model("fan", num_classes=7).eval()
    example = np.zeros((1, 2, 3, 32, 32), np.float32)
    sig = tm.model_signature(model, example)
    assert sig.inputs.inputs[0].shape == (-1, -1, 3, 32, 32)
    assert sig.outputs.inputs[0].shape == (-1, 7)


def test_plain_module_unwraps_data_parallel() -> None:
    inner = TinyNet()
    assert tm.plain_module(nn.DataParallel(inner)) is inner
    assert tm.plain_module(inner) is inner


def test_model_requirements_pin_installed_versions() -> None:
    reqs = tm.model_requirements()
    assert any(r.startswith("torch==") for r in reqs)
    assert all("+" not in r for r in reqs)


def test_telemetry_is_off_when_emoflow_imports_mlflow(tmp_path: Path) -> None:
    """Outside pytest (which mlflow itself detects), importing mlflow starts its telemetry."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTEST_CURRENT_TEST", "CI", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"}}
    code = ("from emoflow.tracking.store import tracking_uri; tracking_uri(); "
            "import mlflow; from mlflow.telemetry import get_telemetry_client; "
            "print(get_telemetry_client() is None)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, check=True,
                         capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    assert out.strip().splitlines()[-1] == "True"


# --------------------------------------------------------------------------- plots


def _check_png(path: Path) -> np.ndarray:
    assert path.exists() and path.stat().st_size > 5_000
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert float(image[..., :3].std()) > 0.01  # not blank
    assert not list(path.parent.glob(".*.tmp"))  # atomic write left no temp file
    return image


@pytest.mark.parametrize("normalise", [True, False])
def test_plot_confusion_writes_a_png(tmp_path: Path, normalise: bool) -> None:
    classes = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 6, 100)  # neutral without support
    y_pred = np.where(rng.random(100) < 0.6, y_true, rng.integers(0, 7, 100))
    report = classification_report(y_true.tolist(), y_pred.tolist(), classes)
    out = plot_confusion(report["confusion"], classes, tmp_path / "plots" / "cm.png",
                         normalise=normalise)  # fmt: skip
    _check_png(out)


def test_plot_confusion_rejects_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected"):
        plot_confusion([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "cm.png")
    assert not (tmp_path / "cm.png").exists()


def test_plot_curves_skips_missing_keys(tmp_path: Path) -> None:
    history = [{"epoch": e, "train_loss": 2.0 / e, "train_acc": 0.1 * e, "lr": 1e-3 / e}
               for e in range(1, 8)]  # fmt: skip
    for row in history[1::2]:
        row.update(val_loss=2.2 / row["epoch"], val_war=0.09 * row["epoch"])
    _check_png(plot_curves(history, tmp_path / "curves.png"))
    _check_png(plot_curves([{"epoch": 1}], tmp_path / "empty.png"))
    json.dumps(history)  # the trainer's history.json rows are what is plotted
