"""One step of the flow = DVC's Python API in a child process, its output streamed line by line.

Why a child process and not ``Repo.reproduce`` in the flow's own process: DVC runs each stage's
command (``emoflow train …``) as a subprocess that writes to the inherited stdout/stderr, which
no Python logger sees. Here that output (DVC's "Running stage …", emoflow's logging, the
per-epoch lines of training, torchrun's workers) arrives on one pipe and the caller passes each
line to its logger, i.e. into the Prefect task's log. The child also bounds what a timeout or a
cancelled run must stop: its whole process tree is ended, so no orphaned training keeps the
workspace busy. DVC's own repository lock is held by that one process.

Child: ``python -m emoflow.orchestration.dvc_step --repo DIR --result FILE reproduce TARGET…``
(or ``status``/``commit`` TARGET…, or ``pull``/``push`` with ``--remote``); it writes a JSON
result (stages planned and run, stale or committed, or the error and whether it looked
transient) and exits 0 or 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from emoflow.errors import EmoflowError

KILL_GRACE_S = 20.0
TAIL_LINES = 20
# What the stage commands need beside the flow's environment: `emoflow` on PATH (the venv's
# bin, as the Makefile sets it), unbuffered lines, no progress bars (each redraw would be one
# log line in the UI), and no telemetry.
CHILD_ENV = {"PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "DVC_NO_ANALYTICS": "1",
             "GX_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
             "DO_NOT_TRACK": "true"}  # fmt: skip


class StepError(EmoflowError):
    """A DVC step failed; ``transient`` says whether a retry may help, ``tail`` its last lines."""

    def __init__(self, message: str, transient: bool = False, tail: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.transient = transient
        self.tail = list(tail)


# --------------------------------------------------------------------------- parent side


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    if env.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    return env | CHILD_ENV


def run_step(repo: Path, action: str, args: Sequence[str] = (), *,
             on_line: Callable[[str], None], timeout_s: float | None = None,
             remote: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Run ``action`` (reproduce | status | commit | pull | push) in a child; each output line
    goes to ``on_line``.

    Returns the child's result; raises :class:`StepError` on failure or timeout (after ending
    the child's whole process tree).
    """
    with tempfile.TemporaryDirectory(prefix="emoflow-step-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "emoflow.orchestration.dvc_step", "--repo", str(repo),
               "--result", str(result_file)]  # fmt: skip
        if remote:
            cmd += ["--remote", remote]
        cmd += [action, *args]
        tail: list[str] = []
        code = run_command(cmd, repo, on_line, tail, timeout_s)
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
    if code == 0 and result.get("ok"):
        return result
    what = f"{action} {' '.join(args)}".strip()
    if code is None:
        raise StepError(f"dvc {what} timed out after {timeout_s:.0f} s and was stopped", tail=tail)
    error = result.get("error") or f"exited with code {code}"
    raise StepError(f"dvc {what} failed: {error}", bool(result.get("transient")), tail)


def run_command(cmd: Sequence[str], cwd: Path, on_line: Callable[[str], None], tail: list[str],
                timeout_s: float | None) -> int | None:  # fmt: skip
    """Run ``cmd``, passing its merged output to ``on_line`` (the last lines also to ``tail``);
    its exit code, or None when it ran out of time and was stopped."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            # A carriage return redraws a line on a terminal: keep only its last state.
            text = raw.decode("utf-8", "replace").rstrip("\r\n").rsplit("\r", 1)[-1].rstrip()
            if text:
                lines.put(text)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    finished = False
    try:
        while True:
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if wait <= 0:
                return None
            try:
                line = lines.get(timeout=wait)
            except queue.Empty:
                continue
            if line is None:
                break
            tail.append(line)
            del tail[:-TAIL_LINES]
            on_line(line)
        finished = True
        return proc.wait()
    finally:
        if not finished:  # timeout, or the flow itself is being stopped (cancel, Ctrl-C)
            stop_tree(proc.pid)
        reader.join(timeout=5)


def stop_tree(pid: int, grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM ``pid`` and every descendant (torchrun, DataLoader workers), SIGKILL stragglers."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


# --------------------------------------------------------------------------- child side


def _reproduce(repo: Any, targets: list[str]) -> dict[str, Any]:
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    # The same plan DVC makes inside reproduce(): what it checks, in order.
    planned = plan_repro(get_active_graph(repo.index.graph), collect_stages(repo, targets))
    ran = repo.reproduce(targets=targets)
    return {"planned": [s.addressing for s in planned], "ran": [s.addressing for s in ran]}


def _status(repo: Any, targets: list[str]) -> dict[str, Any]:
    # Only the targets themselves: the steps before made their upstream stages current.
    changed = repo.status(targets=targets)
    return {"stale": [t for t in targets if t in changed], "changes": changed}


def _commit(repo: Any, targets: list[str]) -> dict[str, Any]:
    # force: the outputs were made outside DVC (a cluster job); record them without a prompt.
    for target in targets:
        repo.commit(target, force=True)
    return {"committed": targets}


def _remote(repo: Any, remote: str | None) -> str | None:
    return remote or repo.config["core"].get("remote")


def _pull(repo: Any, remote: str | None) -> dict[str, Any]:
    name = _remote(repo, remote)
    if name is None:
        return {"skipped": "no DVC remote configured"}
    # Outputs a run makes itself (never pushed yet) may be missing: DVC rebuilds them.
    stats = repo.pull(remote=name, allow_missing=True)
    return {"remote": name, "stats": stats if isinstance(stats, dict) else None}


def _push(repo: Any, remote: str | None) -> dict[str, Any]:
    name = _remote(repo, remote)
    if name is None:
        return {"skipped": "no DVC remote configured"}
    return {"remote": name, "pushed": repo.push(remote=name)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emoflow.orchestration.dvc_step")
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--remote", default=None)
    parser.add_argument("action", choices=("reproduce", "status", "commit", "pull", "push"))
    parser.add_argument("targets", nargs="*")
    args = parser.parse_args(argv)
    from dvc.repo import Repo  # DVC logs to stderr itself (INFO: running, skipping, …)

    from emoflow.orchestration.retry import is_transient

    try:
        with Repo(str(args.repo)) as repo:
            if args.action == "reproduce":
                result = _reproduce(repo, args.targets)
            elif args.action == "status":
                result = _status(repo, args.targets)
            elif args.action == "commit":
                result = _commit(repo, args.targets)
            elif args.action == "pull":
                result = _pull(repo, args.remote)
            else:
                result = _push(repo, args.remote)
        out: dict[str, Any] = {"ok": True, **result}
    except Exception as exc:
        cause = exc.__cause__
        error = str(exc) + (f": {cause}" if cause and str(cause) not in str(exc) else "")
        out = {"ok": False, "error": error, "transient": is_transient(exc)}
    args.result.write_text(json.dumps(out, default=str))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
