"""A stand-in for a Kubernetes API server with the Kubeflow Training Operator, for tests.

No Kubernetes API server can run on the build machines (no Go toolchain, no cluster binaries,
no image registry), so the flow's cluster training is tested against this process: it serves
the part of the Kubernetes REST API that a ``PyTorchJob`` client uses (create, get, delete in
``/apis/kubeflow.org/v1/namespaces/<ns>/pytorchjobs``, bearer-token auth, Kubernetes ``Status``
bodies for errors) and plays the operator: for each job it starts the Worker replicas' container
command as local processes, with the environment the operator gives an elastic job (``PET_NNODES``,
``PET_NPROC_PER_NODE``, c10d ``PET_RDZV_*``) and the workspace volume mapped to a local folder,
then sets the job's conditions (Created, Running, Succeeded or Failed) from their exit codes.

    python tests/kube_standin.py --port P --token T --mount /workspace=DIR --logs DIR [--no-crd]

What it does not do: schedule pods, pull images, enforce resources, restart failed replicas.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psutil

_PATH = re.compile(r"^/apis/kubeflow\.org/v1/namespaces/([a-z0-9-]+)/pytorchjobs"
                   r"(?:/([a-z0-9.-]+))?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """The jobs, and the processes that play their pods."""

    def __init__(self, mounts: dict[str, Path], logs: Path, pending: bool = False,
                 failing_reads: int = 0) -> None:  # fmt: skip
        self.mounts = mounts
        self.logs = logs
        self.pending = pending
        self.failing_reads = failing_reads  # reads of a job answered 503 after its first
        self.reads: dict[tuple[str, str], int] = {}
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], list[subprocess.Popen]] = {}
        self.lock = threading.Lock()

    def condition(self, key: tuple[str, str], kind: str, reason: str, message: str) -> None:
        with self.lock:
            job = self.jobs.get(key)
            if job is None:
                return
            conds = job.setdefault("status", {}).setdefault("conditions", [])
            for c in conds:
                c["status"] = "False" if kind in ("Succeeded", "Failed") else c["status"]
            conds.append({"type": kind, "status": "True", "reason": reason, "message": message,
                          "lastUpdateTime": _now(), "lastTransitionTime": _now()})  # fmt: skip

    def local_dir(self, path: str) -> Path:
        for mount, local in self.mounts.items():
            if path == mount or path.startswith(mount.rstrip("/") + "/"):
                return local / os.path.relpath(path, mount)
        raise ValueError(f"workingDir {path} is on no mounted volume")

    def operate(self, key: tuple[str, str]) -> None:
        """The operator's part: start the Worker pods, then report how they ended."""
        ns, name = key
        with self.lock:
            job = self.jobs.get(key)
        if job is None:  # deleted right after it was created
            return
        what = f"PyTorchJob {ns}/{name}"
        self.condition(key, "Created", "PyTorchJobCreated", f"{what} is created.")
        if self.pending:  # as pods that never get scheduled (no GPU free, an image not pulled)
            return
        spec = job["spec"]
        worker = spec["pytorchReplicaSpecs"]["Worker"]
        replicas = int(worker.get("replicas", 1))
        elastic = spec.get("elasticPolicy")
        container = next(c for c in worker["template"]["spec"]["containers"]
                         if c["name"] == "pytorch")  # fmt: skip
        env = dict(os.environ)  # the image's PATH has torchrun: here, this venv's bin
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.update({e["name"]: str(e.get("value", "")) for e in container.get("env", [])})
        # What the operator (v1.8+) sets for an elastic job; PET_NPROC_PER_NODE is left out so
        # the job's own --nproc-per-node is what counts (operators before v1.8 left it out too).
        nodes = (f"{elastic['minReplicas']}:{elastic['maxReplicas']}" if elastic
                 else str(replicas))  # fmt: skip
        env.update(PET_NNODES=nodes, PET_RDZV_ENDPOINT=f"127.0.0.1:{_free_port()}",
                   PET_RDZV_BACKEND=(elastic or {}).get("rdzvBackend", "c10d"), PET_RDZV_ID=name,
                   PET_MAX_RESTARTS=str((elastic or {}).get("maxRestarts", 0)))  # fmt: skip
        env.pop("PET_NPROC_PER_NODE", None)
        cwd = self.local_dir(container.get("workingDir", "/"))
        cmd = [*container.get("command", []), *container.get("args", [])]
        pods = []
        for i in range(replicas):
            log = (self.logs / f"{ns}.{name}.worker-{i}.log").open("wb")
            pods.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        with self.lock:
            deleted = key not in self.jobs
            if not deleted:
                self.pods[key] = pods
        if deleted:
            self._kill(pods)
            return
        self.condition(key, "Running", "PyTorchJobRunning", f"{what} is running.")
        codes = self._wait(pods, any_success=bool(elastic))
        with self.lock:
            deleted = key not in self.jobs
        if deleted:
            return
        failed = [c for c in codes if c not in (0, None)]
        if failed:
            self.condition(key, "Failed", "PyTorchJobFailed",
                           f"{what} is failed because {len(failed)} Worker replica(s) failed "
                           f"(exit codes {failed}).")  # fmt: skip
            return
        self.condition(key, "Succeeded", "PyTorchJobSucceeded",
                       f"{what} is successfully completed.")  # fmt: skip
        if spec.get("runPolicy", {}).get("cleanPodPolicy", "None") in ("Running", "All"):
            self._kill([p for p in pods if p.poll() is None])

    @staticmethod
    def _wait(pods: list[subprocess.Popen], any_success: bool) -> list[int | None]:
        """Exit codes once a pod fails, or (elastic, as the operator decides) once one pod
        succeeds, or all pods have ended; None for a pod still running."""
        while True:
            codes = [p.poll() for p in pods]
            ended = [c for c in codes if c is not None]
            if any(c != 0 for c in ended) or len(ended) == len(pods):
                return codes
            if any_success and ended:
                return codes
            time.sleep(0.1)

    @staticmethod
    def _kill(pods: list[subprocess.Popen]) -> None:
        for p in pods:
            try:
                proc = psutil.Process(p.pid)
                for child in [*proc.children(recursive=True), proc]:
                    child.kill()
            except psutil.NoSuchProcess:
                pass

    def delete(self, key: tuple[str, str]) -> bool:
        with self.lock:
            job = self.jobs.pop(key, None)
            pods = self.pods.pop(key, [])
        self._kill(pods)
        return job is not None


def handler(cluster: Cluster, token: str, crd: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:  # one line per request, to stderr
            super().log_message(fmt, *args)

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _status(self, code: int, reason: str, message: str) -> None:
            self._send(code, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Failure", "message": message, "reason": reason,
                              "code": code})  # fmt: skip

        def _route(self) -> tuple[str, str | None] | None:
            if self.headers.get("Authorization") != f"Bearer {token}":
                self._status(401, "Unauthorized", "Unauthorized")
                return None
            found = _PATH.match(self.path.split("?")[0])
            if not found or not crd:
                self._status(404, "NotFound", "the server could not find the requested resource")
                return None
            return found.group(1), found.group(2)

        def do_GET(self) -> None:
            route = self._route()
            if route is None:
                return
            ns, name = route
            if name is None:  # the collection, with an optional labelSelector k=v[,k=v]
                query = parse_qs(urlsplit(self.path).query).get("labelSelector", [""])[0]
                wanted = dict(kv.split("=", 1) for kv in query.split(",") if "=" in kv)
                with cluster.lock:
                    items = [json.loads(json.dumps(j)) for (n, _), j in cluster.jobs.items()
                             if n == ns and wanted.items() <= j["metadata"]["labels"].items()]
                self._send(200, {"kind": "PyTorchJobList", "apiVersion": "kubeflow.org/v1",
                                 "metadata": {}, "items": items})  # fmt: skip
                return
            with cluster.lock:
                job = cluster.jobs.get((ns, name))
                body = json.loads(json.dumps(job)) if job else None
                reads = cluster.reads[(ns, name)] = cluster.reads.get((ns, name), 0) + 1
            if body is not None and 1 < reads <= 1 + cluster.failing_reads:
                self._status(503, "ServiceUnavailable", "the server is currently unable to "
                             "handle the request")  # fmt: skip
                return
            if body is None:
                self._status(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
            else:
                self._send(200, body)

        def do_POST(self) -> None:
            route = self._route()
            if route is None:
                return
            ns, name = route
            job = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            meta = job.get("metadata") or {}
            problem = _invalid(job, ns)
            if name is not None or problem:
                self._status(422, "Invalid", problem or "POST goes to the collection")
                return
            key = (ns, meta["name"])
            with cluster.lock:
                if key in cluster.jobs:
                    exists = True
                else:
                    exists = False
                    meta.setdefault("labels", {})
                    meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(),
                                resourceVersion="1")  # fmt: skip
                    job["status"] = {"conditions": []}
                    cluster.jobs[key] = job
            if exists:
                self._status(409, "AlreadyExists",
                             f'pytorchjobs.kubeflow.org "{meta["name"]}" already exists')
                return
            self._send(201, job)
            threading.Thread(target=cluster.operate, args=(key,), daemon=True).start()

        def do_DELETE(self) -> None:
            route = self._route()
            if route is None:
                return
            ns, name = route
            if cluster.delete((ns, name or "")):
                self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
            else:
                self._status(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')

    return Handler


def _invalid(job: dict[str, Any], ns: str) -> str:
    """The API server's own checks of a PyTorchJob create (a subset of the CRD's schema)."""
    meta = job.get("metadata") or {}
    if job.get("apiVersion") != "kubeflow.org/v1" or job.get("kind") != "PyTorchJob":
        return "apiVersion/kind must be kubeflow.org/v1 PyTorchJob"
    if not _NAME.match(str(meta.get("name", ""))) or len(meta["name"]) > 63:
        return f"metadata.name {meta.get('name')!r}: must be a DNS-1123 label"
    if meta.get("namespace", ns) != ns:
        return "metadata.namespace does not match the request's namespace"
    try:
        worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]
        containers = worker["template"]["spec"]["containers"]
    except (KeyError, TypeError):
        return "spec.pytorchReplicaSpecs.Worker.template.spec.containers: Required value"
    if not any(c.get("name") == "pytorch" for c in containers):
        return "a container named pytorch is required"
    if not isinstance(job["spec"].get("nprocPerNode", ""), str):
        return "spec.nprocPerNode: must be a string"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--mount", action="append", default=[], help="PATH=LOCAL_DIR")
    parser.add_argument("--logs", type=Path, required=True, help="one log file per pod")
    parser.add_argument("--no-crd", action="store_true", help="as without the operator installed")
    parser.add_argument("--pending", action="store_true", help="pods never start")
    parser.add_argument("--failing-reads", type=int, default=0,
                        help="answer this many reads of each job with 503 after the first")
    args = parser.parse_args()
    mounts = {m.split("=", 1)[0]: Path(m.split("=", 1)[1]).resolve() for m in args.mount}
    args.logs.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(mounts, args.logs, args.pending, args.failing_reads)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(cluster, args.token,
                                                                   not args.no_crd))  # fmt: skip
    print(f"kube stand-in on 127.0.0.1:{args.port} ({time.strftime('%H:%M:%S')})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
