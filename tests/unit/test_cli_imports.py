"""The CLI answers ``--help`` and bad arguments before importing any heavy library: each case
runs the real ``emoflow`` entry point in a fresh interpreter and reads ``sys.modules`` after it.

Not a timing test: what is imported is the cause of the 7-25 s and ~1.1 GB start-up, and it
does not depend on the machine's load.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "mlflow", "cv2", "dlib", "av", "bentoml", "prefect", "great_expectations",
         "sklearn", "pandas", "onnx", "onnxruntime", "scipy", "matplotlib")  # fmt: skip
# Runs the installed command's entry point (emoflow.cli:run), then reports what it imported.
PROBE = f"""
import json, sys
argv = json.loads(sys.argv[1])
sys.argv = ["emoflow", *argv]
from emoflow.cli import run
try:
    run()
    rc = 0
except SystemExit as exc:
    rc = exc.code if isinstance(exc.code, int) else 1
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
print("\\n" + json.dumps({{"rc": rc, "heavy": heavy}}))
"""
ENV_DROP = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def _cli(args: list[str], cwd: Path, **env: str) -> tuple[int, list[str], str]:
    """(exit code, heavy modules imported, stderr) of ``emoflow <args>`` run in ``cwd``."""
    full = {k: v for k, v in os.environ.items() if k not in ENV_DROP} | env
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["rc"], report["heavy"], done.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize(("args", "message"), [
    (["--help"], ""),
    (["predict", "--help"], ""),
    (["predict", "--backend", "cuda", "clip.mp4"], "unknown backend 'cuda'"),
    (["promote", "--backend", "tpu"], "unknown backend 'tpu'"),
    (["predict", "--model-dir", "m", "--model-uri", "models:/emoflow-fan@champion", "c.mp4"],
     "not both"),
    (["promote", "--min-delta", "nan"], "finite number"),
    (["promote", "--min-delta", "inf"], "finite number"),
    (["promote", "--min-delta", "-0.1"], "finite number"),
    (["export", "--opset", "11"], "--opset"),
    (["export", "--opset", "21"], "--opset"),
    (["train", "--epochs", "3"], "No such option"),
    (["train", "--model", "resnet"], "'resnet' is not one of fan, deep_emotion"),
    (["register", "--model", "FAN"], "'FAN' is not one of fan, deep_emotion"),
])  # fmt: skip
def test_help_and_bad_arguments_import_nothing_heavy(args: list[str], message: str,
                                                     tmp_path: Path) -> None:  # fmt: skip
    rc, heavy, err = _cli(args, tmp_path)
    assert rc == (0 if "--help" in args else 2), err
    assert message in err
    assert "Traceback" not in err
    assert heavy == [], f"{args} imported {heavy}"
    assert list(tmp_path.iterdir()) == []  # nothing written (no mlflow.db, no reports/)


def test_an_absent_registry_is_one_line_and_nothing_is_created(tmp_path: Path) -> None:
    uri = ["predict", "--model-uri", "models:/emoflow-fan@champion", "clip.mp4"]
    rc, heavy, err = _cli(uri, tmp_path)  # the default store: ./mlflow.db
    assert rc == 2 and heavy == []
    assert err.strip() == (f"error: registry sqlite:///{tmp_path.resolve()}/mlflow.db does not "
                           f"exist (no file {tmp_path.resolve()}/mlflow.db): register a model "
                           "first (`emoflow register`), or set MLFLOW_TRACKING_URI to the "
                           "registry's store")  # fmt: skip
    db = tmp_path / "registry" / "mlflow.db"
    rc, _, err = _cli(uri, tmp_path, MLFLOW_TRACKING_URI=f"sqlite:///{db}")
    assert rc == 2 and f"registry sqlite:///{db} does not exist" in err
    assert list(tmp_path.iterdir()) == []  # neither the file nor its folder


def test_a_tracking_server_that_is_down_fails_at_once_with_its_uri(tmp_path: Path) -> None:
    # MLflow alone retries for 4 min 22 s (7 retries, backoff factor 2); the probe says it now.
    server = f"http://127.0.0.1:{_closed_port()}"
    rc, heavy, err = _cli(["predict", "--model-uri", "models:/emoflow-fan@champion", "c.mp4"],
                          tmp_path, MLFLOW_TRACKING_URI=server)  # fmt: skip
    assert rc == 2 and heavy == []
    assert err.strip() == (f"error: tracking server {server} is not reachable (Connection "
                           "refused): start it, or set MLFLOW_TRACKING_URI to one that runs")


def test_the_cli_knows_the_models_and_their_opsets() -> None:
    from typing import get_args

    import typer.main

    from emoflow.cli import MODELS, app
    from emoflow.models import ModelName
    from emoflow.release.export import OPSET, OPSETS

    assert get_args(ModelName) == MODELS and set(OPSETS) == set(MODELS)

    opset = next(p for p in typer.main.get_command(app).commands["export"].params
                 if p.name == "opset")  # fmt: skip
    assert opset.default == OPSET
    assert (opset.min, opset.max) == (min(r.start for r in OPSETS.values()),
                                                max(r.stop - 1 for r in OPSETS.values()))
