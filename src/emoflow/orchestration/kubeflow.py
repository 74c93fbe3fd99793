"""The retrain flow's train step on a cluster: a Kubeflow Training Operator ``PyTorchJob``.

With ``pipeline.train_on: kubeflow`` the flow does not train in its own pod. For each model whose
``train@<model>`` stage DVC finds stale, it renders a PyTorchJob that runs that stage's own
command (read from ``dvc.yaml``) under torchrun on N nodes × M GPUs, submits it through the
Kubernetes API with the flow pod's service account, follows its conditions until ``Succeeded``
or ``Failed``, and then ``dvc commit``s the stage: the training pods wrote ``models/<model>/``
into the same workspace volume the flow runs in, so ``dvc.lock`` ends up holding exactly the
model the job trained and the later steps (evaluate, export, register, promote) run as usual.

``infra/training/pytorchjob.yaml`` is this module's rendering of the default params
(``python -m emoflow.orchestration.kubeflow --model fan``); a test keeps the two equal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from emoflow.config import PipelineKubeflowParams
from emoflow.errors import EmoflowError, InputError

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
CONTAINER = "pytorch"  # the operator finds the training container by this name
_FINAL = ("Succeeded", "Failed")
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
MAX_READ_FAILURES = 20  # status reads in a row that may fail (API server restarts) before giving up


class JobFailed(EmoflowError):
    """The PyTorchJob ended Failed, ran out of time or could not be submitted."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


# --------------------------------------------------------------------------- the manifest


def stage_command(dvc_yaml: Path, model: str) -> list[str]:
    """``train@<model>``'s command from ``dvc_yaml`` as an argument list (``emoflow train …``)."""
    try:
        doc = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}
        cmd = doc["stages"]["train"]["do"]["cmd"]
    except FileNotFoundError as exc:
        raise InputError(dvc_yaml, "not found: the flow runs in the repository root") from exc
    except yaml.YAMLError as exc:
        raise InputError(dvc_yaml, f"not valid YAML: {exc}") from exc
    except (KeyError, TypeError) as exc:
        raise InputError(dvc_yaml, "has no foreach stage train with a do: cmd") from exc
    args = shlex.split(str(cmd).replace("${item}", model))
    if args[:2] != ["emoflow", "train"]:
        raise InputError(dvc_yaml, f"stage train's cmd must start with 'emoflow train': {cmd!r}")
    return args


def job_name(model: str, run_id: str | None = None) -> str:
    """``emoflow-train-<model>[-<run>]``: a DNS-1123 name (``deep_emotion`` → ``deep-emotion``)."""
    suffix = re.sub(r"[^a-z0-9]", "", (run_id or "").lower())[:8]
    return "-".join(p for p in ("emoflow-train", model.replace("_", "-"), suffix) if p)


def render_job(model: str, cfg: PipelineKubeflowParams, command: Sequence[str],
               name: str | None = None, labels: dict[str, str] | None = None
               ) -> dict[str, Any]:  # fmt: skip
    """The PyTorchJob that runs ``command`` (the train stage's ``emoflow train …``) under torchrun.

    The operator starts ``cfg.nodes`` Worker pods and sets torchrun's ``PET_NNODES``,
    ``PET_NPROC_PER_NODE`` and the c10d rendezvous (``PET_RDZV_*``); each pod's torchrun starts
    one process per GPU and emoflow's trainer joins the process group it prepared.
    """
    gpus = cfg.gpus_per_node
    resources: dict[str, Any] = {"requests": {"cpu": cfg.cpu, "memory": cfg.memory},
                                 "limits": {"memory": cfg.memory}}  # fmt: skip
    pod: dict[str, Any] = {"securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                               "fsGroup": 10001}}  # fmt: skip
    if gpus:
        resources["limits"]["nvidia.com/gpu"] = str(gpus)  # a quantity: a string in the API
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists",
                               "effect": "NoSchedule"}]  # fmt: skip
    container: dict[str, Any] = {
        "name": CONTAINER, "image": cfg.image, "workingDir": cfg.workspace_path,
        "command": ["torchrun"], "args": ["-m", "emoflow.cli", *command[1:]],
        "env": [{"name": "NCCL_DEBUG", "value": "WARN"}],
        "resources": resources,
        "volumeMounts": [{"name": "workspace", "mountPath": cfg.workspace_path},
                         {"name": "dshm", "mountPath": "/dev/shm"}],
    }  # fmt: skip
    if cfg.config_map:
        container["envFrom"] = [{"configMapRef": {"name": cfg.config_map}}]
    pod["containers"] = [container]
    pod["volumes"] = [
        {"name": "workspace", "persistentVolumeClaim": {"claimName": cfg.workspace_claim}},
        # DataLoader workers pass batches through shared memory; the default 64 MiB is too small
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": cfg.shm}},
    ]
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
        "metadata": {"name": name or job_name(model), "namespace": cfg.namespace,
                     "labels": {"app.kubernetes.io/name": "emoflow-train", "emoflow.model": model,
                                **(labels or {})}},
        "spec": {
            # a failed pod restarts the job; rank 0's checkpoints make it resume, not start over
            "runPolicy": {"backoffLimit": cfg.backoff_limit, "cleanPodPolicy": "Running"},
            "elasticPolicy": {"rdzvBackend": "c10d", "minReplicas": cfg.nodes,
                              "maxReplicas": cfg.nodes, "maxRestarts": cfg.backoff_limit},
            "nprocPerNode": str(gpus or 1),
            "pytorchReplicaSpecs": {"Worker": {"replicas": cfg.nodes, "restartPolicy": "OnFailure",
                                               "template": {"spec": pod}}},
        },
    }  # fmt: skip


# --------------------------------------------------------------------------- status


def conditions(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's conditions that hold now (``status: "True"``), oldest first."""
    found = (job.get("status") or {}).get("conditions") or []
    return [c for c in found if str(c.get("status")) == "True"]


def final_condition(job: dict[str, Any]) -> dict[str, Any] | None:
    """``Succeeded`` or ``Failed`` once the operator has decided, else None."""
    for cond in reversed(conditions(job)):
        if cond.get("type") in _FINAL:
            return cond
    return None


def _describe(cond: dict[str, Any]) -> str:
    words = [str(cond.get("type")), str(cond.get("reason") or ""), str(cond.get("message") or "")]
    return ": ".join(w for w in words if w)


# --------------------------------------------------------------------------- the API


def _api_status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _transient(exc: BaseException) -> bool:
    from emoflow.orchestration.retry import is_transient

    status = _api_status(exc)
    return status in _TRANSIENT_STATUS if status else is_transient(exc)


async def _client() -> Any:
    """An API client: the pod's service account in a cluster, else ``$KUBECONFIG``/~/.kube."""
    try:
        from kubernetes_asyncio import client, config
    except ImportError as exc:
        raise JobFailed("train_on: kubeflow needs the Kubernetes client: "
                        "pip install 'emoflow[stack]'") from exc  # fmt: skip
    conf = client.Configuration()  # its own, not the process-wide default: read it each time
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=conf)
        else:
            # $KUBECONFIG read now: the client reads it once, at import
            path = os.environ.get("KUBECONFIG")
            await config.load_kube_config(path, client_configuration=conf, persist_config=False)
    except (config.ConfigException, OSError) as exc:
        raise JobFailed("no Kubernetes credentials: the flow uses its pod's service account in "
                        f"a cluster, else $KUBECONFIG or ~/.kube/config ({exc})") from exc
    return client.ApiClient(configuration=conf)


async def _run(job: dict[str, Any], timeout_s: float, poll_s: float,
               on_event: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    from kubernetes_asyncio.client import CustomObjectsApi

    ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
    where = f"{KIND} {ns}/{name}"
    async with await _client() as api_client:
        api = CustomObjectsApi(api_client)
        await _submit(api, job, where, on_event)
        deadline = time.monotonic() + timeout_s
        seen: set[tuple[str, str]] = set()
        failures = 0
        try:
            while True:
                try:
                    current = await api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL,
                                                                     name)  # fmt: skip
                    failures = 0
                except Exception as exc:
                    failures += 1
                    if not _transient(exc) or failures >= MAX_READ_FAILURES:
                        raise JobFailed(f"reading {where} failed: {_reason(exc)}") from exc
                    on_event(f"reading {where} failed ({_reason(exc)}); trying again")
                    current = {}
                for cond in conditions(current):
                    key = (str(cond.get("type")), str(cond.get("lastTransitionTime")))
                    if key not in seen:
                        seen.add(key)
                        on_event(f"{where}: {_describe(cond)}")
                final = final_condition(current)
                if final is not None:
                    if final.get("type") == "Failed":
                        raise JobFailed(f"{where} failed: {_describe(final)}")
                    return current
                if time.monotonic() >= deadline:
                    await _delete(api, ns, name, on_event)
                    raise JobFailed(f"{where} did not finish in {timeout_s:.0f} s; deleted it")
                await asyncio.sleep(poll_s)
        except asyncio.CancelledError:  # the flow run was cancelled: free the GPUs
            await _delete(api, ns, name, on_event)
            raise


async def _submit(api: Any, job: dict[str, Any], where: str,
                  on_event: Callable[[str], None]) -> None:  # fmt: skip
    ns = job["metadata"]["namespace"]
    try:
        await api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, job)
    except Exception as exc:
        status = _api_status(exc)
        if status == 409 and await _same_job(api, job):
            # A retry of a submission whose answer was lost: follow the job already there.
            on_event(f"{where} was already submitted by this flow run: following it")
            return
        hint = {404: " (is the Kubeflow Training Operator installed?)",
                409: " (a job of that name exists and belongs to another run)"}.get(status or 0, "")
        raise JobFailed(f"submitting {where} failed{hint}: {_reason(exc)}",
                        _transient(exc)) from exc  # fmt: skip
    workers = job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"]
    on_event(f"{where} submitted: {workers} node(s) × {job['spec']['nprocPerNode']} process(es)")


async def _same_job(api: Any, job: dict[str, Any]) -> bool:
    meta = job["metadata"]
    try:
        found = await api.get_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL,
                                                       meta["name"])  # fmt: skip
    except Exception:
        return False
    key = "emoflow.flow-run"
    theirs = ((found.get("metadata") or {}).get("labels") or {}).get(key)
    return theirs is not None and theirs == meta.get("labels", {}).get(key)


async def _delete(api: Any, ns: str, name: str, on_event: Callable[[str], None]) -> None:
    with contextlib.suppress(Exception):
        await api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name,
                                                  propagation_policy="Background")  # fmt: skip
        on_event(f"{KIND} {ns}/{name} deleted")


def _reason(exc: BaseException) -> str:
    status = _api_status(exc)
    if status is not None:
        return f"HTTP {status} {getattr(exc, 'reason', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def run_job(job: dict[str, Any], timeout_s: float, poll_s: float,
            on_event: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Submit ``job``, follow its conditions (each new one to ``on_event``) and return the
    finished job; :class:`JobFailed` when it fails, cannot be submitted or runs past
    ``timeout_s`` (then it is deleted, so its pods free their GPUs)."""
    return asyncio.run(_run(job, timeout_s, poll_s, on_event))


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """Print the PyTorchJob the flow would submit for ``--model`` (params.yaml's settings)."""
    from emoflow.config import load_params

    parser = argparse.ArgumentParser(prog="python -m emoflow.orchestration.kubeflow",
                                     description=main.__doc__)  # fmt: skip
    parser.add_argument("--model", choices=("fan", "deep_emotion"), required=True)
    parser.add_argument("-p", "--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    parser.add_argument("--name", default=None, help="job name [emoflow-train-<model>]")
    args = parser.parse_args(argv)
    try:
        cfg = load_params(args.params).pipeline.kubeflow
        job = render_job(args.model, cfg, stage_command(args.dvc_yaml, args.model), args.name)
    except EmoflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump(job, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
