"""Slow clients cannot hold connections: `reconciler run` with short deadlines, over raw sockets.

Each test waits on the socket for the daemon to answer 408 or close, with a generous deadline;
none measures how long the daemon took.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_daemon import Daemon

SECRET = "connections-tests-admin-secret"
PATH_SECRET = "connections-tests-receive-path-secret-0123456789"
RECEIVE = f"/api/integrations/webhook/receive/{PATH_SECRET}"
RECEIVER = """\
apiVersion: cms.integrations/v1
kind: Integration
id: partner-in
name: Partner in
type: webhook
receive:
  secret: ${env:PARTNER_PATH}
  event: custom.inbound.partner
"""
GENEROUS = 20.0  # the test deadline is 1 s; this only bounds how long a failing test hangs


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    (tmp_path / "integrations.d").mkdir()
    (tmp_path / "integrations.d" / "partner-in.yaml").write_text(RECEIVER)
    with Daemon(
        tmp_path,
        "--header-timeout",
        "1s",
        "--body-timeout",
        "1s",
        env={"ADMIN_SECRET": SECRET, "PARTNER_PATH": PATH_SECRET},
    ) as running:
        yield running


def connect(daemon: Daemon) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=GENEROUS)
    return sock


def until_closed(sock: socket.socket) -> bytes:
    """Everything the daemon sends until it closes; a socket timeout (GENEROUS) fails the test."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"still connected after {GENEROUS} s; received {received!r}") from None
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def test_partial_headers_are_cut_off(daemon):
    with contextlib.closing(connect(daemon)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        answer = until_closed(sock)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")
    assert "closed a connection whose request did not come in time" in daemon.log()


def test_a_connection_that_sends_nothing_is_cut_off(daemon):
    with contextlib.closing(connect(daemon)) as sock:
        answer = until_closed(sock)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")


def test_a_partial_body_to_the_receive_path_is_answered_408(daemon):
    with contextlib.closing(connect(daemon)) as sock:
        sock.sendall(
            f"POST {RECEIVE} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            "content-length: 100\r\n\r\n".encode()
            + b'{"partial": '
        )
        answer = until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    # the event was never taken
    with httpx.Client(base_url=daemon.url, headers={"x-admin-secret": SECRET}, timeout=5) as client:
        assert client.post(RECEIVE, json={"whole": True}).status_code == 202


def test_a_trickled_body_is_cut_off_too(daemon):
    """A byte now and then does not extend the deadline: it is on the whole body."""
    with contextlib.closing(connect(daemon)) as sock:
        sock.sendall(f"POST {RECEIVE} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-length: 100000\r\n\r\n".encode())
        sock.settimeout(0.2)
        received = b""
        for _ in range(int(GENEROUS / 0.2)):
            try:
                sock.sendall(b" ")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
        else:
            raise AssertionError(f"a trickling client was still connected after {GENEROUS} s")
    assert received == b"" or received.startswith(b"HTTP/1.1 408 ")


def test_whole_requests_still_work_and_keep_alive_is_kept(daemon):
    with httpx.Client(base_url=daemon.url, timeout=5) as client:
        assert client.get("/healthz").status_code == 200
        assert client.post(RECEIVE, json={"marker": "kept"}).status_code == 202
        assert client.get("/healthz").status_code == 200


def test_connections_beyond_the_cap_are_answered_503(tmp_path: Path):
    (tmp_path / "integrations.d").mkdir()
    running = Daemon(tmp_path, "--max-connections", "3", env={"ADMIN_SECRET": SECRET})
    try:
        running.wait_ready()
        held = [connect(running) for _ in range(3)]
        try:
            for sock in held:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            refused = httpx.get(f"{running.url}/healthz", timeout=GENEROUS)
            assert refused.status_code == 503
        finally:
            for sock in held:
                sock.close()
        deadline_tries = 200
        for _ in range(deadline_tries):
            # the daemon learns of the closes as its loop turns; a later request is served
            if httpx.get(f"{running.url}/healthz", timeout=GENEROUS).status_code == 200:
                break
        else:
            raise AssertionError("requests stayed refused after the held connections closed")
    finally:
        if running.process.poll() is None:
            running.stop()


def test_bad_deadlines_are_refused_with_the_fix(tmp_path: Path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    for flag, value in (
        ("--header-timeout", "10"),
        ("--body-timeout", "0s"),
        ("--max-connections", "0"),
        ("--max-retry-after", "forever"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "reconciler", "run", flag, value],
            cwd=tmp_path,
            env={"PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0
        assert flag in done.stderr
