"""The daemon as a process under load: nothing acknowledged is lost to a SIGKILL, and a
partner that is down for a while gets everything once it is back, on schedule and paced."""

from __future__ import annotations

import base64
import collections
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import standardwebhooks

from tests.conftest import ROOT
from tests.peers import Peer, Reply
from tests.test_daemon import SECRET, Daemon

SIGNING = "whsec_" + base64.b64encode(b"durability-test-secret-32-bytes.").decode()


def target(peer: Peer, extra: str = "") -> str:
    return f"""\
apiVersion: cms.integrations/v1
kind: Integration
name: Target
type: webhook
config:
  endpoint: {peer.url}/hook
  allowPrivateNetwork: true
  signingSecret: ${{env:SIGNING}}
{extra}webhooks:
  - events: ["user.*"]
"""


def start(workdir: Path) -> Daemon:
    daemon = Daemon(workdir, env={"ADMIN_SECRET": SECRET, "SIGNING": SIGNING})
    daemon.wait_ready()
    return daemon


def send_events(url: str, count: int, acked: list[str], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, headers={"x-admin-secret": SECRET}, timeout=10) as client:
        for n in range(count):
            if stop.is_set():
                return
            try:
                response = client.post(
                    "/api/integrations/webhooks/trigger", json={"event": "user.login", "data": {"userId": n}}
                )
            except httpx.HTTPError:
                continue  # not acknowledged: the sender would retry; nothing is promised
            if response.status_code == 202:
                acked.append(response.json()["id"])


def test_sigkill_under_load_loses_no_acknowledged_event(tmp_path, peer):
    peer.script = lambda seen: Reply(delay=0.2)  # slower than intake: a backlog builds up
    (tmp_path / "integrations.d").mkdir()
    (tmp_path / "integrations.d" / "target.yaml").write_text(target(peer))
    daemon = start(tmp_path)
    acked: list[str] = []
    stop = threading.Event()
    senders = [threading.Thread(target=send_events, args=(daemon.url, 400, acked, stop)) for _ in range(4)]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 30
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    daemon.process.send_signal(signal.SIGKILL)  # mid-load: intake, commits and requests in flight
    daemon.process.wait(10)
    stop.set()
    for sender in senders:
        sender.join(30)
    assert len(acked) >= 300
    delivered_before = {s.json()["id"] for s in peer.requests("/hook")}
    assert len(delivered_before) < len(acked), "the kill came while work was outstanding"

    restarted = start(tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            received = {s.json()["id"] for s in peer.requests("/hook")}
            if set(acked) <= received:
                break
            time.sleep(0.1)
        received = {s.json()["id"] for s in peer.requests("/hook")}
        assert set(acked) <= received, f"{len(set(acked) - received)} acknowledged events were lost"
        by_id: dict[str, set[str]] = collections.defaultdict(set)
        for seen in peer.requests("/hook"):
            standardwebhooks.Webhook(SIGNING).verify(seen.body, seen.headers)
            by_id[seen.json()["id"]].add(seen.headers["webhook-id"])
        assert all(ids == {event_id} for event_id, ids in by_id.items()), "a duplicate carries the same webhook-id"
    finally:
        restarted.stop()


def test_partner_down_then_back_gets_everything_on_schedule_and_paced(tmp_path, peer):
    down_until = time.time() + 2.0
    # down for requests that arrive before `down_until`: the same clock the checks below read
    peer.script = lambda seen: Reply(503, "maintenance") if seen.at < down_until else Reply()
    (tmp_path / "integrations.d").mkdir()
    extra = "  rateLimit: {perSecond: 20}\nretry:\n  maxAttempts: 30\n  schedule: [0s, 300ms, 600ms]\n"
    (tmp_path / "integrations.d" / "target.yaml").write_text(target(peer, extra))
    daemon = start(tmp_path)
    try:
        with httpx.Client(base_url=daemon.url, headers={"x-admin-secret": SECRET}) as client:
            ids = [
                client.post(
                    "/api/integrations/webhooks/trigger", json={"event": "user.login", "data": {"userId": n}}
                ).json()["id"]
                for n in range(30)
            ]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if {s.json()["id"] for s in peer.requests("/hook") if s.at >= down_until} >= set(ids):
                    break
                time.sleep(0.1)
        ok = {s.json()["id"] for s in peer.requests("/hook") if s.at >= down_until}
        assert set(ids) <= ok, "everything arrives once the partner is back"
    finally:
        code, _ = daemon.stop()
    assert code == 0
    # the attempt log, read from the store the daemon wrote
    from reconciler.store import open_store

    store = open_store(f"sqlite:///{tmp_path}/state/reconciler.db")
    try:
        attempts = store.attempts("target", limit=10_000)
    finally:
        store.close()
    by_delivery: dict[str, list[dict]] = collections.defaultdict(list)
    for attempt in attempts:
        by_delivery[attempt["delivery_id"]].append(attempt)
    schedule = [0.0, 0.3, 0.6]
    for rows in by_delivery.values():
        rows.sort(key=lambda a: a["attempt"])
        assert rows[-1]["outcome"] == "delivered"
        for earlier, later in itertools.pairwise(rows):
            wanted = schedule[min(earlier["attempt"], len(schedule) - 1)] * 0.8  # the schedule, less jitter
            assert later["at"] - earlier["at"] >= wanted - 0.01, (earlier, later)
    # Requests go out at most 20 a second; they are counted as they arrive, and arrival times
    # jitter on a busy machine (requests sent apart can arrive together), so each one-second
    # window may hold what was sent in a second and a quarter. Unpaced, a retry round of all
    # 30 deliveries would arrive at once.
    starts = sorted(s.at for s in peer.requests("/hook"))
    for index, moment in enumerate(starts):
        in_window = [t for t in starts[index:] if t < moment + 1.0]
        assert len(in_window) <= 20 * 1.25 + 1, "never more than rateLimit.perSecond requests in a second"


def test_trigger_command_and_http_refusals(tmp_path, peer):
    (tmp_path / "integrations.d").mkdir()
    (tmp_path / "integrations.d" / "target.yaml").write_text(target(peer))
    daemon = start(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ADMIN_SECRET": SECRET}

    def trigger(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "reconciler", "trigger", "user.registered", *args, "--server", daemon.url]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=30)

    try:
        data = tmp_path / "user.json"
        data.write_text(json.dumps({"userId": 5, "email": "s@example.edu"}))
        ok = trigger("--data", f"@{data}")
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["deliveries"] == 1
        bad = trigger("--data", '{"userId": 5}')
        assert bad.returncode == 1 and "/data: 'email' is a required property" in bad.stderr
        refused = httpx.post(
            f"{daemon.url}/api/integrations/webhooks/trigger",
            headers={"x-admin-secret": SECRET},
            json={"event": "nope", "data": []},
        )
        assert refused.status_code == 422
        assert {r["pointer"] for r in refused.json()["errors"]} == {"/event", "/data"}
        assert (
            httpx.post(
                f"{daemon.url}/api/integrations/webhooks/trigger", json={"event": "user.login", "data": {"userId": 1}}
            ).status_code
            == 401
        )
    finally:
        daemon.stop()
