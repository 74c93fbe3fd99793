"""The retrain flow's parts without a Prefect server: plan, retries, lock, child steps, report.

Fast (the default ``pytest`` runs them); the flow itself is in test_pipeline_flow.py.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import yaml

from emoflow.errors import InputError
from emoflow.orchestration import plan, report, workspace
from emoflow.orchestration.dvc_step import StepError, run_command, run_step
from emoflow.orchestration.retry import is_transient

ROOT = Path(__file__).resolve().parents[2]
HANG_S = 300  # ends a hang only: the tests wait for events, whatever the machine's load


def test_steps_name_the_stages_of_dvc_yaml() -> None:
    assert plan.step_targets("preprocess", ["fan"]) == ["split"]
    assert plan.step_targets("train", ["fan", "deep_emotion"]) == ["train@fan",
                                                                   "train@deep_emotion"]
    names = plan.dvc_stage_names(ROOT / "dvc.yaml")
    for step in ("validate", "preprocess", "train", "evaluate"):
        assert set(plan.step_targets(step, plan.MODELS)) <= names
    with pytest.raises(ValueError, match="runs no DVC stages"):
        plan.step_targets("promote", ["fan"])


def test_a_missing_stage_fails_before_anything_runs(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    doc["stages"].pop("split")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="has no stage split"):
        plan.check_targets(tmp_path / "dvc.yaml", ["fan"])


def test_run_parameters_override_params_yaml_and_are_checked(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("pipeline: {models: [deep_emotion], promote_min_delta: 0.01}\n")
    s = plan.resolve(params)
    assert (s.models, s.metric, s.min_delta, s.sync.mode) == (("deep_emotion",), "uar", 0.01,
                                                              "workspace")  # fmt: skip
    s = plan.resolve(params, models=["fan", "fan"], metric="war", sync_mode="pull")
    assert (s.models, s.metric, s.sync.mode) == (("fan",), "war", "pull")
    with pytest.raises(InputError, match="promote_metric"):
        plan.resolve(params, metric="accuracy")
    with pytest.raises(InputError, match="models"):
        plan.resolve(params, models=["resnet"])


def test_only_passing_outages_count_as_transient() -> None:
    assert is_transient(ConnectionRefusedError())
    assert is_transient(OSError(errno.ECONNRESET, "reset"))
    assert is_transient(RuntimeError("sqlite3.OperationalError: database is locked"))
    wrapped = RuntimeError("register failed")
    wrapped.__cause__ = TimeoutError()
    assert is_transient(wrapped)

    class HTTPError(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(f"status {status}")
            self.response = type("R", (), {"status_code": status})()

    assert is_transient(HTTPError(503)) and not is_transient(HTTPError(404))
    assert not is_transient(FileNotFoundError(errno.ENOENT, "no such file"))
    assert not is_transient(InputError("data/marks/p001_001.txt", "8 integers expected"))
    assert not is_transient(ValueError("bad metric"))


def test_a_second_run_waits_for_the_workspace(tmp_path: Path) -> None:
    events: list[str] = []
    second_in, second_waits = threading.Event(), threading.Event()

    def waiting(message: str) -> None:
        events.append(message)
        second_waits.set()

    def second() -> None:
        with workspace.workspace_lock(tmp_path, "run B", on_wait=waiting):
            events.append("B in")
            second_in.set()

    with workspace.workspace_lock(tmp_path, "run A", on_wait=events.append):
        holder = json.loads(workspace.lock_path(tmp_path).read_text())
        assert holder["holder"] == "run A"
        t = threading.Thread(target=second)
        t.start()
        # B has found the lock taken (not a sleep that a busy machine may outlast).
        assert second_waits.wait(HANG_S), "run B never tried the lock"
        assert not second_in.is_set()
        events.append("A out")
    t.join(HANG_S)
    assert not t.is_alive(), "run B never got the lock"
    assert events[0].startswith("waiting for the workspace") and "run A" in events[0]
    assert events.index("A out") < events.index("B in")


def test_git_pull_refuses_another_branch(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", "-b", "dev", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "x"], check=True)  # fmt: skip
    with pytest.raises(workspace.SyncError, match="on branch 'dev'"):
        workspace.git_pull(tmp_path, "origin", "main")


def test_a_timed_out_command_is_stopped_with_its_children(tmp_path: Path) -> None:
    script = ("import subprocess, sys, time; "
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
              "print('child', p.pid, flush=True); time.sleep(600)")  # fmt: skip
    # The time-out must come after the command started its child: on a busy machine Python may
    # take longer than the first time-out to start, so each try gives it four times longer.
    for timeout_s in (3.0, 12.0, 48.0, 192.0):
        lines: list[str] = []
        code = run_command([sys.executable, "-c", script], tmp_path, lines.append, [], timeout_s)
        assert code is None  # stopped at its time-out, not ended by itself (it sleeps 600 s)
        if lines:
            break
    child = int(lines[0].split()[1])
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"


@pytest.mark.slow  # four DVC processes: ~20 s here
def test_dvc_step_streams_output_and_reports_what_ran(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "a": {"cmd": "echo epoch 1/1: loss 0.5 && echo a > a.txt", "outs": ["a.txt"]},
        "b": {"cmd": "cat a.txt > b.txt", "deps": ["a.txt"], "outs": ["b.txt"]},
        "bad": {"cmd": "exit 3", "deps": ["a.txt"]}}}))  # fmt: skip
    lines: list[str] = []
    first = run_step(tmp_path, "reproduce", ["b"], on_line=lines.append)
    assert first["planned"] == ["a", "b"] and first["ran"] == ["a", "b"]
    assert "epoch 1/1: loss 0.5" in lines
    again = run_step(tmp_path, "reproduce", ["b"], on_line=lines.append)
    assert again["ran"] == []
    assert run_step(tmp_path, "push", on_line=lines.append)["skipped"]
    with pytest.raises(StepError, match="failed to reproduce 'bad'") as err:
        run_step(tmp_path, "reproduce", ["bad"], on_line=lines.append)
    assert not err.value.transient


def test_reports_are_built_from_the_stage_files(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/fan.json").write_text(json.dumps({"war": 0.5, "uar": 0.25,
                                                           "test_clips": 4}))  # fmt: skip
    rows = report.metrics_rows(tmp_path, ["fan", "deep_emotion"])
    assert rows[0] == {"model": "fan", "war": 0.5, "uar": 0.25, "macro_f1": None,
                       "test_clips": 4, "best_epoch": None}  # fmt: skip
    gate = {"verdict": "fail", "reasons": ["3/21 trials quarantined (14%) > 10%"],
            "trials_read": 21, "passed": 18, "quarantined": 3,
            "failures_by_expectation": {"marks readable": 3},
            "outputs": {"quarantine": "data/interim/validated/quarantine.csv"}}  # fmt: skip
    md = report.gate_markdown(gate, tmp_path)
    assert "FAIL" in md and "3/21 trials quarantined" in md and "`marks readable` | 3" in md
    assert str(tmp_path / report.GATE_DOCS) in md
    run = {"models": {"fan": {"metrics": rows[0], "registered": {"name": "emoflow-fan",
                                                                 "version": "2"},
                              "promotion": {"outcome": "kept",
                                            "message": "kept champion v1"}}},
           "steps": {"train": {"planned": ["split", "train@fan"], "ran": ["train@fan"]}}}
    md = report.run_markdown(run)
    assert "| fan | 0.500 | 0.250 | – | 4 | – |" in md
    assert "`emoflow-fan` v2" in md and "kept champion v1" in md
    assert "train: ran train@fan; up to date: split" in md
    assert "- sync: the workspace as it was" in md and "- dvc push: not run" in md
    assert "- result: not committed (pipeline.sync.commit = none)" in md
    run["version"] = {"mode": "local", "branch": "retrain/r-1", "commit": "0123456789abcdef",
                      "files": ["dvc.lock"]}  # fmt: skip
    assert ("- result: commit 0123456789 on branch `retrain/r-1`: dvc.lock"
            in report.run_markdown(run))  # fmt: skip
    path = report.write_run_report(tmp_path, run)
    assert json.loads(path.read_text())["models"]["fan"]["registered"]["version"] == "2"
