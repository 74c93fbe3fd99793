"""The service against phone videos, lying files and request smuggling (issue 17): every answer
is the documented JSON, and no request costs more than the limits allow."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import zlib
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
from hostile_videos import drifting, framed, lying_duration, truncated, with_raw_title, write_video
from svc_helpers import API_KEY, Server, face_frames

from emoflow.inference import ClipResult

pytestmark = pytest.mark.service


def _post(s: Server, name: str, data: bytes) -> httpx.Response:
    with s.client() as c:
        return c.post("/predict", files={"video": (name, data, "video/mp4")})


def test_phone_shaped_clips_are_answered(server: Server, tmp_path: Path) -> None:
    wide = write_video(tmp_path / "w600.mp4", drifting(framed((600, 360)), 8), fps=10)
    upright = drifting(framed((360, 480)), 8)
    phone = write_video(tmp_path / "phone.mp4", [np.rot90(f, -1) for f in upright], fps=10,
                        rotation=90)  # fmt: skip
    odd = with_raw_title(wide, tmp_path / "title.mp4")
    for clip, (w, h) in ((wide, (600, 360)), (phone, (360, 480)), (odd, (600, 360))):
        r = _post(server, clip.name, clip.read_bytes())
        assert r.status_code == 200, (clip.name, r.text)
        result = ClipResult.model_validate(r.json())
        assert result.faces_found == 8 and result.faces_seen == 1
        assert result.face_choice == "largest" and not result.warnings
        for f in result.frames:
            assert f.box[2] <= w and f.box[3] <= h  # upright picture's pixels


def test_a_cut_off_upload_is_answered_with_a_warning(server: Server, tmp_path: Path) -> None:
    clip = write_video(tmp_path / "whole.mp4", face_frames(30), fps=10,
                       options={"movflags": "faststart"})  # fmt: skip
    r = _post(server, "cut.mp4", truncated(clip, tmp_path / "cut.mp4", 0.5).read_bytes())
    assert r.status_code == 200, r.text
    assert any("truncated" in w for w in r.json()["warnings"])


def test_a_header_that_hides_the_length_does_not_get_past_the_limit(
        server: Server, tmp_path: Path) -> None:  # fmt: skip
    clip = write_video(tmp_path / "5s.mp4", face_frames(50), fps=10)  # the limit is 3 s
    r = _post(server, "liar.mp4", lying_duration(clip, tmp_path / "liar.mp4", 1.0).read_bytes())
    assert r.status_code == 422 and r.json()["reason"] == "too_long", r.text
    assert "decoded past" in r.json()["error"]


def test_frames_larger_than_the_limit_are_refused_before_decoding(
        server: Server, tmp_path: Path) -> None:  # fmt: skip
    big = write_video(tmp_path / "big.mp4", [np.full((960, 1280, 3), 80, np.uint8)] * 2)
    r = _post(server, "big.mp4", big.read_bytes())  # 1.2 MP; the tests' limit is 1 MP
    assert r.status_code == 422 and r.json()["reason"] == "too_large_frames", r.text


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width``×``height`` but holds one row of data (875 bytes would
    otherwise decode to gigabytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))  # fmt: skip

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * (1 + 3 * width))) + chunk(b"IEND", b""))


def test_a_face_image_declaring_a_huge_size_is_refused_unread(server: Server) -> None:
    with server.client() as c:
        r = c.post("/predict_faces", files=[("faces", ("huge.png", _png_header_only(30000, 30000),
                                                       "image/png"))])  # fmt: skip
    assert r.status_code == 422 and r.json()["reason"] == "too_large_image", r.text
    assert "larger than a face crop may be" in r.json()["error"]


def _raw(server: Server, head: str, body_chunks: list[bytes]) -> bytes:
    """Send a request by hand; return what the server answered before closing (or b"")."""
    url = urlparse(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=120) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(head.encode())
            for c in body_chunks:
                s.sendall(c)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while data := s.recv(65536):
                answer += data
                if b"\r\n\r\n" in answer and b'"reason"' in answer:
                    break
        return answer


def _metric(server: Server, reason: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    m = re.search(rf'emoflow_rejected_requests_total{{reason="{reason}"}} ([0-9.e+]+)', text)
    return float(m.group(1)) if m else 0.0


def _head(extra: str) -> str:
    return (f"POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary=b0undary\r\n{extra}\r\n")


def test_a_length_beside_chunked_encoding_is_400(server: Server) -> None:
    answer = _raw(server, _head("Content-Length: 10\r\nTransfer-Encoding: chunked\r\n"),
                  [b"5\r\nhello\r\n"])  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 400") and b'"invalid_request"' in answer, answer[:300]


def test_a_chunked_body_is_cut_at_the_limit_not_read_to_its_end(server: Server) -> None:
    before = _metric(server, "too_large")
    part = b"--b0undary\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n"
    part += b"Content-Type: video/mp4\r\n\r\n"
    block = b"0" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(part), part)]
    chunks += [b"%x\r\n%s\r\n" % (len(block), block)] * 20  # 1.25 MB; the limit is 1 MB
    # The body never ends (no last chunk): a server that reads to the end never answers.
    answer = _raw(server, _head("Transfer-Encoding: chunked\r\n"), chunks)
    if answer:  # the answer can be lost to the reset of a connection closed with data unread
        assert answer.startswith(b"HTTP/1.1 413") and b'"too_large"' in answer, answer[:300]
    assert _metric(server, "too_large") == before + 1
