"""Requests that are not valid HTTP/1.1 get the service's JSON error shape."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from healthscore.service import create_app
from healthscore.service.protocol import INVALID_REQUEST_MESSAGE, JsonErrorProtocol
from service_project import service_project


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real Uvicorn server of a scored project on 127.0.0.1, with the protocol."""
    root = tmp_path_factory.mktemp("protocol") / "p"
    project = service_project(root, "sqlite:///.healthscore/state.db", scored=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        chosen = int(probe.getsockname()[1])
    config = uvicorn.Config(
        create_app(project),
        host="127.0.0.1",
        port=chosen,
        http=JsonErrorProtocol,
        log_config=None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield chosen
    server.should_exit = True
    thread.join(30)


def exchange(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send raw bytes; return the status line, headers and body of the response."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
        b"NOT A REQUEST LINE\r\n\r\n",
    ],
)
def test_malformed_request_gets_json_400(port, request_bytes):
    status, headers, body = exchange(port, request_bytes)

    assert status == "HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == {
        "error": {
            "status": 400,
            "code": "bad_request",
            "message": INVALID_REQUEST_MESSAGE,
            "details": [],
        }
    }


def test_valid_request_still_served(port):
    status, _, body = exchange(
        port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )

    assert status == "HTTP/1.1 200 OK"
    assert json.loads(body) == {"status": "ok"}


def test_health_responds_to_head(port):
    status, headers, body = exchange(
        port, b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )

    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"] == "application/json"
    assert body == b""
