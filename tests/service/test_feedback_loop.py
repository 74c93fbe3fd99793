"""The feedback loop end to end, as the issue's "done when" reads: a real ``bentoml serve`` keeps
its unsure answers (clip + record) in a folder store and takes a correction; ``emoflow review
pull`` makes the queue; the real labelling window (Xvfb + xdotool, the GUI harness of
tests/integration/test_labelling_gui.py) labels it; ``emoflow review accept`` versions it; the
Prefect retrain flow trains on it and commits ``dvc.lock`` on its own branch.

Needs what the GUI test needs (``make label-env``, Xvfb, xdotool; skipped with the reason
otherwise) besides the service and flow tests' servers.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from svc_helpers import API_KEY, face_frames, serve, write_clip

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from test_dvc_pipeline import _run, make_repo
from test_feedback import _wait_for
from test_labelling_gui import MarkSession, display  # noqa: F401  (the Xvfb fixture)

from emoflow.orchestration import local
from emoflow.orchestration.dvc_step import stop_tree

pytestmark = [pytest.mark.service, pytest.mark.slow]

FLOW_TIMEOUT_S = 1800
FEEDBACK_LABEL = "surprise"


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = local.free_port()
    proc = local.start_server(home, port, home / "server.log")
    env = local.prefect_env(home, port)
    env.pop("MLFLOW_TRACKING_URI", None)  # the repository's own mlflow.db
    try:
        yield env
    finally:
        stop_tree(proc.pid)


def _emoflow(repo: Path, *args: str) -> str:
    return _run(repo, sys.executable, "-m", "emoflow.cli", *args)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_kept_clips_are_labelled_versioned_and_retrained_on(
        display: str, tiny_fan: Path, prefect: dict[str, str],  # noqa: F811
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:  # fmt: skip
    # -- a served model keeps what it was unsure of; a downstream system corrects one answer
    store = tmp_path / "capture"
    env = {"EMOFLOW_MODEL_DIR": str(tiny_fan), "EMOFLOW_API_KEY": API_KEY,
           "EMOFLOW_CAPTURE": "clips", "EMOFLOW_CAPTURE_STORE": str(store),
           "EMOFLOW_KEEP_BELOW_CONFIDENCE": "0.99", "EMOFLOW_KEEP_BELOW_MARGIN": "0",
           "EMOFLOW_CPU_WORKERS": "1"}  # fmt: skip
    ids = []
    # a short folder: bentoml's unix sockets live under it (a path limit of ~100 characters)
    with serve(tmp_path_factory.mktemp("srv"), env) as server, server.client() as c:
        for n in (20, 24, 28):  # three different clips of one real face
            clip = write_clip(tmp_path / f"served{n}.mp4", face_frames(n))
            r = c.post("/predict", files={"video": (clip.name, clip.read_bytes(), "video/mp4")})
            assert r.status_code == 200, r.text
            ids.append(r.json()["prediction_id"])
        for pid in ids:
            _wait_for("the kept clip and record", lambda p=pid: (
                store / "records" / f"{p}.json").exists() and (
                store / "clips" / f"{p}.mp4").exists())  # fmt: skip
        fb = c.post("/feedback", json={"prediction_id": ids[1], "label": FEEDBACK_LABEL})
        assert fb.status_code == 200, fb.text

    # -- the pipeline's repository, as a lab has it
    repo = make_repo(tmp_path / "repo", tmp_path / "remote", ("src", "pipelines"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["deep_emotion"]["epochs"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pipeline")

    # -- review pull: least confident first, the feedback label pre-filled
    queue, marks = repo / "data/review/queue", repo / "data/review/marks"
    _emoflow(repo, "review", "pull", "--store", str(store))
    rows = _rows(queue / "trials.csv")
    assert sorted(r["prediction_id"] for r in rows) == sorted(ids)
    assert [float(r["confidence"]) for r in rows] == sorted(float(r["confidence"]) for r in rows)
    prefill = {r["prediction_id"]: r["emotion"] for r in rows}
    assert prefill[ids[1]] == FEEDBACK_LABEL

    # -- a person labels them in the real window: confirms the correction, changes the others
    session = MarkSession(display, [str(queue / "trials.csv"), "--marks-dir", str(marks),
                                    "--labeller", "qa"], repo)  # fmt: skip
    expected = {}
    for n, row in enumerate(rows, start=1):
        _wait_for(f"clip {n} in the window", lambda n=n, t=row["trial_id"]:
                  f"clip {n}/{len(rows)}: {t}" in session.output())  # fmt: skip
        digit = [] if row["prediction_id"] == ids[1] else [str(n)]  # 1 anger, 2 disgust, ...
        expected[row["prediction_id"]] = FEEDBACK_LABEL if not digit else \
            ["anger", "disgust", "fear"][n - 1]
        # start at the first frame, end at the last, peak at frame 3; then the class, save
        session.keys("Home", "Home", "s", "End", "s", "Home", "d", "d", "d", "s", *digit, "e",
                     "q")  # fmt: skip
    out = session.wait()
    assert f"{len(rows)} of {len(rows)} clips marked" in out, out

    # -- review accept: into data/reviewed, the clips under DVC; twice adds nothing
    _emoflow(repo, "review", "accept")
    reviewed = _rows(repo / "data/reviewed/reviewed.csv")
    assert {r["prediction_id"]: r["emotion"] for r in reviewed} == expected
    assert {r["labeller"] for r in reviewed} == {"qa"}
    assert {r["served_label"] for r in reviewed} <= set(params["classes"])
    assert (repo / "data/reviewed/clips.dvc").is_file()
    before = (repo / "data/reviewed/reviewed.csv").read_bytes()
    _emoflow(repo, "review", "accept")
    assert (repo / "data/reviewed/reviewed.csv").read_bytes() == before
    _run(repo, "git", "add", "data/reviewed")
    _run(repo, "git", "-c", "user.name=qa", "-c", "user.email=qa@t", "commit", "-qm", "reviewed")
    head = _run(repo, "git", "rev-parse", "HEAD").strip()

    # -- the retrain run trains on them and leaves its result on a branch of its own
    done = subprocess.run([sys.executable, "pipelines/retrain.py", "--models", "deep_emotion",
                           "--no-convert"], cwd=repo, env=prefect, capture_output=True,
                          text=True, timeout=FLOW_TIMEOUT_S, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    run = json.loads((repo / "reports/retrain.json").read_text())
    clips = {r["trial_id"]: r for r in _rows(repo / "data/processed/clips/clips.csv")}
    for r in reviewed:
        assert clips[r["trial_id"]]["label"] == r["emotion"]
        assert clips[r["trial_id"]]["participant"] == r["participant"]
    split_of: dict[str, set[str]] = {}
    for s in ("train", "val", "test"):
        for r in _rows(repo / f"data/processed/splits/{s}.csv"):
            split_of.setdefault(r["participant"], set()).add(s)
    assert all(len(sets) == 1 for sets in split_of.values())  # subject-independent
    assert {r["participant"] for r in reviewed} <= set(split_of)  # trained or tested on

    version = run["version"]
    branch, commit = version["branch"], version["commit"]
    assert branch.startswith("retrain/") and "dvc.lock" in version["files"]
    assert _run(repo, "git", "rev-parse", branch).strip() == commit
    assert _run(repo, "git", "rev-parse", f"{commit}^").strip() == head
    assert _run(repo, "git", "rev-parse", "HEAD").strip() == head  # the checkout stays put
    assert _run(repo, "git", "show", f"{commit}:dvc.lock") == (repo / "dvc.lock").read_text()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert "data/reviewed" in {d["path"] for d in lock["stages"]["trim"]["deps"]}

    from mlflow import MlflowClient

    registered = run["models"]["deep_emotion"]["registered"]
    mv = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}").get_model_version(
        registered["name"], registered["version"])
    assert mv.tags["retrain.commit"] == commit and mv.tags["retrain.branch"] == branch
