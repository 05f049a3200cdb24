"""docs/receiving.md's Python receiver, run as pasted, verifies the daemon's real signed deliveries
with the `standardwebhooks` package, and refuses a forged one. (The Node.js receiver of the same
page is run by clients/node/test/receiving.test.js, through tests/test_node_client.py.)"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import standardwebhooks

from reconciler.client import Client
from tests.conftest import ROOT
from tests.pipeline import integration
from tests.test_daemon import SECRET, Daemon

SIGNING = "whsec_" + base64.b64encode(b"python-receiver-test-secret-32b.").decode()
WAIT_SECONDS = 30.0


def receiver_from_docs() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "receiving.md").read_text(), re.DOTALL)
    assert len(blocks) == 1, "docs/receiving.md has one Python program"
    return str(blocks[0])


class Receiver:
    """The doc's program as a process; its printed lines are collected by a thread."""

    def __init__(self, directory: Path) -> None:
        program = directory / "receiver.py"
        program.write_text(receiver_from_docs())
        environment = {**os.environ, "PORT": "0", "WEBHOOK_SECRET": SIGNING}
        self.process = subprocess.Popen(
            [sys.executable, str(program)], env=environment, stdout=subprocess.PIPE, text=True, cwd=directory
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        listening = self.line(r"listening on (\d+)")
        self.port = int(listening.group(1))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def line(self, pattern: str) -> re.Match[str]:
        """The first printed line matching `pattern`, waiting for it (with a generous deadline)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            for seen in self.seen:
                if found := re.fullmatch(pattern, seen):
                    return found
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the receiver printed no line matching {pattern!r}: {self.seen}"
            try:
                self.seen.append(self.lines.get(timeout=min(remaining, 1.0)))
            except queue.Empty:
                assert self.process.poll() is None, f"the receiver exited {self.process.returncode}: {self.seen}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    running = Receiver(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def test_the_docs_python_receiver_verifies_real_deliveries(tmp_path, receiver):
    config = tmp_path / "integrations.d"
    config.mkdir()
    (config / "partner.yaml").write_text(
        integration(f"""
            id: partner
            name: Partner
            type: webhook
            config:
              endpoint: http://127.0.0.1:{receiver.port}/webhooks
              allowPrivateNetwork: true
              signingSecret: ${{env:SIGNING}}
            webhooks:
              - events: ["user.*"]
            """)
    )
    daemon = Daemon(tmp_path, "--config-dir", str(config), env={"ADMIN_SECRET": SECRET, "SIGNING": SIGNING})
    try:
        daemon.wait_ready()
        data = {"userId": 123, "email": "student@example.com", "name": "John Doe"}
        with Client(daemon.url, SECRET) as client:
            accepted = client.trigger("user.registered", data)
        verified = receiver.line(rf"received user\.registered {re.escape(accepted.id)} (.*)")
        assert json.loads(verified.group(1)) == data
    finally:
        daemon.stop()


def test_the_docs_python_receiver_refuses_a_forged_signature(receiver):
    body = json.dumps({"id": "evt_forged", "event": "user.registered", "timestamp": "now", "data": {}})
    now = datetime.now(tz=UTC)
    forger = standardwebhooks.Webhook("whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode())
    headers = {
        "content-type": "application/json",
        "webhook-id": "evt_forged",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": forger.sign("evt_forged", now, body),
    }
    url = f"http://127.0.0.1:{receiver.port}/webhooks"
    assert httpx.post(url, content=body, headers=headers).status_code == 400
    # signed with the integration's secret, the same request is taken: the refusal was the signature's
    headers["webhook-signature"] = standardwebhooks.Webhook(SIGNING).sign("evt_forged", now, body)
    assert httpx.post(url, content=body, headers=headers).status_code == 204
    receiver.line(r"received user\.registered evt_forged \{\}")
    assert sum("evt_forged" in line for line in receiver.seen) == 1, "the forged request was not handled"
