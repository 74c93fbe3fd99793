"""The flow's cluster training: the PyTorchJob it renders, and its submission over HTTP.

The API calls go to ``tests/kube_standin.py`` (a real HTTP process on 127.0.0.1 that serves the
PyTorchJob endpoints and runs each job's Worker command as local processes), since no
Kubernetes API server can run here; the client, the kubeconfig and the requests are the real
ones. The flow end to end with ``train_on: kubeflow`` is in test_pipeline_flow.py.
"""

from __future__ import annotations

import json
import os
import re
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
# Bounds that only end a hang (the fast suite must pass on a machine at load 8): nothing here
# waits for a time to pass, only for an event (an answer, a file, an exit).
HANG_S = 300
HTTP_S = 60


class StandIn:
    def __init__(self, port: int, workspace: Path, logs: Path) -> None:
        self.port, self.workspace, self.logs = port, workspace, logs

    def get(self, ns: str, name: str, token: str = TOKEN) -> tuple[int, dict]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs/{name}",
            headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=HTTP_S) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


    def create(self, job: dict) -> int:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/apis/kubeflow.org/v1/namespaces/"
            f"{job['metadata']['namespace']}/pytorchjobs", data=json.dumps(job).encode(),
            method="POST", headers={"Authorization": f"Bearer {TOKEN}",
                                    "Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=HTTP_S) as r:
            return r.status


def write_kubeconfig(path: Path, port: int, token: str = TOKEN) -> Path:
    """A kubeconfig with one context: the stand-in's URL and a bearer token."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "clusters": [{"name": "standin", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "flow", "user": {"token": token}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "flow"}}],
    }))  # fmt: skip
    return path


def start_standin(workspace: Path, logs: Path, *extra: str, mount: str = "/workspace"
                  ) -> tuple[subprocess.Popen, int]:  # fmt: skip
    """``tests/kube_standin.py`` on a free port, once it answers; the pods' volume at ``mount``
    is the folder ``workspace``."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/kube_standin.py"), "--port",
                             str(port), "--token", TOKEN, "--mount", f"{mount}={workspace}",
                             "--logs", str(logs), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    # Wait for it to answer (or to die): how long Python takes to start depends on the load.
    # The deadline only ends a hang.
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=HTTP_S)
        except urllib.error.HTTPError:
            return proc, port  # 401: it answers
        except OSError:
            time.sleep(0.2)
    stop_tree(proc.pid)
    raise AssertionError(f"the kube stand-in did not start (exit code {proc.poll()})")


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
    pipeline = load_params(ROOT / "params.yaml").pipeline
    job = kubeflow.render_job("fan", pipeline.kubeflow,
                              kubeflow.stage_command(ROOT / "dvc.yaml", "fan"),
                              deadline_s=pipeline.timeout_h.train * 3600)  # fmt: skip
    assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] == 48 * 3600
    committed = (ROOT / "infra/training/pytorchjob.yaml").read_text()
    assert yaml.safe_load(committed) == job
    cmd = [sys.executable, "-m", "emoflow.orchestration.kubeflow", "--model", "fan"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    assert committed == done.stdout, ("regenerate it: .venv/bin/python -m "
                                      "emoflow.orchestration.kubeflow --model fan > "
                                      "infra/training/pytorchjob.yaml")  # fmt: skip


def test_the_job_runs_the_train_stage_under_torchrun_on_n_nodes_by_m_gpus() -> None:
    cfg = PipelineKubeflowParams(nodes=3, gpus_per_node=8, image="reg.example/emoflow:gpu")
    cmd = kubeflow.stage_command(ROOT / "dvc.yaml", "deep_emotion")
    assert cmd[:4] == ["emoflow", "train", "--model", "deep_emotion"]
    # uuid7 ids of runs a scheduler made together share their leading digits
    names = {kubeflow.job_name("deep_emotion", f"019ac3f1-7e2a-7{n:03x}-8000-00000000000{n}")
             for n in range(3)}  # fmt: skip
    assert len(names) == 3
    assert all(re.fullmatch(r"emoflow-train-deep-emotion-[0-9a-f]{10}", n) for n in names)
    job = kubeflow.render_job("deep_emotion", cfg, cmd, name=min(names))
    spec = job["spec"]
    assert spec["nprocPerNode"] == "8" and spec["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    assert spec["elasticPolicy"] == {"rdzvBackend": "c10d", "minReplicas": 3, "maxReplicas": 3,
                                     "maxRestarts": 3}  # fmt: skip
    pod = spec["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    (c,) = pod["containers"]
    assert [*c["command"], *c["args"]] == ["torchrun", "--nproc-per-node=8", "-m", "emoflow.cli",
                                           *cmd[1:]]  # fmt: skip
    assert pod == job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    template = spec["pytorchReplicaSpecs"]["Worker"]["template"]
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "emoflow-train"
    assert spec["runPolicy"]["ttlSecondsAfterFinished"] == int(cfg.ttl_h * 3600)
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


# Each pod writes its output, then waits for every pod's (as the trainer's last barrier makes
# every rank wait for rank 0's model): an elastic job is Succeeded when its first pod is, and
# cleanPodPolicy Running then stops the others, so without the barrier a pod whose Python had
# not started yet on a busy machine would never write.
BARRIER = """import os, pathlib, time
tmp = pathlib.Path(f'.out-{os.getpid()}')
tmp.write_text(os.environ['PET_NNODES'])
tmp.rename(f'out-{os.getpid()}')  # whole, as another pod may read it at once
while len(list(pathlib.Path().glob('out-*'))) < int(os.environ['PET_NNODES'].split(':')[-1]):
    time.sleep(0.05)
"""


def test_a_job_is_submitted_followed_and_returned_when_it_succeeds(standin: StandIn) -> None:
    events: list[str] = []
    done = kubeflow.run_job(_job("ok-job", BARRIER, nodes=2), HANG_S, 0.2, events.append)
    assert kubeflow.final_condition(done)["type"] == "Succeeded"
    outs = sorted(standin.workspace.glob("out-*"))  # two pods ran in the workspace
    assert len(outs) == 2 and {o.read_text() for o in outs} == {"2:2"}
    assert "submitted: 2 node(s) × 1 process(es)" in events[0]
    kinds = [e.split(": ")[1] for e in events[1:]]
    # The follower reports each condition it sees, in order; a quick job can pass Created and
    # Running between two polls, so those may be missing, never out of order or repeated.
    assert kinds[-1] == "Succeeded", events
    assert kinds == [k for k in ("Created", "Running", "Succeeded") if k in kinds], events


def test_a_failed_job_raises_with_the_operators_reason(standin: StandIn) -> None:
    failed = r"failed: Failed: PyTorchJobFailed.*exit codes \[3\]"
    with pytest.raises(kubeflow.JobFailed, match=failed) as err:
        kubeflow.run_job(_job("bad-job", "raise SystemExit(3)"), 60, 0.2, lambda _: None)
    assert err.value.transient is False


def test_a_job_past_its_time_is_deleted_and_its_pods_stopped(standin: StandIn) -> None:
    code = "import time, pathlib; pathlib.Path('started').touch(); time.sleep(300)"
    job = _job("slow-job", code, labels={"emoflow.flow-run": "run-1"})
    # Submitted first and followed once its pod runs (as a retry of the same run follows it):
    # the 2 s then pass with the pod surely running, however long it took to start.
    assert standin.create(job) == 201
    _wait_for(standin.workspace / "started")
    events: list[str] = []
    with pytest.raises(kubeflow.JobFailed, match="did not finish in 2 s"):
        kubeflow.run_job(job, 2, 0.2, events.append)
    assert standin.get("emoflow", "slow-job")[0] == 404
    assert any("deleted" in e for e in events)


def _wait_for(path: Path, proc: subprocess.Popen | None = None) -> None:
    """Until ``path`` exists (``proc``, when given, must stay alive meanwhile)."""
    deadline = time.monotonic() + HANG_S
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        assert proc is None or proc.poll() is None, f"exited {proc.returncode} before {path.name}"
        time.sleep(0.2)


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


def test_a_flow_retried_after_its_job_failed_submits_it_again(standin: StandIn) -> None:
    labels = {"emoflow.flow-run": "run-1"}
    with pytest.raises(kubeflow.JobFailed, match="PyTorchJobFailed"):
        kubeflow.run_job(_job("retried", "raise SystemExit(1)", labels=labels), 60, 0.2,
                         lambda _: None)  # fmt: skip
    events: list[str] = []
    done = kubeflow.run_job(_job("retried", "pass", labels=labels), 60, 0.2, events.append)
    assert "had failed" in events[0] and "submitting it again" in events[0]
    assert "submitted" in events[1]
    assert kubeflow.final_condition(done)["type"] == "Succeeded"


def test_another_runs_unfinished_job_of_the_model_is_not_joined(standin: StandIn) -> None:
    other = _job("other-run", "import time; time.sleep(120)", labels={"emoflow.flow-run": "a"})
    assert standin.create(other) == 201
    mine = _job("this-run", "pass", labels={"emoflow.flow-run": "b"})
    with pytest.raises(kubeflow.JobFailed, match="other-run still trains this model") as err:
        kubeflow.run_job(mine, 60, 0.2, lambda _: None)
    assert not err.value.transient
    assert standin.get("emoflow", "this-run")[0] == 404  # nothing was submitted
    assert standin.get("emoflow", "other-run")[0] == 200  # nor the other one touched


def test_pods_that_never_start_fail_the_job_after_the_start_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    proc, port = start_standin(tmp_path, tmp_path / "pods", "--pending")
    try:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", port)))
        events: list[str] = []
        with pytest.raises(kubeflow.JobFailed, match=r"did not start in 1 s.*describe pods"):
            kubeflow.run_job(_job("pending", "pass"), 60, 0.2, events.append, start_timeout_s=1)
        assert StandIn(port, tmp_path, tmp_path).get("emoflow", "pending")[0] == 404
        assert events[-1].endswith("deleted")
    finally:
        stop_tree(proc.pid, grace_s=5)


def test_reads_that_fail_for_a_while_are_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    proc, port = start_standin(tmp_path, tmp_path / "pods", "--failing-reads", "3")
    try:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", port)))
        events: list[str] = []
        done = kubeflow.run_job(_job("flaky", "import time; time.sleep(1)"), 60, 0.1,
                                events.append)  # fmt: skip
        assert kubeflow.final_condition(done)["type"] == "Succeeded"
        assert sum("HTTP 503" in e and "trying again" in e for e in events) == 3
    finally:
        stop_tree(proc.pid, grace_s=5)


def test_the_flow_trains_on_the_cluster_only_in_the_pods_workspace(tmp_path: Path) -> None:
    cfg = PipelineKubeflowParams(workspace_path=str(tmp_path))
    kubeflow.check_workspace(tmp_path, cfg)
    with pytest.raises(InputError, match=r"workspace_path is /workspace but the flow runs in"):
        kubeflow.check_workspace(tmp_path, PipelineKubeflowParams())
    model = tmp_path / "models/fan/model.pt"

    def submitted_against(sha: str | None) -> dict:  # the job as the API returns it
        return kubeflow.render_job("fan", cfg, ["emoflow", "train"], name="j",
                                   annotations={kubeflow.BEFORE: sha or ""})  # fmt: skip

    with pytest.raises(kubeflow.JobFailed, match=r"model\.pt is missing"):
        kubeflow.check_trained(tmp_path, "fan", submitted_against(None))
    model.parent.mkdir(parents=True)
    model.write_bytes(b"old")
    old = submitted_against(kubeflow.model_hash(tmp_path, "fan"))
    with pytest.raises(kubeflow.JobFailed, match="is the one from before the job"):
        kubeflow.check_trained(tmp_path, "fan", old)
    model.write_bytes(b"new")
    kubeflow.check_trained(tmp_path, "fan", old)
    # a retry that adopts the finished job compares with the job's own annotation, not with
    # the model.pt the job already wrote when the retry began
    kubeflow.check_trained(tmp_path, "fan", submitted_against(None))


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
        # a shell's background job starts with SIGINT ignored (CI); a terminal's Ctrl-C is not
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        f"kubeflow.run_job(json.loads({json.dumps(json.dumps(job))}), 300, 0.2,\n"
        "                 lambda e: print(e, flush=True))\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=os.environ | {"PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        _wait_for(standin.workspace / "up", proc)
        proc.send_signal(getattr(signal, sig))
        out, _ = proc.communicate(timeout=HANG_S)
    finally:
        stop_tree(proc.pid, grace_s=2)
    assert proc.returncode != 0
    assert "PyTorchJob emoflow/stopped-job deleted" in out, out
    assert standin.get("emoflow", "stopped-job")[0] == 404
