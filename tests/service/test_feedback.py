"""The service keeps what it was unsure of and takes corrections (a real ``bentoml serve`` with
``EMOFLOW_CAPTURE=clips`` into a folder store); a broken store never costs an answer."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from svc_helpers import API_KEY, Server, serve

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def capturing(tiny_fan: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[Server, Path]]:  # fmt: skip
    root = tmp_path_factory.mktemp("serve_capture")
    store = root / "capture"
    # Every answer of the tiny model is below 0.99: each clip is kept; the sample rate is off.
    env = {"EMOFLOW_MODEL_DIR": str(tiny_fan), "EMOFLOW_API_KEY": API_KEY,
           "EMOFLOW_CAPTURE": "clips", "EMOFLOW_CAPTURE_STORE": str(store),
           "EMOFLOW_KEEP_BELOW_CONFIDENCE": "0.99", "EMOFLOW_KEEP_BELOW_MARGIN": "0",
           "EMOFLOW_CPU_WORKERS": "1"}  # fmt: skip
    with serve(root, env) as s:
        yield s, store


def _metric(server: Server, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait_for(what: str, check: object, timeout: float = 60.0) -> None:
    """Wait for a write that happens behind the answer (the event, with a bound for hangs)."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout} s")
        time.sleep(0.1)


def test_unsure_answers_are_kept_with_their_clip_and_can_be_corrected(
        capturing: tuple[Server, Path], clips: dict[str, Path]) -> None:  # fmt: skip
    server, store = capturing
    with server.client() as c:
        r = c.post("/predict", files={"video": ("face.mp4", clips["face"].read_bytes(),
                                                "video/mp4")})  # fmt: skip
        assert r.status_code == 200, r.text
        answer = r.json()
        pid = answer["prediction_id"]
        assert re.fullmatch(r"[0-9a-f]{32}", pid)
        record_file = store / "records" / f"{pid}.json"
        _wait_for("the record", record_file.exists)
        record = json.loads(record_file.read_text())
        assert record["label"] == answer["label"] and record["clip"] == f"clips/{pid}.mp4"
        assert record["keep_reasons"] and record["keep_reasons"][0].startswith("confidence")
        assert (store / record["clip"]).read_bytes() == clips["face"].read_bytes()
        other = next(x for x in answer["probabilities"] if x != answer["label"])
        fb = c.post("/feedback", json={"prediction_id": pid, "label": other, "source": "qa"})
        assert fb.status_code == 200, fb.text
        saved = json.loads((store / "feedback" / f"{pid}.json").read_text())
        assert saved["label"] == other and saved["served_label"] == answer["label"]
        for body, status, reason in (
                ({"prediction_id": "f" * 32, "label": other}, 404, "unknown_prediction"),
                ({"prediction_id": pid, "label": "joy-ish"}, 422, "unknown_label"),
                ({"prediction_id": "../records/x", "label": other}, 400, "invalid_request")):
            bad = c.post("/feedback", json=body)
            assert bad.status_code == status and bad.json()["reason"] == reason, bad.text
    assert _metric(server, "emoflow_feedback_total", agrees="false") == 1
    assert _metric(server, "emoflow_captured_total", kind="clip") >= 1
    assert _metric(server, "emoflow_prediction_confidence_count", endpoint="predict") >= 1
    assert not list((server.tmp).rglob("*.mp4"))  # the spool emptied behind the write


def test_a_store_that_fails_costs_no_answer_and_is_counted(
        capturing: tuple[Server, Path], clips: dict[str, Path]) -> None:  # fmt: skip
    server, store = capturing
    before = _metric(server, "emoflow_capture_failures_total", kind="record")
    shutil.rmtree(store, ignore_errors=True)
    store.write_text("the store is gone: a file where its folder was")
    try:
        with server.client() as c:
            r = c.post("/predict", files={"video": ("face.mp4", clips["face"].read_bytes(),
                                                    "video/mp4")})  # fmt: skip
        assert r.status_code == 200, r.text
        _wait_for("the failure count",
                  lambda: _metric(server, "emoflow_capture_failures_total", kind="record")
                  > before)  # fmt: skip
    finally:
        store.unlink()
