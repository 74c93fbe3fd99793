"""The registry's store is checked before MLflow touches it: absent, read-only or unreachable
stores are one line naming the store, in seconds, and nothing is created or half-written."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from emoflow.artifact import MODEL_FILE, save_state
from emoflow.inference import Predictor
from emoflow.models import build_model
from emoflow.release import promote as pr
from emoflow.tracking import registry as fetching
from emoflow.tracking import store
from emoflow.tracking.store import RegistryError

URI = "models:/emoflow-deep-emotion@champion"
PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow store: creating one takes seconds, copying it nothing."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("uri", "path"), [
    ("sqlite:////abs/dir/mlflow.db", Path("/abs/dir/mlflow.db")),
    ("sqlite:///mlflow.db", Path("mlflow.db")),
    ("sqlite:///runs/m.db?timeout=20", Path("runs/m.db")),
    ("sqlite://", None), ("sqlite:///:memory:", None), ("http://127.0.0.1:5000", None),
    ("postgresql://u@db/mlflow", None),
])  # fmt: skip
def test_sqlite_paths(uri: str, path: Path | None) -> None:
    assert store.sqlite_path(uri) == path


def test_an_absent_sqlite_registry_is_reported_and_not_created(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    db = tmp_path / "sub" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv(fetching.CACHE_ENV, str(tmp_path / "cache"))
    for call in (lambda: Predictor.from_uri(URI), lambda: fetching.download_version(URI),
                 lambda: pr.promote("deep_emotion", report_path=tmp_path / "p.json")):
        with pytest.raises(RegistryError, match=r"registry sqlite:///\S+ does not exist"):
            call()
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no sub/, no cache, no report
    # register is how a store comes to be: it may create it.
    store.check_store(must_exist=False, writable=True)


def test_a_server_that_is_down_is_reported_at_once(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    server = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    with pytest.raises(RegistryError, match=rf"tracking server {server} is not reachable"):
        fetching.get_version(URI)
    # The registry URI is checked too, when it names another store.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'absent.db'}")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", server)
    with pytest.raises(RegistryError, match=rf"tracking server {server}"):
        store.check_store(must_exist=False)


def test_mlflow_store_failures_are_one_line() -> None:
    from mlflow.exceptions import MlflowException

    with pytest.raises(RegistryError) as caught, store.store_errors():
        raise MlflowException("(sqlite3.OperationalError) attempt to write a readonly database\n"
                              "[SQL: INSERT INTO logged_models ...]")  # fmt: skip
    assert str(caught.value).endswith(": (sqlite3.OperationalError) attempt to write a readonly "
                                      "database")  # fmt: skip
    assert "\n" not in str(caught.value)


def _unprivileged() -> list[str]:
    """A command prefix without the right to write a read-only file: root keeps it through
    CAP_DAC_OVERRIDE, dropped from the bounding set (as a read-only mount would refuse)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a file read-only to us")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.slow  # two CLI runs that load torch, and a migrated store: ~30 s here
def test_register_and_promote_on_a_read_only_registry_are_one_line(
        empty_db: Path, tmp_path: Path) -> None:  # fmt: skip
    db = tmp_path / "mlflow.db"
    shutil.copy(empty_db, db)
    folder = tmp_path / "models" / "deep_emotion"
    folder.mkdir(parents=True)
    save_state(folder / MODEL_FILE, {
        "arch": "deep_emotion", "classes": ["a", "b", "c"], "model_config": {},
        "state_dict": build_model("deep_emotion", 3).state_dict(), "epoch": 1, "val": {},
        "image_size": 48, "grayscale": True, "frames_per_clip": None})  # fmt: skip
    db.chmod(0o444)
    before = db.read_bytes()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    env.pop("MLFLOW_REGISTRY_URI", None)
    for args in (["register", "--model", "deep_emotion", "--model-dir", str(folder),
                  "--params", str(PARAMS)],
                 ["promote", "--model", "deep_emotion", "--report", str(tmp_path / "p.json")]):
        done = subprocess.run([*_unprivileged(), sys.executable, "-m", "emoflow.cli", *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300, check=False)  # fmt: skip
        assert done.returncode == 2, done.stderr[-3000:]
        assert "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1] == (
            f"error: registry sqlite:///{db} is read-only ({db} or its folder is not writable): "
            "register and promote write to it")  # fmt: skip
    assert db.read_bytes() == before and not (tmp_path / "p.json").exists()
    assert not (tmp_path / "mlartifacts").exists()

