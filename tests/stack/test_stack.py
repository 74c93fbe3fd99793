"""The platform as containers: docker/compose.yaml's CPU profile brought up with Podman, one
retraining run triggered through the Prefect server's API, and the served model checked end to end.

Needs the images of docker/ci/build-images.sh (CI builds them first) and podman-compose; the stack
is brought down (volumes included) whatever happens. Marker ``stack``: `.ci/run` runs it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from emoflow.orchestration import local

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = [str(Path(sys.executable).parent / "podman-compose"), "-f", "docker/compose.yaml"]
# docker/compose.yaml's image settings; the environment may name other tags (a branch's build)
IMAGE_SETTINGS = {"EMOFLOW_IMAGE": "localhost/emoflow:cpu",
                  "MLFLOW_IMAGE": "localhost/emoflow-mlflow:3.17.2",
                  "PREFECT_IMAGE": "localhost/emoflow-prefect:3.9.1",
                  "POSTGRES_IMAGE": "localhost/emoflow-postgres:15",
                  "OBJECTSTORE_IMAGE": "localhost/emoflow-objectstore:4.48"}  # fmt: skip
IMAGE_TAGS = {k: os.environ.get(k, v) for k, v in IMAGE_SETTINGS.items()}
IMAGES = tuple(IMAGE_TAGS.values())
PORTS = {"MLFLOW_PORT": 15000, "PREFECT_PORT": 14200, "SERVICE_PORT": 13000, "S3_PORT": 18333}
API_KEY = "stack-test-key"
LIST_BUCKETS = """
import json, os
import boto3
s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
print(json.dumps({b: [o["Key"] for o in s3.list_objects_v2(Bucket=b).get("Contents", [])]
                  for b in (os.environ["MLFLOW_BUCKET"], os.environ["DVC_BUCKET"])}))
"""
FLOW_TIMEOUT_S = 1800


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "docker/ci/containers.conf"))
    return env


def _podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          env=_env(), check=False)  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout


def _compose(env_file: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*COMPOSE, "--env-file", str(env_file), "--profile", "cpu", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=_env(),
                          check=False)  # fmt: skip


def _http(url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 30
          ) -> tuple[int, bytes]:  # fmt: skip
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait(what: str, probe, timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(3)
    raise AssertionError(f"{what} not ready after {timeout_s:.0f} s (last: {last!r})")


def _logs(name: str) -> str:
    # The container's stderr too: SeaweedFS and Prefect log there.
    done = subprocess.run(["podman", "logs", "--tail", "60", f"emoflow_{name}_1"], text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
                          env=_env(), check=False)  # fmt: skip
    return done.stdout[-6000:]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: .ci/run installs it (docs/deploy.md)")
    missing = [i for i in IMAGES if subprocess.run(["podman", "image", "exists", i],
                                                   env=_env(), check=False).returncode]  # fmt: skip
    if missing:
        pytest.fail(f"images missing: {missing}; run `bash docker/ci/build-images.sh` first")
    env_file = tmp_path_factory.mktemp("stack") / ".env"
    example = (ROOT / "docker/.env.example").read_text()
    overrides = {
        **{k: str(v) for k, v in PORTS.items()},
        "EMOFLOW_API_KEY": API_KEY,
        "EMOFLOW_CAPTURE": "clips",  # the S3 path of the feedback loop (below)
        **IMAGE_TAGS,
        "PYTHON_IMAGE": "localhost/python:3.11",
        "DEBIAN_IMAGE": "localhost/debian:base",
    }
    env_file.write_text(example + "".join(f"{k}={v}\n" for k, v in overrides.items()))
    _compose(env_file, "down", "-v", "-t", "3")  # leftovers of an interrupted run
    up = _compose(env_file, "up", "-d", "--no-build")
    assert up.returncode == 0, up.stderr[-3000:]
    try:
        yield env_file
    finally:
        for name in ("worker", "service", "mlflow", "prefect", "objectstore"):
            print(f"--- {name}\n{_logs(name)}")
        _compose(env_file, "down", "-v", "-t", "5")


def _workspace_params() -> str:
    """The project's params at the sample size the DVC round-trip test uses (minutes on 2 cores)."""
    from integration.test_dvc_pipeline import small_params  # tests/ is on sys.path (conftest)

    params = small_params()
    params["split"].update(folds=0)
    return yaml.safe_dump(params, sort_keys=False)


def test_retrain_through_the_stack_registers_promotes_and_serves(stack: Path, tmp_path: Path
                                                                 ) -> None:  # fmt: skip
    prefect_port, mlflow_port = PORTS["PREFECT_PORT"], PORTS["MLFLOW_PORT"]
    _wait("MLflow", lambda: _http(f"http://127.0.0.1:{mlflow_port}/health")[0] == 200, 300)
    dep = _wait(
        "the retrain deployment",
        lambda: local.api_get(prefect_port, "deployments/name/retrain/retrain"),
        600,
    )
    assert dep["work_pool_name"] == "emoflow-stack"
    # A small sample in the worker's workspace, committed as the lab's params would be.
    params = tmp_path / "params.yaml"
    params.write_text(_workspace_params())
    _podman("cp", str(params), "emoflow_worker_1:/workspace/params.yaml")
    _podman("exec", "emoflow_worker_1", "git", "-C", "/workspace", "commit", "-q", "-am",
            "small sample for the stack test")  # fmt: skip

    run = local.api_request(prefect_port, f"deployments/{dep['id']}/create_flow_run",
                            {"parameters": {"models": ["fan"]}})  # fmt: skip
    deadline = time.monotonic() + FLOW_TIMEOUT_S
    while True:
        fr = local.api_get(prefect_port, f"flow_runs/{run['id']}")
        if fr["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        assert time.monotonic() < deadline, f"flow run still {fr['state_type']}"
        time.sleep(10)
    assert fr["state_type"] == "COMPLETED", f"{fr['state']}\n{_logs('worker')}"

    # The registry: a version of emoflow-fan in MLflow, @champion on it, rows in Postgres.
    status, body = _http(f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/registered-models/alias"
                         "?name=emoflow-fan&alias=champion")  # fmt: skip
    assert status == 200, body
    version = json.loads(body)["model_version"]["version"]
    rows = _podman("exec", "emoflow_postgres_1", "psql", "-U", "postgres", "-d", "mlflow", "-tAc",
                   "select count(*) from model_versions where name = 'emoflow-fan'")  # fmt: skip
    assert int(rows.strip()) >= 1
    # The artifacts went through MLflow's proxy into SeaweedFS's bucket, and the run's DVC push
    # into the remote's: listed over S3 with the stack's credentials (MLflow's container has
    # boto3 and them); without credentials the store refuses.
    keys = json.loads(_podman("exec", "emoflow_mlflow_1", "python", "-c", LIST_BUCKETS))
    assert keys["mlflow"] and keys["dvc"], keys
    status, _ = _http(f"http://127.0.0.1:{PORTS['S3_PORT']}/mlflow?list-type=2")
    assert status == 403  # anonymous

    # The service follows @champion: /info names that version; /predict answers on a clip.
    service = f"http://127.0.0.1:{PORTS['SERVICE_PORT']}"
    auth = {"Authorization": f"Bearer {API_KEY}"}
    info = _wait("the service on the champion", lambda: json.loads(
        _http(f"{service}/info", headers=auth)[1] or b"null"), 900)  # fmt: skip
    assert str(info["model"]["version"]) == str(version), info
    clip = tmp_path / "clip.mp4"
    trials = _podman("exec", "emoflow_worker_1", "sh", "-c",
                     "ls /workspace/data/interim/trials/*.mp4 | head -1").strip()  # fmt: skip
    _podman("cp", f"emoflow_worker_1:{trials}", str(clip))
    status, _ = _http(f"{service}/predict", b"", headers={})
    assert status == 401  # no key
    boundary = "emoflowstacktest"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"keep\"\r\n\r\ntrue\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; "
            f"filename=\"clip.mp4\"\r\nContent-Type: video/mp4\r\n\r\n").encode() \
        + clip.read_bytes() + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    status, answer = _http(
        f"{service}/predict",
        body,
        {**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=120,
    )
    assert status == 200, answer[:1000]
    result = json.loads(answer)
    assert result["label"] in result["probabilities"]
    assert str(result["model"]["version"]) == str(version)
    _feedback_loop_over_s3(service, auth, result, clip, stack, tmp_path)


def _feedback_loop_over_s3(service: str, auth: dict, result: dict, clip: Path, env_file: Path,
                           tmp_path: Path) -> None:  # fmt: skip
    """The service kept the clip it was asked to keep (``keep=true``) in the object store's
    capture bucket, takes a correction there, and ``emoflow review pull`` on the host reads both
    back over S3 into a labelling queue."""
    pid = result["prediction_id"]
    other = next(x for x in result["probabilities"] if x != result["label"])
    bucket = "capture"
    listed = f"""
import json, os
import boto3
s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
print(json.dumps([o["Key"] for o in s3.list_objects_v2(Bucket="{bucket}").get("Contents", [])]))
"""
    want = {f"service/records/{pid}.json", f"service/clips/{pid}.mp4"}
    _wait("the kept record and clip in S3", lambda: want <= set(json.loads(
        _podman("exec", "emoflow_mlflow_1", "python", "-c", listed))), 120)  # fmt: skip
    status, body = _http(f"{service}/feedback", json.dumps(
        {"prediction_id": pid, "label": other, "source": "stack-test"}).encode(),
        {**auth, "Content-Type": "application/json"})  # fmt: skip
    assert status == 200, body
    secrets = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
                   if "=" in line and not line.startswith("#"))  # fmt: skip
    queue = tmp_path / "queue"
    done = subprocess.run(
        [sys.executable, "-m", "emoflow.cli", "review", "pull",
         "--store", f"s3://{bucket}/service",
         "--endpoint", f"http://127.0.0.1:{PORTS['S3_PORT']}", "--queue", str(queue),
         "--reviewed", str(tmp_path / "reviewed"), "--params", str(ROOT / "params.yaml")],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "AWS_ACCESS_KEY_ID": secrets["S3_ACCESS_KEY"],
             "AWS_SECRET_ACCESS_KEY": secrets["S3_SECRET_KEY"], "AWS_DEFAULT_REGION": "us-east-1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with (queue / "trials.csv").open(newline="") as f:
        rows = {r["prediction_id"]: r for r in csv.DictReader(f)}
    assert rows[pid]["emotion"] == other and rows[pid]["feedback_label"] == other
    assert (queue / f"{rows[pid]['trial_id']}.mp4").read_bytes() == clip.read_bytes()
