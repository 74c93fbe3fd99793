"""Reloading: the service follows ``models:/emoflow-fan@champion`` in a real MLflow registry
(sqlite in a temp folder) and serves the version the alias moves to, without a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from svc_helpers import API_KEY, serve

from emoflow.client import Client
from emoflow.config import load_params
from emoflow.release import registry as reg
from emoflow.tracking import registry as fetching

pytestmark = pytest.mark.service

RELOAD_S = 1.0


def test_moving_champion_changes_the_served_version_without_a_restart(
        tiny_fan: Path, tiny_params: Path, clips: dict[str, Path],
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
        ) -> None:  # fmt: skip
    # A short folder: BentoML's unix sockets live in the server's TMPDIR (108-byte limit).
    tmp_path = tmp_path_factory.mktemp("reload")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv(fetching.CACHE_ENV, str(tmp_path / "cache"))
    params = load_params(tiny_params)
    v1, v2 = (reg.register(tiny_fan, "fan", params, data_paths=(), repo=tmp_path)
              for _ in range(2))  # fmt: skip
    assert (v1.version, v2.version) == ("1", "2")
    c = fetching.client()
    c.set_registered_model_alias(v1.name, fetching.CHAMPION, v1.version)

    env = {"EMOFLOW_MODEL_URI": f"models:/{v1.name}@{fetching.CHAMPION}",
           "MLFLOW_TRACKING_URI": uri, "EMOFLOW_RELOAD_S": str(RELOAD_S),
           "EMOFLOW_API_KEY": API_KEY, fetching.CACHE_ENV: str(tmp_path / "server-cache"),
           "EMOFLOW_CPU_WORKERS": "1"}  # fmt: skip
    with serve(tmp_path / "serve", env) as s, Client(s.url, API_KEY) as client:
        pid = s.proc.pid
        model = client.info()["model"]
        assert (model["name"], model["version"], model["alias"]) == (v1.name, "1", "champion")
        assert client.predict(clips["face"]).model.version == "1"

        c.set_registered_model_alias(v1.name, fetching.CHAMPION, v2.version)
        deadline = time.monotonic() + 30 * RELOAD_S + 30  # a poll, a download, a model load
        while (version := client.info()["model"]["version"]) == "1":
            assert time.monotonic() < deadline, f"still v1:\n{s.log.read_text()[-3000:]}"
            time.sleep(0.5)
        assert version == "2"
        assert s.proc.poll() is None and s.proc.pid == pid  # the same server, never restarted
        result = client.predict(clips["face"])
        assert (result.model.version, result.model.alias) == ("2", "champion")
        assert client.info()["model"]["tag"] == "emoflow-fan:v2"
        assert "model reloaded: emoflow-fan:v1 → emoflow-fan:v2" in s.log.read_text()
