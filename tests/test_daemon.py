"""`reconciler run` as a process: start, serve, follow the files, stop cleanly on signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT

EXPORT = """\
apiVersion: cms.integrations/v1
kind: Integration
name: Export
type: file
config: {url: "file://state/exports"}
webhooks: [{events: ["*"]}]
"""
SECRET = "s3cret-admin-value-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon:
    def __init__(self, workdir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        # logs go to a file: a pipe nobody reads would block the daemon once it fills
        self.log_path = workdir / f"daemon-{self.port}.log"
        command = [
            sys.executable,
            "-m",
            "reconciler",
            "run",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--log-format",
            "json",
            *extra,
        ]
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, cwd=workdir, env=environment, stdout=subprocess.DEVNULL, stderr=log
            )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited {self.process.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("daemon not ready")

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        self.process.send_signal(signum)
        self.process.wait(timeout=20)
        return self.process.returncode, self.log()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "integrations.d").mkdir()
    (tmp_path / "integrations.d" / "export.yaml").write_text(EXPORT)
    return tmp_path


@pytest.fixture
def daemon(workdir: Path) -> Iterator[Daemon]:
    running = Daemon(workdir, env={"ADMIN_SECRET": SECRET})
    try:
        running.wait_ready()
        yield running
    finally:
        if running.process.poll() is None:
            running.stop()


def admin(daemon: Daemon) -> httpx.Client:
    return httpx.Client(base_url=daemon.url, headers={"x-admin-secret": SECRET}, timeout=5)


def test_serves_the_registry_and_follows_the_files(daemon, workdir):
    with admin(daemon) as client:
        items = client.get("/api/integrations").json()["items"]
        assert [(i["id"], i["status"]) for i in items] == [("export", "active")]
        (workdir / "integrations.d" / "export.yaml").write_text(EXPORT.replace("name: Export", "name: Renamed"))
        deadline = time.monotonic() + 10
        while client.get("/api/integrations/export").json()["generation"] != 2:
            assert time.monotonic() < deadline, "the edit did not reach the registry"
            time.sleep(0.05)
        assert client.get("/api/integrations/export").json()["spec"]["name"] == "Renamed"


def test_admin_secret_is_required_and_never_taken_from_the_query(daemon):
    assert httpx.get(f"{daemon.url}/api/integrations").status_code == 401
    assert httpx.get(f"{daemon.url}/api/integrations", headers={"x-admin-secret": "wrong"}).status_code == 401
    assert httpx.get(f"{daemon.url}/api/integrations?x-admin-secret={SECRET}").status_code == 401
    response = httpx.get(f"{daemon.url}/api/integrations", headers={"authorization": f"Bearer {SECRET}"})
    assert response.status_code == 200
    unauthorized = httpx.get(f"{daemon.url}/api/integrations")
    assert unauthorized.headers["content-type"] == "application/problem+json"
    assert unauthorized.json()["status"] == 401
    assert httpx.get(f"{daemon.url}/healthz").json() == {"status": "ok"}


def test_deactivate_and_activate_are_recorded(daemon):
    with admin(daemon) as client:
        view = client.post(
            "/api/integrations/export/deactivate", json={"reason": "partner outage"}, headers={"x-actor": "alice"}
        ).json()
        assert view["status"] == "suspended"
        assert view["drift"]["by"] == "alice" and view["drift"]["reason"] == "partner outage"
        assert client.post("/api/integrations/export/activate", json={"reason": "back"}).json()["status"] == "active"
        trail = client.get("/api/integrations/export").json()["auditTrail"]
        assert [(e["action"], e["actor"]) for e in trail[:2]] == [("resume", "admin"), ("suspend", "alice")]
        assert client.post("/api/integrations/nope/deactivate", json={}).status_code == 404
        bad = client.post("/api/integrations/export/deactivate", content=b"not json")
        assert bad.status_code == 400 and bad.json()["title"] == "Bad request"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_the_daemon_with_exit_zero(daemon, signum):
    code, log = daemon.stop(signum)
    assert code == 0, log
    assert '"message": "stopped"' in log


def test_generated_admin_secret_is_private_and_its_value_never_logged(workdir):
    running = Daemon(workdir, env={"ADMIN_SECRET": ""})
    running.wait_ready()
    code, log = running.stop()
    secret_file = workdir / "state" / "admin-secret"
    assert code == 0
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600"
    assert str(Path("state") / "admin-secret") in log
    assert secret_file.read_text().strip() not in log


def test_logs_are_json_lines_when_not_on_a_terminal(daemon):
    import json

    _, log = daemon.stop()
    entries = [json.loads(line) for line in log.splitlines() if line.strip()]
    passes = [e for e in entries if e["message"].startswith("reconcile pass")]
    assert passes and passes[0]["added"] == ["export"]


def run_cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "run", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_unusable_settings_exit_2_with_a_reason(workdir):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        busy = run_cli(workdir, "--listen", f"127.0.0.1:{port}")
    finally:
        taken.close()
    assert busy.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    missing = run_cli(workdir, "--config-dir", "nope")
    assert missing.returncode == 2 and "config directory nope does not exist" in missing.stderr
    bad_store = run_cli(workdir, "--store", "mongodb://x")
    assert bad_store.returncode == 2 and "unsupported store URL" in bad_store.stderr
    bad_retention = run_cli(workdir, "--retention", "a month")
    assert bad_retention.returncode == 2 and "--retention" in bad_retention.stderr
    assert "30d" in bad_retention.stderr or "for example" in bad_retention.stderr


def test_listening_socket_lets_asyncio_disable_nagle():
    """asyncio sets TCP_NODELAY only on sockets created with IPPROTO_TCP; without it every
    response split in two writes waited ~40 ms for a delayed ACK (intake fell by a third)."""
    from reconciler.daemon import bind

    sock = bind("127.0.0.1:0")
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
