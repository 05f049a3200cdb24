"""`reconciler run` as a process: start, serve, follow the files, stop cleanly on signals."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


class Daemon:
    """`reconciler run` as a process, listening on a port the kernel picks (127.0.0.1:0).

    The port comes from the daemon's "starting" log line, so no port is chosen beforehand and
    raced for, and a daemon already on the default 127.0.0.1:8080 (`make run`) is no bother.
    """

    _count = itertools.count()

    def __init__(
        self,
        workdir: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        listen: str | None = "127.0.0.1:0",
        unset: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        self._url: str | None = None
        # the daemon's own RECONCILER_* settings only when a test gives them, never from the shell running the tests
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
        environment = {**inherited, "PYTHONPATH": str(ROOT), **(env or {})}
        for name in unset:  # a variable the test needs absent, whatever the machine sets
            environment.pop(name, None)
        # logs go to a file: a pipe nobody reads would block the daemon once it fills
        self.log_path = workdir / f"daemon-{next(Daemon._count)}.log"
        command = [
            sys.executable,
            "-m",
            "reconciler",
            "run",
            *(["--listen", listen] if listen else []),  # None: RECONCILER_LISTEN in `env` says where
            "--log-format",
            "json",
            *extra,
        ]
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, cwd=workdir, env=environment, stdout=subprocess.DEVNULL, stderr=log
            )

    @property
    def url(self) -> str:
        if self._url is None:
            raise AssertionError("the daemon's address is known once it has started: call wait_ready() first")
        return self._url

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 0)

    def log(self) -> str:
        return self.log_path.read_text()

    def entries(self) -> list[dict[str, Any]]:
        """The complete JSON lines logged so far (one being written is left for the next read)."""
        found = []
        for line in self.log().splitlines(keepends=True):
            if not line.endswith("\n"):
                break
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found

    def listening(self) -> str | None:
        """The URL of the "starting" line (`"listen": "http://127.0.0.1:PORT"`), once logged."""
        for entry in self.entries():
            if entry.get("message") == "starting" and isinstance(entry.get("listen"), str):
                return str(entry["listen"])
        return None

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited {self.process.returncode}: {self.log()}")
            if self._url is None:
                self._url = self.listening()
            if self._url is not None:
                try:
                    if httpx.get(f"{self._url}/readyz", timeout=5).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.05)  # polling, with the deadline above
        raise AssertionError(f"daemon not ready after {timeout} s: {self.log()}")

    def wait_watching(self, client: httpx.Client, config_dir: Path, timeout: float = 30.0) -> None:
        """Return once the daemon's watcher reports file events (see Harness.until_watching in
        test_reconcile: a probe file the loader skips is touched until a "watch" pass comes)."""
        probe = config_dir / "watch-probe"

        def passes() -> tuple[int, str | None]:
            health = client.get("/api/integrations/health/status").json()
            return health["passes"], (health["lastPass"] or {}).get("trigger")

        def watched_since(before: int) -> bool:
            count, trigger = passes()
            return count > before and trigger == "watch"

        deadline = time.monotonic() + timeout
        before, _ = passes()
        patience = 0.05
        while not watched_since(before):
            assert time.monotonic() < deadline, f"the daemon's watcher reported no file event: {self.log()}"
            probe.write_text(str(time.monotonic()))
            touched = time.monotonic()
            while not watched_since(before) and time.monotonic() - touched < patience:
                time.sleep(0.02)
            patience = min(patience * 2, 1.0)
        before, _ = passes()
        probe.unlink()
        while not watched_since(before):
            assert time.monotonic() < deadline, "no watch pass after removing the probe"
            time.sleep(0.02)

    def __enter__(self) -> Daemon:
        """`with Daemon(...) as daemon:` waits until it is ready, and stops it on the way out."""
        try:
            self.wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.stop()

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
    with Daemon(workdir, env={"ADMIN_SECRET": SECRET}) as running:
        yield running


def admin(daemon: Daemon) -> httpx.Client:
    return httpx.Client(base_url=daemon.url, headers={"x-admin-secret": SECRET}, timeout=5)


def test_serves_the_registry_and_follows_the_files(daemon, workdir):
    with admin(daemon) as client:
        items = client.get("/api/integrations").json()["items"]
        assert [(i["id"], i["status"]) for i in items] == [("export", "active")]
        daemon.wait_watching(client, workdir / "integrations.d")
        (workdir / "integrations.d" / "export.yaml").write_text(EXPORT.replace("name: Export", "name: Renamed"))
        deadline = time.monotonic() + 30
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
    # never the default 127.0.0.1:8080, where a `make run` daemon may be listening
    listen = [] if "--listen" in args else ["--listen", "127.0.0.1:0"]
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "run", *listen, *args],
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
