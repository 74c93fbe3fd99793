"""The flow's cluster training: the PyTorchJob it renders, and its submission over HTTP.

The API calls go to ``tests/kube_standin.py`` (a real HTTP process on 127.0.0.1 that serves the
PyTorchJob endpoints and runs each job's Worker command as local processes), since no
Kubernetes API server can run here; the client, the kubeconfig and the requests are the real
ones. The flow end to end with ``train_on: kubeflow`` is in test_pipeline_flow.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from emoflow.config import PipelineKubeflowParams, load_params
from emoflow.errors import InputError
from emoflow.orchestration import kubeflow
from emoflow.orchestration.dvc_step import stop_tree
from emoflow.orchestration.local import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token"


class StandIn:
    def __init__(self, port: int, workspace: Path, logs: Path) -> None:
        self.port, self.workspace, self.logs = port, workspace, logs

    def get(self, ns: str, name: str, token: str = TOKEN) -> tuple[int, dict]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs/{name}",
            headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


def write_kubeconfig(path: Path, port: int, token: str = TOKEN) -> Path:
    """A kubeconfig with one context: the stand-in's URL and a bearer token."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "clusters": [{"name": "standin", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "flow", "user": {"token": token}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "flow"}}],
    }))  # fmt: skip
    return path


def start_standin(workspace: Path, logs: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    """``tests/kube_standin.py`` on a free port, once it answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/kube_standin.py"), "--port",
                             str(port), "--token", TOKEN, "--mount", f"/workspace={workspace}",
                             "--logs", str(logs), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
        except urllib.error.HTTPError:
            return proc, port  # 401: it answers
        except OSError:
            time.sleep(0.2)
    stop_tree(proc.pid)
    raise AssertionError("the kube stand-in did not start")


@pytest.fixture()
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    proc, port = start_standin(workspace, tmp_path / "pods")
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", port)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    try:
        yield StandIn(port, workspace, tmp_path / "pods")
    finally:
        stop_tree(proc.pid, grace_s=5)


def _job(name: str, code: str, nodes: int = 1, labels: dict | None = None) -> dict:
    """A rendered job whose Worker runs ``python -c code`` instead of training."""
    cfg = PipelineKubeflowParams(nodes=nodes, gpus_per_node=0)
    job = kubeflow.render_job("fan", cfg, ["emoflow", "train"], name=name, labels=labels)
    container = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    container.update(command=[sys.executable, "-c", code], args=[])
    return job


# --------------------------------------------------------------------------- the manifest


def test_the_committed_pytorchjob_is_the_flows_rendering_of_params_yaml() -> None:
    cfg = load_params(ROOT / "params.yaml").pipeline.kubeflow
    job = kubeflow.render_job("fan", cfg, kubeflow.stage_command(ROOT / "dvc.yaml", "fan"))
    committed = yaml.safe_load((ROOT / "infra/training/pytorchjob.yaml").read_text())
    assert committed == job, ("regenerate it: .venv/bin/python -m emoflow.orchestration.kubeflow "
                              "--model fan > infra/training/pytorchjob.yaml (keep the header)")


def test_the_job_runs_the_train_stage_under_torchrun_on_n_nodes_by_m_gpus() -> None:
    cfg = PipelineKubeflowParams(nodes=3, gpus_per_node=8, image="reg.example/emoflow:gpu")
    cmd = kubeflow.stage_command(ROOT / "dvc.yaml", "deep_emotion")
    assert cmd[:4] == ["emoflow", "train", "--model", "deep_emotion"]
    job = kubeflow.render_job("deep_emotion", cfg, cmd, name=kubeflow.job_name("deep_emotion",
                                                                                "9F3A-77c2-e1"))
    assert job["metadata"]["name"] == "emoflow-train-deep-emotion-9f3a77c2"
    spec = job["spec"]
    assert spec["nprocPerNode"] == "8" and spec["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    assert spec["elasticPolicy"] == {"rdzvBackend": "c10d", "minReplicas": 3, "maxReplicas": 3,
                                     "maxRestarts": 3}  # fmt: skip
    pod = spec["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    (c,) = pod["containers"]
    assert [*c["command"], *c["args"]] == ["torchrun", "-m", "emoflow.cli", *cmd[1:]]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "8" and c["image"] == cfg.image
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "emoflow-workspace"
    cpu = kubeflow.render_job("fan", PipelineKubeflowParams(gpus_per_node=0), cmd)
    cpu_pod = cpu["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    assert cpu["spec"]["nprocPerNode"] == "1" and "tolerations" not in cpu_pod
    assert "nvidia.com/gpu" not in cpu_pod["containers"][0]["resources"]["limits"]


def test_a_train_stage_that_is_not_emoflow_train_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text("stages:\n  train:\n    foreach: [fan]\n    do:\n"
                                       "      cmd: python train.py ${item}\n")  # fmt: skip
    with pytest.raises(InputError, match="must start with 'emoflow train'"):
        kubeflow.stage_command(tmp_path / "dvc.yaml", "fan")
    with pytest.raises(InputError, match="not found"):
        kubeflow.stage_command(tmp_path / "missing.yaml", "fan")
    (tmp_path / "dvc.yaml").write_text("stages: {train: [\n")
    with pytest.raises(InputError, match="not valid YAML"):
        kubeflow.stage_command(tmp_path / "dvc.yaml", "fan")


def test_the_command_line_prints_the_job_and_names_a_bad_params_file(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "emoflow.orchestration.kubeflow", "--model",
                           "deep_emotion"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert yaml.safe_load(done.stdout)["metadata"]["name"] == "emoflow-train-deep-emotion"
    bad = tmp_path / "params.yaml"
    bad.write_text("pipeline: {kubeflow: {nodes: 0}}\n")
    cmd = [sys.executable, "-m", "emoflow.orchestration.kubeflow", "--model", "fan", "-p", str(bad)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert str(bad) in done.stderr and "nodes" in done.stderr


# --------------------------------------------------------------------------- the API


def test_a_job_is_submitted_followed_and_returned_when_it_succeeds(standin: StandIn) -> None:
    events: list[str] = []
    code = ("import os, pathlib, time; time.sleep(1); "
            "pathlib.Path('out-' + os.environ['PET_NNODES']).write_text('ok')")
    done = kubeflow.run_job(_job("ok-job", code, nodes=2), 60, 0.2, events.append)
    assert kubeflow.final_condition(done)["type"] == "Succeeded"
    assert (standin.workspace / "out-2:2").read_text() == "ok"  # two pods ran in the workspace
    assert "submitted: 2 node(s) × 1 process(es)" in events[0]
    kinds = [e.split(": ")[1] for e in events[1:]]
    assert kinds == ["Created", "Running", "Succeeded"], events


def test_a_failed_job_raises_with_the_operators_reason(standin: StandIn) -> None:
    failed = r"failed: Failed: PyTorchJobFailed.*exit codes \[3\]"
    with pytest.raises(kubeflow.JobFailed, match=failed) as err:
        kubeflow.run_job(_job("bad-job", "raise SystemExit(3)"), 60, 0.2, lambda _: None)
    assert err.value.transient is False


def test_a_job_past_its_time_is_deleted_and_its_pods_stopped(standin: StandIn) -> None:
    code = "import time, pathlib; pathlib.Path('started').touch(); time.sleep(120)"
    events: list[str] = []
    with pytest.raises(kubeflow.JobFailed, match="did not finish in 2 s; deleted it"):
        kubeflow.run_job(_job("slow-job", code), 2, 0.2, events.append)
    assert (standin.workspace / "started").exists()
    assert standin.get("emoflow", "slow-job")[0] == 404
    assert any("deleted" in e for e in events)


def test_a_resubmission_of_the_same_run_follows_the_job_and_another_run_is_refused(
        standin: StandIn) -> None:  # fmt: skip
    code = "import time; time.sleep(1)"
    job = _job("same-name", code, labels={"emoflow.flow-run": "run-1"})
    kubeflow.run_job(job, 60, 0.2, lambda _: None)
    events: list[str] = []
    again = kubeflow.run_job(job, 60, 0.2, events.append)  # e.g. a retried task
    assert "already submitted by this flow run" in events[0]
    assert kubeflow.final_condition(again)["type"] == "Succeeded"
    other = _job("same-name", code, labels={"emoflow.flow-run": "run-2"})
    with pytest.raises(kubeflow.JobFailed, match=r"belongs to another run.*HTTP 409"):
        kubeflow.run_job(other, 60, 0.2, lambda _: None)


def test_api_errors_say_what_is_wrong_and_whether_a_retry_may_help(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    job = _job("any-job", "pass")
    proc, port = start_standin(tmp_path, tmp_path / "pods", "--no-crd")
    try:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", port)))
        with pytest.raises(kubeflow.JobFailed, match=r"Training Operator installed.*HTTP 404"):
            kubeflow.run_job(job, 10, 0.2, lambda _: None)
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", port, "wrong")))
        with pytest.raises(kubeflow.JobFailed, match="HTTP 401") as err:
            kubeflow.run_job(job, 10, 0.2, lambda _: None)
        assert err.value.transient is False
    finally:
        stop_tree(proc.pid, grace_s=5)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(kubeflow.JobFailed, match=r"no Kubernetes credentials.*KUBECONFIG"):
        kubeflow.run_job(job, 10, 0.2, lambda _: None)
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", port)))
    # Nothing listens there now: an outage a retry may outlast.
    with pytest.raises(kubeflow.JobFailed, match="submitting") as err:
        kubeflow.run_job(job, 10, 0.2, lambda _: None)
    assert err.value.transient is True


def test_the_cluster_deployment_passes_train_on_kubeflow_as_the_flow_takes_it() -> None:
    from prefect.flows import load_flow_from_entrypoint

    deployment = yaml.safe_load((ROOT / "infra/prefect/prefect.yaml").read_text())
    (dep,) = deployment["deployments"]
    flow = load_flow_from_entrypoint(str(ROOT / dep["entrypoint"]))
    assert flow.validate_parameters(dep["parameters"])["train_on"] == "kubeflow"
    with pytest.raises(Exception, match="train_on"):
        flow.validate_parameters({"train_on": "slurm"})


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_flow_stopped_while_it_waits_deletes_its_job(standin: StandIn, tmp_path: Path,
                                                        sig: str) -> None:  # fmt: skip
    """Ctrl-C, or the SIGTERM a Prefect worker sends to cancel a run (Prefect turns it into an
    exception in the main thread; so does this script): the job goes, its pods stop."""
    job = _job("stopped-job", "import time, pathlib; pathlib.Path('up').touch(); time.sleep(300)")
    script = tmp_path / "wait.py"
    script.write_text(
        "import json, signal, sys\n"
        "from emoflow.orchestration import kubeflow\n"
        "def stop(*_):\n    raise SystemExit(143)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"kubeflow.run_job(json.loads({json.dumps(json.dumps(job))}), 300, 0.2,\n"
        "                 lambda e: print(e, flush=True))\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=os.environ | {"PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (standin.workspace / "up").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the job never started"
            time.sleep(0.2)
        proc.send_signal(getattr(signal, sig))
        out, _ = proc.communicate(timeout=60)
    finally:
        stop_tree(proc.pid, grace_s=2)
    assert proc.returncode != 0
    assert "PyTorchJob emoflow/stopped-job deleted" in out, out
    assert standin.get("emoflow", "stopped-job")[0] == 404
