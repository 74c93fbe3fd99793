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
import hashlib
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from emoflow.config import PipelineKubeflowParams
from emoflow.errors import EmoflowError, InputError
from emoflow.layout import Layout
from emoflow.models import registry

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
CONTAINER = "pytorch"  # the operator finds the training container by this name
TRAIN_APP = "emoflow-train"  # the jobs' and their pods' app.kubernetes.io/name
RUN_LABEL = "emoflow.flow-run"
_FINAL = ("Succeeded", "Failed")
MAX_READ_FAILURES = 20  # status reads in a row that may fail (API server restarts) before giving up


class JobFailed(EmoflowError):
    """The PyTorchJob ended Failed, ran out of time or could not be submitted."""

    def __init__(self, message: str, transient: bool = False, ended: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.ended = ended  # the operator ended the job: it stays, with its pods' logs


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
    """``emoflow-train-<model>[-<hash>]``, a DNS-1123 name (``deep_emotion`` → ``deep-emotion``).

    The suffix hashes the whole flow-run id: Prefect's ids are uuid7, whose leading digits are a
    timestamp shared by the runs a scheduler makes together."""
    suffix = hashlib.sha256(run_id.encode()).hexdigest()[:10] if run_id else ""
    return "-".join(p for p in ("emoflow-train", model.replace("_", "-"), suffix) if p)


def render_job(model: str, cfg: PipelineKubeflowParams, command: Sequence[str],
               name: str | None = None, labels: dict[str, str] | None = None,
               deadline_s: float | None = None, annotations: dict[str, str] | None = None
               ) -> dict[str, Any]:  # fmt: skip
    """The PyTorchJob that runs ``command`` (the train stage's ``emoflow train …``) under torchrun.

    The operator starts ``cfg.nodes`` Worker pods and sets torchrun's ``PET_NNODES`` and the c10d
    rendezvous (``PET_RDZV_*``); each pod's torchrun starts one process per GPU
    (``--nproc-per-node`` is passed rather than left to the operator's ``PET_NPROC_PER_NODE``,
    which older operators set only for jobs with a Master) and emoflow's trainer joins the
    process group it prepared. ``deadline_s`` becomes the job's ``activeDeadlineSeconds``: the
    cluster ends it then even when no flow follows it any more.
    """
    gpus = cfg.gpus_per_node
    procs = gpus or 1
    job_labels = {"app.kubernetes.io/name": TRAIN_APP, "emoflow.model": model, **(labels or {})}
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
        "command": ["torchrun"],
        "args": [f"--nproc-per-node={procs}", "-m", "emoflow.cli", *command[1:]],
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
                     "labels": job_labels, **({"annotations": annotations} if annotations else {})},
        "spec": {
            # backoffLimit: pods restarted after a failure resume from rank 0's checkpoints.
            # cleanPodPolicy Running: pods still running when the job ends are stopped (a Failed
            # job's restarting pods would train on). An elastic job is Succeeded when its first
            # pod is; none is stopped early, as the trainer's last barrier makes every rank wait
            # for rank 0's model. The job and its ended pods' logs stay ttl_h hours.
            "runPolicy": {"backoffLimit": cfg.backoff_limit, "cleanPodPolicy": "Running",
                          "ttlSecondsAfterFinished": int(cfg.ttl_h * 3600),
                          **({"activeDeadlineSeconds": int(deadline_s)} if deadline_s else {})},
            "elasticPolicy": {"rdzvBackend": "c10d", "minReplicas": cfg.nodes,
                              "maxReplicas": cfg.nodes, "maxRestarts": cfg.backoff_limit},
            "nprocPerNode": str(procs),
            "pytorchReplicaSpecs": {"Worker": {
                "replicas": cfg.nodes, "restartPolicy": "OnFailure",
                # the pods' label lets them reach each other through the namespace's
                # default-deny NetworkPolicy (infra/base/networkpolicy.yaml)
                "template": {"metadata": {"labels": {"app.kubernetes.io/name": TRAIN_APP,
                                                     "emoflow.model": model}},
                             "spec": pod}}},
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


def _started(job: dict[str, Any]) -> bool:
    return any(c.get("type") in ("Running", "Restarting", *_FINAL) for c in conditions(job))


def _describe(cond: dict[str, Any]) -> str:
    words = [str(cond.get("type")), str(cond.get("reason") or ""), str(cond.get("message") or "")]
    return ": ".join(w for w in words if w)


# --------------------------------------------------------------------------- the API


def _api_status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _transient(exc: BaseException) -> bool:
    """An API server that restarts or is overloaded: a retry (or the next read) may pass."""
    import aiohttp

    from emoflow.orchestration.retry import is_transient

    return isinstance(exc, aiohttp.ClientConnectionError | TimeoutError) or is_transient(exc)


async def _client() -> Any:
    """An API client: ``$KUBECONFIG`` when set (as kubectl), else the pod's service account in
    a cluster, else ~/.kube/config."""
    try:
        from kubernetes_asyncio import client, config
    except ImportError as exc:
        raise JobFailed("train_on: kubeflow needs the Kubernetes client: "
                        "pip install 'emoflow[stack]'") from exc  # fmt: skip
    conf = client.Configuration()  # its own, not the process-wide default: read it each time
    path = os.environ.get("KUBECONFIG")  # read now: the client reads it once, at import
    try:
        if not path and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=conf)
        else:
            await config.load_kube_config(path, client_configuration=conf, persist_config=False)
    except (config.ConfigException, OSError) as exc:
        raise JobFailed("no Kubernetes credentials: the flow uses $KUBECONFIG, else its pod's "
                        f"service account in a cluster, else ~/.kube/config ({exc})") from exc
    return client.ApiClient(configuration=conf)


class _Jobs:
    """The PyTorchJob calls of one namespace."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes_asyncio.client import CustomObjectsApi

        self.api = CustomObjectsApi(api_client)
        self.ns = namespace

    async def create(self, job: dict[str, Any]) -> None:
        await self.api.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, job)

    async def get(self, name: str) -> dict[str, Any]:
        return await self.api.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    async def list(self, selector: str) -> list[dict[str, Any]]:
        found = await self.api.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL,
                                                             label_selector=selector)  # fmt: skip
        return list(found.get("items") or [])

    async def delete(self, name: str) -> bool:
        """Delete ``name`` (its pods with it); True when it is gone, False when the API failed."""
        try:
            await self.api.delete_namespaced_custom_object(
                GROUP, VERSION, self.ns, PLURAL, name, propagation_policy="Background")
        except Exception as exc:
            return _api_status(exc) == 404
        return True

    async def gone(self, name: str, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                await self.get(name)
            except Exception as exc:
                if _api_status(exc) == 404:
                    return True
            await asyncio.sleep(1.0)
        return False


async def _run(job: dict[str, Any], timeout_s: float, start_timeout_s: float, poll_s: float,
               on_event: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
    where = f"{KIND} {ns}/{name}"
    async with await _client() as api_client:
        jobs = _Jobs(api_client, ns)
        submitted = attempted = False
        try:
            await _refuse_others(jobs, job, where)
            attempted = True  # from here on the job may exist, even if create's answer is lost
            await _submit(jobs, job, where, on_event)
            submitted = True
            done = await _follow(jobs, name, where, timeout_s, start_timeout_s, poll_s, on_event)
        except JobFailed as exc:
            # A job nobody follows any more would keep training (and writing the workspace);
            # one the flow may follow again after a retry (same name, same run) is left alone
            # (its activeDeadlineSeconds still ends it), and so is a Failed one (its pods' logs
            # say why; ttl_h removes it).
            if submitted and not (exc.transient or exc.ended):
                await _stop(jobs, name, where, on_event)
            raise
        except asyncio.CancelledError:  # the flow run was stopped: free the GPUs
            if attempted:
                await _stop(jobs, name, where, on_event)
            raise
        return done


async def _stop(jobs: _Jobs, name: str, where: str, on_event: Callable[[str], None]) -> None:
    if await jobs.delete(name):
        on_event(f"{where} deleted")
    else:
        on_event(f"{where} could not be deleted: delete it with kubectl -n {jobs.ns} delete "
                 f"pytorchjob {name}")  # fmt: skip


async def _refuse_others(jobs: _Jobs, job: dict[str, Any], where: str) -> None:
    """Another run's unfinished job of the same model writes the same models/<model>/."""
    labels = job["metadata"]["labels"]
    try:
        found = await jobs.list(f"emoflow.model={labels['emoflow.model']}")
    except Exception as exc:
        model = labels["emoflow.model"]
        raise JobFailed(f"listing the jobs of {model} failed before submitting {where}"
                        f"{_hint(exc)}: {_reason(exc)}", _transient(exc)) from exc  # fmt: skip
    busy = [j["metadata"]["name"] for j in found
            if final_condition(j) is None and j["metadata"]["name"] != job["metadata"]["name"]]
    if busy:
        raise JobFailed(f"not submitting {where}: {', '.join(busy)} still trains this model into "
                        f"the same workspace; wait for it or delete it "
                        f"(kubectl -n {jobs.ns} delete pytorchjob {busy[0]})")  # fmt: skip


async def _submit(jobs: _Jobs, job: dict[str, Any], where: str,
                  on_event: Callable[[str], None], again: bool = True) -> None:  # fmt: skip
    name = job["metadata"]["name"]
    try:
        await jobs.create(job)
    except Exception as exc:
        if _api_status(exc) == 409:
            existing = await _same_run(jobs, job, where)
            if existing is not None:
                final = final_condition(existing)
                if final is None or final.get("type") == "Succeeded":
                    # A retried submission whose answer was lost, or a finished one: follow it.
                    on_event(f"{where} was already submitted by this flow run: following it")
                    return
                # A flow run retried after its job failed: that job goes, a new one starts.
                on_event(f"{where} of this flow run had failed ({_describe(final)}): "
                         "deleting it and submitting it again")  # fmt: skip
                if again and await jobs.delete(name) and await jobs.gone(name):
                    await _submit(jobs, job, where, on_event, again=False)
                    return
                raise JobFailed(f"{where}: the failed job of this run could not be replaced; "
                                f"kubectl -n {jobs.ns} delete pytorchjob {name}, then retry",
                                transient=True) from exc  # fmt: skip
        raise JobFailed(f"submitting {where} failed{_hint(exc)}: {_reason(exc)}",
                        _transient(exc)) from exc  # fmt: skip
    workers = job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"]
    on_event(f"{where} submitted: {workers} node(s) × {job['spec']['nprocPerNode']} process(es)")


async def _same_run(jobs: _Jobs, job: dict[str, Any], where: str) -> dict[str, Any] | None:
    """The existing job of ``job``'s name when this flow run submitted it, else None."""
    meta = job["metadata"]
    try:
        found = await jobs.get(meta["name"])
    except Exception as exc:
        if _api_status(exc) == 404:  # deleted since: the next try creates it
            raise JobFailed(f"{where} was deleted while submitting it", transient=True) from exc
        raise JobFailed(f"reading {where} after a conflict failed: {_reason(exc)}",
                        _transient(exc)) from exc  # fmt: skip
    theirs = ((found.get("metadata") or {}).get("labels") or {}).get(RUN_LABEL)
    ours = meta.get("labels", {}).get(RUN_LABEL)
    return found if theirs is not None and theirs == ours else None


async def _follow(jobs: _Jobs, name: str, where: str, timeout_s: float, start_timeout_s: float,
                  poll_s: float, on_event: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """Read the job every ``poll_s`` until it is Succeeded (returned) or Failed (raised)."""
    begun = time.monotonic()
    seen: set[tuple[str, str]] = set()
    failures = 0
    started = False
    while True:
        try:
            current = await jobs.get(name)
            failures = 0
        except Exception as exc:
            failures += 1
            transient = _transient(exc)
            if not transient or failures >= MAX_READ_FAILURES:
                raise JobFailed(f"reading {where} failed: {_reason(exc)}", transient) from exc
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
                logs = f"kubectl -n {jobs.ns} logs -l training.kubeflow.org/job-name={name}"
                raise JobFailed(f"{where} failed: {_describe(final)} ({logs})", ended=True)
            return current
        started = started or _started(current)
        waited = time.monotonic() - begun
        if not started and current and waited >= start_timeout_s:
            raise JobFailed(f"{where} did not start in {start_timeout_s:.0f} s: its pods are "
                            "pending (image pull, free GPUs, the workspace claim?): "
                            f"kubectl -n {jobs.ns} describe pods "
                            f"-l training.kubeflow.org/job-name={name}")  # fmt: skip
        if waited >= timeout_s:
            raise JobFailed(f"{where} did not finish in {timeout_s:.0f} s")
        await asyncio.sleep(poll_s)


def _hint(exc: BaseException) -> str:
    return {404: " (is the Kubeflow Training Operator installed?)",
            409: " (a job of that name exists and belongs to another run)"
            }.get(_api_status(exc) or 0, "")  # fmt: skip


def _reason(exc: BaseException) -> str:
    status = _api_status(exc)
    if status is not None:
        return f"HTTP {status} {getattr(exc, 'reason', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def run_job(job: dict[str, Any], timeout_s: float, poll_s: float,
            on_event: Callable[[str], None] = print,
            start_timeout_s: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Submit ``job``, follow its conditions (each new one to ``on_event``) and return it once
    Succeeded (the job as the API has it: an adopted one carries its own annotations).

    :class:`JobFailed` when it fails (the job stays, with its pods' logs), cannot be submitted,
    does not start within ``start_timeout_s`` or runs past ``timeout_s`` (the job is deleted, so
    its pods free their GPUs and stop writing the workspace), or when the API cannot be read
    (``transient``: the job stays for a retry of the same flow run to follow, and its own
    ``activeDeadlineSeconds`` ends it if none does). Another run's unfinished job of the same
    model is refused before anything is submitted."""
    start = timeout_s if start_timeout_s is None else min(start_timeout_s, timeout_s)
    return asyncio.run(_run(job, timeout_s, start, poll_s, on_event))


# --------------------------------------------------------------------------- the workspace


def check_workspace(repo: Path, cfg: PipelineKubeflowParams) -> None:
    """The flow must run in the folder the pods mount: else ``dvc commit`` would record files
    the job never wrote (a flow on a laptop, the job on the cluster's volume)."""
    if repo.resolve() != Path(cfg.workspace_path).resolve():
        raise InputError(repo / "params.yaml", f"pipeline.kubeflow.workspace_path is "
                         f"{cfg.workspace_path} but the flow runs in {repo.resolve()}: run it in "
                         "the pod that mounts the workspace claim there (infra/prefect/), or set "
                         "workspace_path to where both see it")  # fmt: skip


def model_hash(repo: Path, model: str) -> str | None:
    """SHA-256 of ``models/<model>/model.pt``, None when there is none."""
    from emoflow.artifact import MODEL_FILE
    from emoflow.fsio import file_sha256

    path = Layout(repo).model_dir(model) / MODEL_FILE
    return file_sha256(path) if path.exists() else None


BEFORE = "emoflow/model-sha256-before"  # the job's annotation: model.pt when it was submitted


def check_trained(repo: Path, model: str, job: dict[str, Any]) -> None:
    """After a Succeeded job, ``model.pt`` must differ from the one the job was submitted
    against (its annotation, so a retry that adopts a finished job compares with the right
    file): the pods wrote this workspace."""
    name = job["metadata"]["name"]
    before = ((job["metadata"].get("annotations") or {}).get(BEFORE)) or None
    after = model_hash(repo, model)
    if after is None or after == before:
        what = "is missing" if after is None else "is the one from before the job"
        raise JobFailed(f"{KIND} {name} succeeded but {repo / 'models' / model / 'model.pt'} "
                        f"{what}: do the pods mount the workspace the flow runs in?")  # fmt: skip


# --------------------------------------------------------------------------- command line

HEADER = """\
# `emoflow train` on N nodes × M GPUs as a Kubeflow Training Operator (v1) PyTorchJob: the
# operator starts N Worker pods and sets torchrun's PET_NNODES and c10d rendezvous (PET_RDZV_*);
# each pod's torchrun starts M processes, one per GPU, and emoflow's trainer joins the process
# group (nccl) torchrun prepared. Rank 0 writes the checkpoints and the model to the shared
# workspace volume, so a restarted job resumes.
#
# Rendered from params.yaml's pipeline.kubeflow and dvc.yaml's train stage, as the retrain flow
# submits it with `pipeline.train_on: kubeflow` (docs/deploy.md):
#   .venv/bin/python -m emoflow.orchestration.kubeflow --model fan > infra/training/pytorchjob.yaml
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Print the PyTorchJob the flow would submit for ``--model`` (params.yaml's settings)."""
    from emoflow.config import load_params

    parser = argparse.ArgumentParser(prog="python -m emoflow.orchestration.kubeflow",
                                     description=main.__doc__)  # fmt: skip
    parser.add_argument("--model", choices=registry.NAMES, required=True)
    parser.add_argument("-p", "--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    parser.add_argument("--name", default=None, help="job name [emoflow-train-<model>]")
    args = parser.parse_args(argv)
    try:
        pipeline = load_params(args.params).pipeline
        job = render_job(args.model, pipeline.kubeflow, stage_command(args.dvc_yaml, args.model),
                         args.name, deadline_s=pipeline.timeout_h.train * 3600)  # fmt: skip
    except EmoflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(HEADER + yaml.safe_dump(job, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
