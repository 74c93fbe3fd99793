"""Starting the service with nothing to serve, or with bad settings: one line saying why and
exit 2, not BentoML's traceback of importing service.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from svc_helpers import SERVICE_DIR, free_port

pytestmark = pytest.mark.service


@pytest.mark.parametrize(("env", "line"), [
    ({}, "error: cannot start the service: no model configured: set EMOFLOW_MODEL_DIR (a model "
         "folder, e.g. models/fan) or EMOFLOW_MODEL_URI (e.g. models:/emoflow-fan@champion)"),
    ({"EMOFLOW_MODEL_DIR": "models/fan", "EMOFLOW_BACKEND": "cuda"},
     "error: cannot start the service: EMOFLOW_BACKEND: String should match pattern "
     "'^(auto|torch|onnx|tensorrt)$'"),
])  # fmt: skip
def test_a_service_that_cannot_start_says_why_in_one_line(env: dict[str, str], line: str,
                                                          tmp_path: Path) -> None:  # fmt: skip
    full = {k: v for k, v in os.environ.items() if not k.startswith("EMOFLOW_")}
    full.update(BENTOML_HOME=str(tmp_path / "bentoml"), BENTOML_DO_NOT_TRACK="true", **env)
    bentoml = Path(sys.executable).with_name("bentoml")
    # It exits by itself: no port is ever opened, so there is nothing to wait for but the exit.
    done = subprocess.run([str(bentoml), "serve", "service:Emotion", "--host", "127.0.0.1",
                           "--port", str(free_port())], cwd=SERVICE_DIR, env=full,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == line


def test_importing_the_service_contacts_no_registry(tmp_path: Path) -> None:
    # A registry that does not exist: resolving the release would fail (exit 2) and a sqlite
    # store would be created; importing service.py (what `bentoml build` and every worker do)
    # must do neither. The release is resolved when the server starts.
    db = tmp_path / "registry" / "mlflow.db"
    full = {k: v for k, v in os.environ.items() if not k.startswith(("EMOFLOW_", "MLFLOW_"))}
    full.update(BENTOML_HOME=str(tmp_path / "bentoml"), BENTOML_DO_NOT_TRACK="true",
                EMOFLOW_MODEL_URI="models:/emoflow-fan@champion",
                MLFLOW_TRACKING_URI=f"sqlite:///{db}")  # fmt: skip
    code = "import service; print(service.EmotionModel.models)"
    done = subprocess.run([sys.executable, "-c", code], cwd=SERVICE_DIR, env=full,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"  # no model declared outside a build
    assert not db.parent.exists()
