"""RunLogger against a real ``mlflow server`` on 127.0.0.1: params, metrics, tags and a FAN model.

The server is started as the product deploys it (sqlite backend, proxied artifacts), in its own
process group so that its workers are stopped with it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from emoflow.models import build_model
from emoflow.tracking.params import flatten_params
from emoflow.tracking.run import RunLogger

pytestmark = pytest.mark.service

READY_TIMEOUT_S = 180  # ~11 s on a quiet machine; minutes when CI shares the cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)  # start_new_session=True: the group id is the server's pid
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log_file = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"sqlite:///{root}/db.sqlite",
         "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log_file.flush()
                tail = (root / "server.log").read_text()[-3000:]
                pytest.fail(f"mlflow server did not become healthy at {url}:\n{tail}")
            time.sleep(0.5)
        yield url
    finally:
        _stop(proc)
        log_file.close()


def test_run_logger_against_a_real_server(mlflow_server: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import mlflow
    import mlflow.pytorch

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)  # nothing may be written here: the server stores everything
    torch.manual_seed(0)
    model = build_model("fan", num_classes=7)
    example = np.random.default_rng(0).standard_normal((1, 3, 3, 64, 64)).astype(np.float32)
    params = {"model": {"arch": "fan", "relation": True}, "train": {"lr": 1e-4, "epochs": 2}}
    tags = {"git.commit": "0123abcd", "dvc.data/processed/faces": "feed.dir"}
    try:
        with RunLogger("server-test", run_name="fan-smoke", params=params, tags=tags) as run:
            for epoch in (1, 2):
                run.log_metrics({"train_loss": 2.0 / epoch, "val_uar": 0.25 * epoch}, step=epoch)
            info = run.log_model(model, example)
    finally:
        mlflow.set_tracking_uri(None)

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    data = client.get_run(run.run_id)
    assert data.info.status == "FINISHED"
    assert data.info.run_name == "fan-smoke"
    assert {k: data.data.params[k] for k in flatten_params(params)} == flatten_params(params)
    assert data.data.tags["git.commit"] == "0123abcd"
    assert data.data.tags["dvc.data/processed/faces"] == "feed.dir"
    assert data.data.metrics["val_uar"] == 0.5
    history = client.get_metric_history(run.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.0)]
    assert info is not None and info.signature.inputs.inputs[0].shape == (-1, -1, 3, 64, 64)
    assert client.get_experiment(data.info.experiment_id).artifact_location.startswith(
        "mlflow-artifacts:")
    assert not (tmp_path / "mlartifacts").exists() and not (tmp_path / "mlruns").exists()

    mlflow.set_tracking_uri(mlflow_server)
    try:
        loaded = mlflow.pytorch.load_model(f"runs:/{run.run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    x = torch.from_numpy(example)
    with torch.no_grad():
        expected = model.eval()(x)
        got = loaded.eval()(x)
        longer = loaded(torch.from_numpy(np.concatenate([example, example], axis=1)))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert longer.shape == (1, 7)  # any clip length, as the signature says
