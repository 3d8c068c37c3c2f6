"""The hand-written HTTP/1.1 layer, over raw sockets: keep-alive, chunked bodies, rejects."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer


@pytest.fixture
def sim_config() -> SimulatorConfig:
    return SimulatorConfig(seed=1, max_body_bytes=1024)


@pytest.fixture
def conn(sim: SimulatorServer) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as sock:
        yield sock


def _read_response(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return lines[0], headers, body


def test_keep_alive_serves_several_requests(conn: socket.socket) -> None:
    for _ in range(3):
        conn.sendall(b"GET /_sim/health HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = _read_response(conn)
        assert status == "HTTP/1.1 200 OK"
        assert headers["connection"] == "keep-alive"
        assert json.loads(body) == {"ok": True}


def test_http_1_0_closes_after_the_response(conn: socket.socket) -> None:
    conn.sendall(b"GET /_sim/health HTTP/1.0\r\n\r\n")
    _, headers, _ = _read_response(conn)
    assert headers["connection"] == "close"
    assert conn.recv(10) == b""


def test_chunked_request_body(conn: socket.socket) -> None:
    body = json.dumps({"input": {"prompt": "x"}}).encode()
    chunks = (
        b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:5], body[5:]))
        + b"0\r\n\r\n"
    )
    conn.sendall(
        b"POST /v1/models/a/b/predictions HTTP/1.1\r\nAuthorization: Bearer t\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n" + chunks
    )
    status, _, reply = _read_response(conn)
    assert status == "HTTP/1.1 201 Created"
    assert json.loads(reply)["input"] == {"prompt": "x"}


def test_oversized_body_is_refused(conn: socket.socket) -> None:
    conn.sendall(b"POST /v1/predictions HTTP/1.1\r\nContent-Length: 4096\r\n\r\n")
    status, headers, _ = _read_response(conn)
    assert status.startswith("HTTP/1.1 413")
    assert headers["connection"] == "close"


def test_garbage_request_line_is_a_400(conn: socket.socket) -> None:
    conn.sendall(b"NONSENSE\r\n\r\n")
    status, _, _ = _read_response(conn)
    assert status.startswith("HTTP/1.1 400")


def test_unknown_paths_are_404(conn: socket.socket) -> None:
    conn.sendall(b"GET /elsewhere HTTP/1.1\r\n\r\n")
    status, _, _ = _read_response(conn)
    assert status.startswith("HTTP/1.1 404")
