"""The emotion service as users call it: a real ``bentoml serve`` on 127.0.0.1 (conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from svc_helpers import API_KEY, Server

from emoflow.client import ServiceError, predict
from emoflow.inference import ClipResult

pytestmark = pytest.mark.service


def _post(s: Server, name: str, data: bytes, ctype: str = "video/mp4") -> httpx.Response:
    with s.client() as c:
        return c.post("/predict", files={"video": (name, data, ctype)})


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_a_clip_with_a_face_gets_its_emotion(server: Server, clips: dict[str, Path]) -> None:
    r = predict(clips["face"], url=server.url, api_key=API_KEY)
    assert isinstance(r, ClipResult)
    assert r.label in r.probabilities and abs(sum(r.probabilities.values()) - 1) < 1e-4
    assert r.model.name == "emoflow-fan" and r.model.backend == "onnx"
    assert r.frames and abs(sum(f.weight for f in r.frames) - 1) < 1e-4
    for f in r.frames:
        x0, y0, x1, y1 = f.box
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
        assert f.time_s == pytest.approx(f.index / 10.0)
    assert r.timings_ms.total >= r.timings_ms.faces > 0 and r.timings_ms.model > 0


def test_face_crops_get_the_same_result_shape_without_boxes(
        server: Server, face_crops: list[bytes]) -> None:
    with server.client() as c:
        files = [("faces", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(face_crops)]
        r = c.post("/predict_faces", files=files)
    assert r.status_code == 200, r.text
    result = ClipResult.model_validate(r.json())
    assert len(result.frames) == len(face_crops) and all(f.box is None for f in result.frames)


def test_info_names_the_model_backend_and_why(server: Server) -> None:
    with server.client() as c:
        info = c.get("/info").json()
    assert info["model"]["name"] == "emoflow-fan" and info["model"]["backend_reason"]
    assert info["classes"] and info["preprocessing"]["size"] > 0
    assert info["limits"] == {"max_upload_mb": 1.0, "max_duration_s": 3.0, "max_megapixels": 1.0,
                              "max_faces": 64.0, "timeout_s": 110.0}  # fmt: skip


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_without_the_key_401_but_health_and_metrics_stay_open(server: Server, key: str | None
                                                               ) -> None:  # fmt: skip
    with server.client(key) as c:
        assert c.post("/predict", files={"video": ("a.mp4", b"x")}).status_code == 401
        assert c.get("/info").status_code == 401
        assert c.get("/livez").status_code == 200 and c.get("/readyz").status_code == 200
        assert c.get("/metrics").status_code == 200


def test_the_bearer_scheme_is_case_insensitive_and_the_docs_need_no_key(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for scheme in ("bearer", "BEARER", "Bearer"):
            assert c.get("/info", headers={"Authorization": f"{scheme} {API_KEY}"}
                         ).status_code == 200, scheme  # fmt: skip
        assert c.get("/info", headers={"Authorization": f"bearer {API_KEY}x"}).status_code == 401
        # The OpenAPI UI at / loads without a key: the page, its scripts and the schema.
        page = c.get("/")
        assert page.status_code == 200 and "swagger" in page.text.lower()
        assert c.get("/static_content/swagger-initializer.js").status_code == 200
        schema = c.get("/docs.json")
        assert schema.status_code == 200 and "/predict" in schema.json()["paths"]


@pytest.mark.parametrize(("name", "data", "ctype", "status", "reason"), [
    ("big.mp4", b"0" * (2 << 20), "video/mp4", 413, "too_large"),
    ("notes.txt", b"hello", "text/plain", 415, "unsupported_type"),
    ("clip.mp4", b"hello, not a video", "video/mp4", 415, "not_video"),
    ("clip.mp4", b"", "video/mp4", 422, "not_video"),
])  # fmt: skip
def test_bad_uploads_are_4xx_with_the_reason(server: Server, name: str, data: bytes, ctype: str,
                                             status: int, reason: str) -> None:  # fmt: skip
    r = _post(server, name, data, ctype)
    assert r.status_code == status and r.json()["reason"] == reason, r.text


def test_a_malformed_multipart_body_is_400_with_the_documented_body(server: Server) -> None:
    # Found by schemathesis: Starlette's own "Invalid multipart data." came back as {"detail"}.
    boundary = "7c5156fb04a2177cf9e322ad31ebde44"
    with server.client() as c:
        r = c.post("/predict", content=f"--{boundary}\r\nNone--{boundary}--\r\n".encode(),
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400 and r.json()["reason"] == "invalid_request", r.text
    assert "multipart" in r.json()["error"].lower()


def test_long_clips_corrupt_clips_and_faceless_clips_are_422(
        server: Server, clips: dict[str, Path]) -> None:
    r = _post(server, "long.mp4", clips["long"].read_bytes())
    assert r.status_code == 422 and r.json()["reason"] == "too_long"
    r = _post(server, "blank.mp4", clips["blank"].read_bytes())
    assert r.status_code == 422 and "no usable face" in r.json()["error"]
    data = clips["face"].read_bytes()
    r = _post(server, "cut.mp4", data[: len(data) // 2])
    assert r.status_code in (415, 422) and r.json()["reason"] in ("not_video", "corrupt", "no_face")


def test_file_names_never_leave_the_temp_folder_nor_files_behind(
        server: Server, clips: dict[str, Path]) -> None:
    before = set(_files(server.tmp))  # the servers' own files (e.g. a session file at start)
    for name in ("../../etc/x.mp4", "..\\..\\x.mp4", "/abs/y.mp4", "a" * 300 + ".mp4"):
        r = _post(server, name, b"not a video")
        assert r.status_code == 415, (name, r.text)
    r = _post(server, "../../etc/x.mp4", clips["face"].read_bytes())
    assert r.status_code == 200, r.text
    assert set(_files(server.tmp)) == before  # every request's folder went with it
    root = server.tmp.parent
    assert not list(root.rglob("x.mp4")) and not list(root.rglob("y.mp4"))


def test_metrics_count_predictions_rejections_and_stage_latency(
        server: Server, clips: dict[str, Path]) -> None:
    r = predict(clips["face"], url=server.url, api_key=API_KEY)
    with pytest.raises(ServiceError, match="401"):
        predict(clips["face"], url=server.url, api_key="wrong")
    text = httpx.get(f"{server.url}/metrics").text
    assert (f'emoflow_predictions_total{{endpoint="predict",label="{r.label}",'
            f'version="{r.model.version}"}}') in text
    assert 'emoflow_rejected_requests_total{reason="unauthorized"}' in text
    assert 'emoflow_stage_seconds_bucket{endpoint="predict",le="+Inf",stage="faces"}' in text


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_every_response_matches_the_schema(server: Server) -> None:
    st = Path(sys.executable).with_name("st")
    cmd = [str(st), "run", f"{server.url}/docs.json", "--url", server.url,
           "-H", f"Authorization: Bearer {API_KEY}",
           "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance,"
           "content_type_conformance", "--max-examples", "15",
           "--generation-database", "none", "--phases", "examples,coverage,fuzzing",
           "--request-timeout", "60",
           # A fixed seed keeps CI's verdict reproducible; SCHEMATHESIS_SEED=<n> explores anew
           # (a random run found the malformed-multipart body tested above).
           "--seed", os.environ.get("SCHEMATHESIS_SEED", "20261128")]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"})  # fmt: skip
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


@pytest.mark.slow
def test_eight_clients_fifty_requests_each_all_answered_same_label(
        server: Server, face_crops: list[bytes]) -> None:
    files = [("faces", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(face_crops)]

    def client(_: int) -> list[tuple[int, str]]:
        with server.client(timeout=120) as c:
            out = []
            for _ in range(50):
                r = c.post("/predict_faces", files=files)
                out.append((r.status_code, r.json().get("label", "")))
            return out

    with ThreadPoolExecutor(8) as pool:
        answers = [a for chunk in pool.map(client, range(8)) for a in chunk]
    assert len(answers) == 400 and {s for s, _ in answers} == {200}
    assert len({label for _, label in answers}) == 1
