"""A local Prefect stack for one machine: server (embedded sqlite), process worker, deployment.

``make pipeline-up`` runs ``python -m emoflow.orchestration.local up``: the server on
127.0.0.1:4200 with its database under ``.prefect/`` in the repo, the work pool ``emoflow-local``,
the ``retrain`` deployment from ``pipelines/prefect.yaml`` and a worker; PIDs and logs go to
``.prefect/``. ``make pipeline-down`` stops exactly those processes by their PIDs. The tests use
the same functions with a free port and a temporary home.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emoflow.errors import EmoflowError
from emoflow.orchestration.dvc_step import stop_tree

HOST = "127.0.0.1"
PORT = 4200
POOL = "emoflow-local"
PREFECT_FILE = Path("pipelines/prefect.yaml")
STATE_DIR = Path(".prefect")
READY_TIMEOUT_S = 120.0
SERVICES = ("server", "worker")


class LocalStackError(EmoflowError):
    """The local Prefect server or worker did not come up."""


def api_url(port: int = PORT) -> str:
    return f"http://{HOST}:{port}/api"


def prefect_env(home: Path, port: int = PORT, base: dict[str, str] | None = None
                ) -> dict[str, str]:  # fmt: skip
    """The environment of every Prefect process of the stack: one home, one API, offline."""
    env = dict(os.environ if base is None else base)
    env.update(PREFECT_HOME=str(home.resolve()), PREFECT_API_URL=api_url(port),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="true",
               PREFECT_CLI_PROMPT="false")  # fmt: skip
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def prefect_bin() -> str:
    return str(Path(sys.executable).parent / "prefect")


def _spawn(args: Sequence[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        # Own session: a Ctrl-C in the terminal that ran `make pipeline-up` does not reach it.
        return subprocess.Popen([prefect_bin(), *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip


def start_server(home: Path, port: int, log: Path, cwd: Path = Path(".")) -> subprocess.Popen:
    """``prefect server start`` on 127.0.0.1:``port``, ready when this returns."""
    proc = _spawn(["server", "start", "--host", HOST, "--port", str(port), "--analytics-off"],
                  prefect_env(home, port), log, cwd)  # fmt: skip
    try:
        wait_ready(port, proc, log)
    except BaseException:
        stop_tree(proc.pid)
        raise
    return proc


def wait_ready(port: int, proc: subprocess.Popen | None = None, log: Path | None = None,
               timeout_s: float = READY_TIMEOUT_S) -> None:  # fmt: skip
    """Poll the server's ``/health`` until it answers ``true``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LocalStackError(f"prefect server exited with code {proc.returncode}"
                                  + (f"; see {log}" if log else ""))  # fmt: skip
        try:
            if api_get(port, "health") is True:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise LocalStackError(f"prefect server not ready on {api_url(port)} after {timeout_s:.0f} s")


def api_request(port: int, path: str, body: Any = None, method: str | None = None) -> Any:
    """One JSON request to the server's REST API (what the UI calls)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{api_url(port)}/{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def api_get(port: int, path: str) -> Any:
    return api_request(port, path)


def prefect(args: Sequence[str], env: dict[str, str], cwd: Path, timeout_s: float = 300
            ) -> str:  # fmt: skip
    """Run a prefect CLI command; its output, or an error with it."""
    done = subprocess.run([prefect_bin(), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout_s, check=False)  # fmt: skip
    if done.returncode != 0:
        raise LocalStackError(f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def create_pool(env: dict[str, str], cwd: Path, pool: str = POOL) -> None:
    prefect(["work-pool", "create", pool, "--type", "process", "--overwrite"], env, cwd)


def deploy(env: dict[str, str], repo: Path, prefect_file: Path = PREFECT_FILE) -> str:
    """``prefect deploy`` of every deployment in ``prefect_file``, run from the repo root (the
    working directory the worker will run the flow in)."""
    return prefect(["deploy", "--prefect-file", str(prefect_file), "--all"], env, repo)


def start_worker(env: dict[str, str], log: Path, cwd: Path, pool: str = POOL
                 ) -> subprocess.Popen:  # fmt: skip
    return _spawn(["worker", "start", "--pool", pool, "--type", "process"], env, log, cwd)


# --------------------------------------------------------------------------- up / down


def _pid_file(state: Path, name: str) -> Path:
    return state / f"{name}.pid"


def running_pid(state: Path, name: str) -> int | None:
    """The PID recorded for ``name`` if that process still runs."""
    path = _pid_file(state, name)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def up(repo: Path, state: Path, port: int = PORT) -> None:
    """Server, pool, deployment and worker; idempotent (a running part is kept)."""
    state.mkdir(parents=True, exist_ok=True)
    (state / ".gitignore").write_text("*\n")  # the server's database and logs stay local
    env = prefect_env(state, port)
    if running_pid(state, "server") is None:
        server = start_server(state, port, state / "server.log", repo)
        _pid_file(state, "server").write_text(f"{server.pid}\n")
        print(f"prefect server: pid {server.pid}, UI http://{HOST}:{port}")
    else:
        wait_ready(port)
    create_pool(env, repo)
    deploy(env, repo)
    print(f"deployment retrain/retrain from {PREFECT_FILE} (pool {POOL})")
    if running_pid(state, "worker") is None:
        worker = start_worker(env, state / "worker.log", repo)
        _pid_file(state, "worker").write_text(f"{worker.pid}\n")
        print(f"prefect worker: pid {worker.pid}, pool {POOL}, log {state / 'worker.log'}")
    print(f"UI: http://{HOST}:{port}/deployments  (PREFECT_API_URL={api_url(port)})")


def down(state: Path) -> None:
    """Stop the worker, then the server, each by its recorded PID (and its children)."""
    for name in reversed(SERVICES):
        pid = running_pid(state, name)
        if pid is not None:
            stop_tree(pid)
            print(f"stopped prefect {name} (pid {pid})")
        _pid_file(state, name).unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emoflow.orchestration.local")
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--state", type=Path, default=None, help="[default: REPO/.prefect]")
    parser.add_argument("--port", type=int, default=PORT)
    args = parser.parse_args(argv)
    state = args.state or args.repo / STATE_DIR
    try:
        if args.action == "up":
            up(args.repo, state, args.port)
        else:
            down(state)
    except EmoflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
