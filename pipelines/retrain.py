"""The ``retrain`` flow: sync → validate → preprocess → train → evaluate → export → version →
convert → register → promote → push → report, over the DVC stages of dvc.yaml.

Thin on purpose: each task runs DVC stages (``emoflow.orchestration.dvc_step``) or one release
call; Prefect adds the schedule, retries with backoff for registry and storage calls, timeouts,
the logs and artifacts in the UI, and one run at a time. Run it from the repository root:

    python pipelines/retrain.py [--models fan] [--no-convert]     # once, without a server
    prefect deploy --prefect-file pipelines/prefect.yaml --all    # the weekly deployment
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Literal

# DVC's and emoflow's own loggers into the run's log in the UI (a deployment's worker sets the
# same in prefect.yaml; this covers `python pipelines/retrain.py`). Before prefect is imported.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "emoflow,dvc")

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.tasks import exponential_backoff

from emoflow.errors import EmoflowError
from emoflow.layout import Layout
from emoflow.orchestration import kubeflow, plan, release, report, versioning, workspace
from emoflow.orchestration.dvc_step import StepError, run_command, run_step
from emoflow.orchestration.retry import is_transient
from emoflow.tracking.store import tracking_uri

logging.getLogger("emoflow").setLevel(logging.INFO)  # Prefect's root level would drop INFO

HOUR = 3600.0
RETRIES = 3
BACKOFF_S = 10.0  # 10, 20, 40 s (± jitter) between the tries of a registry or storage call


class GateFailed(EmoflowError):
    """The validation gate failed: nothing was trained or registered."""


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry_condition_fn: retry only what :func:`is_transient` calls passing."""
    try:
        state.result()
    except Exception as exc:
        return bool(getattr(exc, "transient", False)) or is_transient(exc)
    return False


RETRY = {"retries": RETRIES, "retry_delay_seconds": exponential_backoff(BACKOFF_S),
         "retry_jitter_factor": 0.5, "retry_condition_fn": _retry_transient}  # fmt: skip


def _log_line(line: str) -> None:
    """One line of a stage's output into the task's log, at the level it announces."""
    logger = get_run_logger()
    upper = line[:60].upper()
    if " ERROR " in upper or upper.startswith(("ERROR", "TRACEBACK")):
        logger.error(line)
    elif " WARNING " in upper or upper.startswith("WARNING"):
        logger.warning(line)
    else:
        logger.info(line)


def _dvc(repo: Path, action: str, targets: list[str], timeout_h: float,
         remote: str | None = None) -> dict[str, Any]:  # fmt: skip
    result = run_step(repo, action, targets, on_line=_log_line, timeout_s=timeout_h * HOUR,
                      remote=remote)  # fmt: skip
    if action == "reproduce":
        ran = result["ran"]
        get_run_logger().info("dvc reproduce %s: ran %s; up to date: %s", " ".join(targets),
                              ", ".join(ran) or "nothing",
                              ", ".join(s for s in result["planned"] if s not in ran) or "-")
    return result


# --------------------------------------------------------------------------- tasks


@task(name="sync", **RETRY)
def sync(repo: Path, settings: plan.RunSettings) -> dict[str, Any]:
    """The workspace as it is, or git pull + dvc pull of the configured branch and remote."""
    logger = get_run_logger()
    s = settings.sync
    if s.mode == "workspace":
        logger.info("sync: using the workspace as it is (pipeline.sync.mode = workspace)")
        return {"mode": "workspace"}
    old, new = workspace.git_pull(repo, s.git_remote, s.branch)
    logger.info("sync: git %s/%s %s → %s", s.git_remote, s.branch, old[:10], new[:10])
    pulled = _dvc(repo, "pull", [], settings.timeout_h.data, s.dvc_remote)
    return {"mode": "pull", "git": [old, new], "dvc": pulled}


@task(name="validate")
def validate(repo: Path, settings: plan.RunSettings) -> dict[str, Any]:
    """The great-expectations gate (and the stages before it); a failing gate stops the flow."""
    started = time.time()
    try:
        result = _dvc(repo, "reproduce", plan.step_targets("validate", settings.models),
                      settings.timeout_h.data)  # fmt: skip
    except StepError as exc:
        summary = report.gate_summary(repo, newer_than=started)
        if summary is None or summary.get("verdict") != "fail":
            raise
        create_markdown_artifact(report.gate_markdown(summary, repo), key="validation-gate",
                                 description="The validation gate failed")  # fmt: skip
        reasons = "; ".join(summary.get("reasons") or [])
        docs = (repo / report.GATE_DOCS).resolve()
        raise GateFailed(f"validation gate failed: {reasons} (Data Docs: {docs})") from exc
    summary = report.gate_summary(repo)
    if summary is not None:
        create_markdown_artifact(report.gate_markdown(summary, repo), key="validation-gate",
                                 description="The validation gate's verdict")  # fmt: skip
    return result


@task(name="dvc-stages", task_run_name="{step}")
def stages(repo: Path, step: str, settings: plan.RunSettings) -> dict[str, Any]:
    """preprocess (trim, faces, split), train, evaluate, export: DVC reproduces what changed."""
    hours = settings.timeout_h.train if step == "train" else settings.timeout_h.data
    return _dvc(repo, "reproduce", plan.step_targets(step, settings.models), hours)


@task(name="train-on-cluster", task_run_name="train-{model}-on-kubeflow", **RETRY)
def train_on_cluster(repo: Path, model: str, settings: plan.RunSettings) -> dict[str, Any]:
    """train@<model> as a Kubeflow PyTorchJob on the cluster, then ``dvc commit`` of its outputs.

    Only when DVC finds the stage stale, as ``dvc repro`` would; retried only when the
    submission itself hit a passing API outage (a failed job is not retried: its own
    ``backoff_limit`` restarts already resumed it from its checkpoints).
    """
    logger = get_run_logger()
    target = f"train@{model}"
    stale = _dvc(repo, "status", [target], settings.timeout_h.data)["stale"]
    if not stale:
        logger.info("%s is up to date: no job submitted", target)
        return {"ran": [], "job": None}
    cfg = settings.kubeflow
    kubeflow.check_workspace(repo, cfg)
    run_id = str(runtime.flow_run.id)
    job = kubeflow.render_job(model, cfg, kubeflow.stage_command(repo / "dvc.yaml", model),
                              name=kubeflow.job_name(model, run_id),
                              labels={kubeflow.RUN_LABEL: run_id},
                              deadline_s=settings.timeout_h.train * HOUR,
                              annotations={kubeflow.BEFORE: kubeflow.model_hash(repo, model) or ""})
    done = kubeflow.run_job(job, settings.timeout_h.train * HOUR, cfg.poll_s, logger.info,
                            start_timeout_s=cfg.start_timeout_min * 60)  # fmt: skip
    kubeflow.check_trained(repo, model, done)
    committed = _dvc(repo, "commit", [target], settings.timeout_h.data)
    logger.info("%s: dvc commit recorded the job's outputs in dvc.lock", target)
    final = kubeflow.final_condition(done) or {}
    return {"ran": committed["committed"], "job": job["metadata"]["name"],
            "namespace": cfg.namespace, "condition": final.get("reason") or final.get("type")}


@task(name="push", **RETRY)
def push(repo: Path, settings: plan.RunSettings) -> dict[str, Any]:
    """dvc push of the run's outputs when a DVC remote is configured."""
    result = _dvc(repo, "push", [], settings.timeout_h.data, settings.sync.dvc_remote)
    get_run_logger().info("push: %s", result.get("skipped") or f"to {result.get('remote')}")
    return result


@task(name="version", **RETRY)
def version_result(repo: Path, settings: plan.RunSettings, ran: list[str]) -> dict[str, Any]:
    """Commit dvc.lock (and what it names that changed) on branch retrain/<run>
    (pipeline.sync.commit: none | local | push); the checkout itself stays as it is."""
    logger = get_run_logger()
    mode = settings.sync.commit
    if mode == "none":
        logger.info("version: not committed (pipeline.sync.commit = none)")
        return {"mode": mode}
    if not versioning.is_git_checkout(repo):
        logger.warning("version: %s is not a git checkout: dvc.lock not committed", repo)
        return {"mode": mode, "skipped": "not a git checkout"}
    name = runtime.flow_run.name or "run"
    branch = versioning.branch_name(f"{name}-{str(runtime.flow_run.id)[:8]}")
    message = (f"retrain {name}: dvc.lock after the run\n\nflow run {runtime.flow_run.id}; "
               f"stages run: {', '.join(ran) or 'none (all up to date)'}")  # fmt: skip
    done = versioning.commit_run(repo, branch, message)
    logger.info("version: %s on %s (%s)", done.commit[:10], branch,
                ", ".join(done.files) or "nothing changed since HEAD")  # fmt: skip
    return {"mode": mode, **done.as_dict()}


@task(name="push-branch", **RETRY)
def push_branch(repo: Path, settings: plan.RunSettings, branch: str) -> str:
    """git push of the run's branch (pipeline.sync.commit = push), after dvc push."""
    versioning.push_branch(repo, settings.sync.git_remote, branch)
    get_run_logger().info("push-branch: %s to %s", branch, settings.sync.git_remote)
    return branch


@task(name="convert", task_run_name="convert-{model}")
def convert_model(repo: Path, model: str, settings: plan.RunSettings) -> str:
    """A TensorRT engine beside the ONNX file, only where a GPU and TensorRT are present."""
    logger = get_run_logger()
    if not settings.convert:
        reason = "skipped: convert is off for this run"
    else:
        missing = release.convert_unavailable(Layout(repo).model_dir(model))
        reason = f"skipped: {missing}" if missing else ""
    if reason:
        logger.info("convert %s %s; the model is registered with its ONNX file", model, reason)
        return reason
    tail: list[str] = []
    code = run_command(["emoflow", "convert", "--model", model], repo, _log_line, tail,
                       settings.timeout_h.release * HOUR)  # fmt: skip
    if code != 0:
        raise StepError(f"emoflow convert --model {model} "
                        + ("timed out" if code is None else f"exited with {code}"), tail=tail)
    return f"built models/{model}/model.engine"


@task(name="register", task_run_name="register-{model}", **RETRY)
def register_model(repo: Path, model: str, settings: plan.RunSettings,
                   versioned: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """A registry version of models/<model> (@challenger), unless one holds this model.pt (then
    that one is @challenger: a retry after a partial failure adds no version); tagged with the
    run's commit."""
    tags = ({"retrain.commit": versioned["commit"], "retrain.branch": versioned["branch"],
             "retrain.flow_run": str(runtime.flow_run.id)} if versioned.get("commit") else {})
    out = release.register_once(Layout(repo).model_dir(model), model, settings.params,
                                Layout(repo).metrics(model), tags)  # fmt: skip
    if out["existing"]:
        get_run_logger().info("register: %s v%s already holds this model.pt: not registered "
                              "again; @challenger points at it", out["name"], out["version"])
    return out


@task(name="promote", task_run_name="promote-{model}", **RETRY)
def promote_model(repo: Path, model: str, version: str, settings: plan.RunSettings
            ) -> dict[str, Any]:  # fmt: skip
    """Score the challenger and the champion on today's test split; move @champion if it wins."""
    from emoflow.release.promote import promote as run_promote
    from emoflow.release.promote import report_path_for

    decision = run_promote(model, settings.metric, settings.min_delta,
                           report_path=report_path_for(model, repo),
                           challenger=version)  # fmt: skip
    get_run_logger().info("promote %s: %s", model, decision.message)
    return decision.record


@task(name="report")
def publish_report(repo: Path, run: dict[str, Any]) -> dict[str, Any]:
    """The run's report: markdown and table artifacts, and reports/retrain.json."""
    for m, info in run["models"].items():
        info["metrics"] = report.metrics_rows(repo, [m])[0]
        if info["registered"].get("run_id"):
            info["mlflow_run"] = f"{info['registered']['run_id']} at {tracking_uri()}"
    path = report.write_run_report(repo, run)
    create_markdown_artifact(report.run_markdown(run), key="retrain-report",
                             description="What this run did")  # fmt: skip
    create_table_artifact([info["metrics"] for info in run["models"].values()],
                          key="retrain-metrics", description="Test metrics per model")  # fmt: skip
    get_run_logger().info("report: %s", path)
    return run


# --------------------------------------------------------------------------- the flow


@flow(name="retrain", log_prints=True)
def retrain(models: list[str] | None = None, convert: bool | None = None,
            metric: str | None = None, min_delta: float | None = None,
            sync_mode: str | None = None, train_on: Literal["local", "kubeflow"] | None = None,
            repo: str = ".") -> dict[str, Any]:  # fmt: skip
    """Retrain, release and promote emoflow's models from the data in the workspace.

    Args:
        models: fan and/or deep_emotion [default: params.yaml pipeline.models].
        convert: build TensorRT engines where a GPU and TensorRT are present [pipeline.convert].
        metric: the test metric promotion compares [pipeline.promote_metric].
        min_delta: how much better the challenger must be to become champion
            [pipeline.promote_min_delta].
        sync_mode: workspace (as it is) or pull (git pull + dvc pull first) [pipeline.sync.mode].
        train_on: local (this process, torchrun) or kubeflow (a PyTorchJob per model on the
            cluster, pipeline.kubeflow) [pipeline.train_on].
        repo: the repository root the flow works in (the deployment's working directory).
    """
    root = Path(repo).resolve()
    logger = get_run_logger()
    settings = plan.resolve(root / "params.yaml", models=models, convert=convert, metric=metric,
                            min_delta=min_delta, sync_mode=sync_mode,
                            train_on=train_on)  # fmt: skip
    plan.check_targets(root / "dvc.yaml", settings.models)
    holder = f"flow run {runtime.flow_run.name} ({runtime.flow_run.id})"
    run: dict[str, Any] = {"flow_run": str(runtime.flow_run.id), "settings": settings.as_dict(),
                           "steps": {}, "models": {m: {} for m in settings.models}}  # fmt: skip
    data, release = (settings.timeout_h.data * HOUR, settings.timeout_h.release * HOUR)
    with workspace.workspace_lock(root, holder, on_wait=logger.warning), plan.inside(root):
        run["sync"] = sync.with_options(timeout_seconds=data)(root, settings)
        run["steps"]["validate"] = validate(root, settings)
        run["steps"]["preprocess"] = stages(root, "preprocess", settings)
        if settings.train_on == "kubeflow":
            jobs = {m: train_on_cluster(root, m, settings) for m in settings.models}
            run["steps"]["train"] = {"ran": [t for j in jobs.values() for t in j["ran"]],
                                     "planned": plan.step_targets("train", settings.models),
                                     "jobs": jobs}  # fmt: skip
        else:
            run["steps"]["train"] = stages(root, "train", settings)
        for step in ("evaluate", "export"):
            run["steps"][step] = stages(root, step, settings)
        ran = [s for step in run["steps"].values() for s in step.get("ran", [])]
        run["version"] = version_result(root, settings, ran)
        for m, info in run["models"].items():
            info["convert"] = convert_model(root, m, settings)
        for m, info in run["models"].items():
            info["registered"] = register_model.with_options(timeout_seconds=release)(
                root, m, settings, run["version"])
        for m, info in run["models"].items():
            info["promotion"] = promote_model.with_options(timeout_seconds=release)(
                root, m, info["registered"]["version"], settings)
        run["push"] = push.with_options(timeout_seconds=data)(root, settings)
        if settings.sync.commit == "push" and run["version"].get("branch"):
            run["version"]["pushed"] = push_branch(root, settings, run["version"]["branch"])
        return publish_report(root, run)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Run the retrain flow once, here.")
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--convert", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--metric", default=None)
    parser.add_argument("--min-delta", type=float, default=None)
    parser.add_argument("--sync", dest="sync_mode", choices=("workspace", "pull"), default=None)
    parser.add_argument("--train-on", choices=("local", "kubeflow"), default=None)
    parser.add_argument("--repo", default=".")
    retrain(**vars(parser.parse_args()))
