"""The Prefect retrain flow end to end against a real Prefect server, in a fresh small repository.

One repository and one server for the module, in the order a lab lives it: a first run trains,
registers and promotes; a second run with nothing new skips every DVC stage and keeps the
champion; the deployment (cron schedule, one run at a time) runs two API-triggered runs one
after the other; corrupted marks files stop the flow at the gate before any training.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_dvc_pipeline import _run, make_repo

from emoflow.orchestration import local
from emoflow.orchestration.dvc_step import stop_tree

pytestmark = [pytest.mark.service, pytest.mark.slow]

FLOW_TIMEOUT_S = 1800
DVC_STEPS = ("validate", "preprocess", "train", "evaluate", "export")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, dict[str, str]]]:
    """``prefect server start`` on a free port with its own home; stopped by its PID."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = local.free_port()
    proc = local.start_server(home, port, home / "server.log")
    env = local.prefect_env(home, port)
    env.pop("MLFLOW_TRACKING_URI", None)  # runs go to the test repository's own mlflow.db
    env.update(PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="5")
    try:
        yield port, env
    finally:
        stop_tree(proc.pid)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("repo"), tmp_path_factory.mktemp("remote"),
                     ("src", "pipelines"))  # fmt: skip
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for model in ("fan", "deep_emotion"):
        params["train"][model]["epochs"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pipeline")
    return repo


def _flow(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "pipelines/retrain.py", *args]
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True,
                          timeout=FLOW_TIMEOUT_S, check=False)  # fmt: skip


def _report(repo: Path) -> dict:
    return json.loads((repo / "reports/retrain.json").read_text())


def _registry(repo: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")


def _versions(repo: Path, name: str) -> list[str]:
    return sorted(str(v.version) for v in _registry(repo).search_model_versions(f"name = '{name}'"))


def _artifact_keys(port: int, flow_run: str) -> set[str]:
    found = local.api_request(port, "artifacts/filter",
                              {"artifacts": {"flow_run_id": {"any_": [flow_run]}}})  # fmt: skip
    return {a["key"] for a in found if a.get("key")}


def _task_names(port: int, flow_run: str) -> set[str]:
    found = local.api_request(port, "task_runs/filter",
                              {"flow_runs": {"id": {"any_": [flow_run]}}})  # fmt: skip
    return {t["name"] for t in found}


def test_first_run_trains_registers_and_promotes(repo: Path, server: tuple) -> None:
    port, env = server
    done = _flow(repo, env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    run = _report(repo)
    for step in DVC_STEPS:
        assert run["steps"][step]["ran"], f"{step} ran nothing: {run['steps'][step]}"
    assert "train@fan" in run["steps"]["train"]["ran"]
    log = done.stdout + done.stderr
    assert "epoch 1/1" in log  # the per-epoch line of training reached the flow's log
    for model, name in (("fan", "emoflow-fan"), ("deep_emotion", "emoflow-deep-emotion")):
        info = run["models"][model]
        assert info["registered"]["name"] == name and not info["registered"]["existing"]
        assert info["promotion"]["outcome"] == "first"
        assert info["convert"].startswith("skipped: ")  # no GPU/TensorRT on this machine
        champion = _registry(repo).get_model_version_by_alias(name, "champion")
        assert str(champion.version) == info["registered"]["version"]
        assert {"model.pt", "model.onnx"} <= set(champion.tags["files"].split())
    assert _artifact_keys(port, run["flow_run"]) >= {"validation-gate", "retrain-report",
                                                     "retrain-metrics"}  # fmt: skip
    assert run["push"]["remote"] == "local"
    # dvc.lock tells the truth: the workspace is exactly what the lock says.
    assert "up to date" in _run(repo, "dvc", "status")


def test_second_run_skips_every_stage_and_keeps_the_champion(repo: Path, server: tuple
                                                              ) -> None:  # fmt: skip
    _, env = server
    before = _versions(repo, "emoflow-fan")
    done = _flow(repo, env, "--models", "fan")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    run = _report(repo)
    for step in DVC_STEPS:
        assert run["steps"][step]["ran"] == [], f"{step} reran: {run['steps'][step]}"
        assert run["steps"][step]["planned"]
    fan = run["models"]["fan"]
    assert fan["registered"]["existing"] is True
    assert fan["promotion"]["outcome"] == "unchanged"
    assert _versions(repo, "emoflow-fan") == before
    champion = _registry(repo).get_model_version_by_alias("emoflow-fan", "champion")
    assert str(champion.version) == fan["registered"]["version"]


def _wait_final(port: int, run_id: str, timeout_s: float = FLOW_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fr = local.api_get(port, f"flow_runs/{run_id}")
        if fr["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return fr
        time.sleep(2)
    raise AssertionError(f"flow run {run_id} not finished after {timeout_s} s: {fr['state']}")


def test_deployment_schedule_and_api_runs_one_at_a_time(repo: Path, server: tuple) -> None:
    port, env = server
    local.create_pool(env, repo)
    local.deploy(env, repo)
    dep = local.api_get(port, "deployments/name/retrain/retrain")
    assert [s["schedule"].get("cron") for s in dep["schedules"]] == ["0 3 * * 1"]
    assert dep["schedules"][0]["active"] is True
    assert dep["global_concurrency_limit"]["limit"] == 1
    assert dep["work_pool_name"] == local.POOL
    worker = local.start_worker(env, repo / "worker.log", repo)
    try:
        # Two clicks on "Run" (what the UI posts): the second waits for the first.
        body = {"parameters": {"models": ["fan"]}}
        runs = [local.api_request(port, f"deployments/{dep['id']}/create_flow_run", body)
                for _ in range(2)]  # fmt: skip
        final = [_wait_final(port, r["id"]) for r in runs]
    finally:
        stop_tree(worker.pid)
    log = (repo / "worker.log").read_text()
    for fr in final:
        assert fr["state_type"] == "COMPLETED", f"{fr['state']}\n{log[-4000:]}"
    first, second = sorted(final, key=lambda fr: fr["start_time"])
    assert second["start_time"] >= first["end_time"], "the two runs overlapped"
    assert _artifact_keys(port, second["id"]) >= {"retrain-report"}


def test_train_on_kubeflow_runs_a_pytorchjob_and_records_its_model(
        repo: Path, server: tuple, tmp_path: Path) -> None:  # fmt: skip
    """pipeline.train_on: kubeflow: the train step is a 2-node PyTorchJob (torchrun, c10d, gloo)
    submitted over the Kubernetes API (tests/kube_standin.py plays API server and operator,
    its pods run in the workspace), then ``dvc commit``; the rest of the flow as usual."""
    from test_kubeflow import start_standin, write_kubeconfig

    _, env = server
    params_file = repo / "params.yaml"
    before = params_file.read_text()
    params = yaml.safe_load(before)
    params["train"]["deep_emotion"]["dropout"] = 0.4  # train@deep_emotion is stale now
    params["pipeline"]["train_on"] = "kubeflow"
    # The flow runs in the repository, which is the pods' workspace volume too.
    params["pipeline"]["kubeflow"] = {"nodes": 2, "gpus_per_node": 0, "poll_s": 1,
                                      "workspace_path": str(repo)}  # fmt: skip
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    model = repo / "models/deep_emotion/model.pt"
    trained, versions = model.stat().st_mtime_ns, _versions(repo, "emoflow-deep-emotion")
    proc, port = start_standin(repo, tmp_path / "pods", mount=str(repo))
    try:
        kube_env = env | {"KUBECONFIG": str(write_kubeconfig(tmp_path / "kubeconfig", port))}
        done = _flow(repo, kube_env, "--models", "deep_emotion", "fan")
    finally:
        stop_tree(proc.pid, grace_s=5)
        params["pipeline"]["train_on"] = "local"  # the later tests train here again
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    train = _report(repo)["steps"]["train"]
    assert train["ran"] == ["train@deep_emotion"]
    job = train["jobs"]["deep_emotion"]
    assert job["job"].startswith("emoflow-train-deep-emotion-")
    assert job["condition"] == "PyTorchJobSucceeded"
    assert train["jobs"]["fan"] == {"ran": [], "job": None}  # up to date: nothing submitted
    pods = sorted((tmp_path / "pods").glob(f"emoflow.{job['job']}.worker-*.log"))
    assert len(pods) == 2, pods
    pod_logs = pods[0].read_text() + pods[1].read_text()
    assert "epoch 1/1" in pod_logs
    # one process group across the two pods: torchrun's c10d rendezvous joined them
    assert "process 1 of 2" in pod_logs and "process 2 of 2" in pod_logs, pod_logs[-3000:]
    assert "submitted: 2 node(s) × 1 process(es)" in log
    assert model.stat().st_mtime_ns != trained
    assert "up to date" in _run(repo, "dvc", "status")  # the lock holds the job's model
    new = set(_versions(repo, "emoflow-deep-emotion")) - set(versions)
    assert len(new) == 1, (versions, new)


def test_corrupted_marks_fail_at_validate_before_training(repo: Path, server: tuple) -> None:
    port, env = server
    model = repo / "models/fan/model.pt"
    trained = model.stat().st_mtime_ns
    versions = _versions(repo, "emoflow-fan")
    marks = sorted((repo / "data/marks").glob("*.txt"))[:3]  # 3 of 21 trials > 10 % allowed
    for path in marks:
        path.write_text("start end peak\n")
    # The sample stage made these files; committing them makes them the lab's new marks.
    _run(repo, "dvc", "commit", "-f", "sample")
    done = _flow(repo, env)
    assert done.returncode != 0
    log = done.stdout + done.stderr
    assert "validation gate failed" in log, log[-4000:]
    found = re.search(r"runs/flow-run/([0-9a-f-]{36})", log)
    assert found, log[-4000:]
    flow_run = local.api_get(port, f"flow_runs/{found.group(1)}")
    assert flow_run["state_type"] == "FAILED"
    tasks = _task_names(port, flow_run["id"])
    assert any(t.startswith("validate") for t in tasks)
    assert not any(t.startswith(("train", "register", "promote")) for t in tasks), tasks
    assert "validation-gate" in _artifact_keys(port, flow_run["id"])
    assert model.stat().st_mtime_ns == trained
    assert _versions(repo, "emoflow-fan") == versions
    assert os.path.exists(repo / "reports/validation/index.html")
