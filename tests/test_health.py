"""The Degraded condition and the health status, driven by real failures: a sink answering 500,
an open circuit breaker, a Retry-After pause, a dead letter, a failing sync fetch, a refused
file; and back to healthy once the target answers again. Each asserts what an operator sees:
the integration's conditions, `health/status` and `reconciler status`'s exit code."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from reconciler.cli.main import main
from tests.api_server import SECRET, serve
from tests.conftest import ROOT
from tests.peers import Peer, Reply
from tests.pipeline import Pipeline, integration, webhook_to
from tests.test_daemon import Daemon

USER = {"userId": 7, "email": "ada@example.edu", "name": "Ada"}
PATIENT = "retry: {schedule: [1h], maxAttempts: 5}"  # a failure stays failed while the test looks


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def degraded(view: dict[str, Any]) -> dict[str, Any]:
    [found] = [c for c in view["conditions"] if c["type"] == "Degraded"]
    return found


async def health(api: httpx.AsyncClient) -> dict[str, Any]:
    return (await api.get("/api/integrations/health/status")).json()


def status_exit(api: httpx.AsyncClient, tmp_path: Any) -> Awaitable[int]:
    """`reconciler status` against the served API, in a thread (it is a blocking client)."""
    secret_file = tmp_path / "admin-secret"
    secret_file.write_text(SECRET)
    return asyncio.to_thread(main, ["status", "--server", str(api.base_url), "--admin-secret-file", str(secret_file)])


def test_a_failing_sink_degrades_until_it_delivers_again(tmp_path, peer: Peer, capsys):
    async def scenario() -> None:
        files = {"hook.yaml": webhook_to(peer.url, retry="retry: {schedule: [1s], maxAttempts: 10}")}
        async with Pipeline(tmp_path, files) as p, serve(p) as api:
            status = await health(api)
            assert (status["status"], status["problems"]) == ("ok", [])
            assert await status_exit(api, tmp_path) == 0

            peer.script = lambda _seen: Reply(500, "down for maintenance")
            await p.emit("user.registered", USER)
            await p.until(lambda: p.statuses("hook") == {"failed": 1})
            status = await health(api)
            assert status["status"] == "degraded"
            [item] = status["integrations"]
            assert (item["status"], item["reason"]) == ("degraded", "DeliveriesFailing")
            assert "100% of 1 send failed" in item["message"] and "HTTP 500" in item["message"]
            view = (await api.get("/api/integrations/hook")).json()
            assert view["status"] == "degraded" and view["ready"] is True  # applied, but not getting through
            went_bad = degraded(view)
            assert (went_bad["status"], went_bad["reason"]) == ("True", "DeliveriesFailing")
            listed = (await api.get("/api/integrations", params={"status": "degraded"})).json()
            assert [i["id"] for i in listed["items"]] == ["hook"]
            capsys.readouterr()
            assert await status_exit(api, tmp_path) == 1
            printed = capsys.readouterr().out
            assert "status: degraded" in printed and "DeliveriesFailing" in printed

            peer.script = lambda _seen: Reply()  # the retry a second later gets through
            await p.until(lambda: p.statuses("hook") == {"delivered": 1})
            status = await health(api)
            assert (status["status"], status["integrations"][0]["status"]) == ("ok", "active")
            recovered = degraded((await api.get("/api/integrations/hook")).json())
            assert (recovered["status"], recovered["reason"]) == ("False", "Healthy")
            assert recovered["lastTransitionTime"] > went_bad["lastTransitionTime"]
            assert await status_exit(api, tmp_path) == 0

    run(scenario)


def test_an_open_circuit_breaker_is_shown(tmp_path, peer: Peer):
    async def scenario() -> None:
        files = {"hook.yaml": webhook_to(peer.url, retry=PATIENT)}
        async with Pipeline(tmp_path, files) as p, serve(p) as api:
            peer.script = lambda _seen: Reply(503)
            for n in range(5):  # five failures in a row open the breaker
                await p.emit("user.registered", {**USER, "userId": n})
            await p.until(lambda: len(p.store.attempts("hook")) == 5)
            [item] = (await health(api))["integrations"]
            assert (item["status"], item["reason"]) == ("degraded", "CircuitOpen")
            assert "circuit breaker" in item["message"] and "100% of 5 sends failed" in item["message"]

    run(scenario)


def test_a_retry_after_pause_shows_in_status(tmp_path, peer: Peer):
    async def scenario() -> None:
        files = {"hook.yaml": webhook_to(peer.url, retry=PATIENT)}
        async with Pipeline(tmp_path, files) as p, serve(p) as api:
            peer.script = lambda _seen: Reply(429, headers={"Retry-After": "120"})
            await p.emit("user.registered", USER)
            await p.until(lambda: len(p.store.attempts("hook")) == 1)
            [item] = (await health(api))["integrations"]
            assert (item["status"], item["reason"]) == ("degraded", "Paused")
            assert "asked to wait (Retry-After) until 20" in item["message"]  # an RFC 3339 instant
            assert (await health(api))["status"] == "degraded"

    run(scenario)


def test_dead_letters_degrade_until_replayed(tmp_path, peer: Peer):
    async def scenario() -> None:
        files = {"hook.yaml": webhook_to(peer.url, retry="retry: {schedule: [1s], maxAttempts: 1}")}
        async with Pipeline(tmp_path, files) as p, serve(p) as api:
            peer.script = lambda seen: Reply(500) if seen.json()["data"]["userId"] == 0 else Reply()
            for n in range(4):  # one dead letter among three delivered: most sends got through
                await p.emit("user.registered", {**USER, "userId": n})
            await p.until(lambda: p.statuses("hook") == {"delivered": 3, "dead": 1})
            [item] = (await health(api))["integrations"]
            assert (item["status"], item["reason"]) == ("degraded", "DeadLetters")
            peer.script = lambda _seen: Reply()
            replayed = await api.post("/api/integrations/hook/replay", json={"since": "1h", "status": ["dead"]})
            assert replayed.status_code in (200, 202), replayed.text
            await p.until(lambda: p.statuses("hook") == {"delivered": 4})
            assert (await health(api))["status"] == "ok"

    run(scenario)


def test_a_failing_sync_fetch_degrades(tmp_path, peer: Peer):
    spec = webhook_to(peer.url, retry=PATIENT).replace(
        "  allowPrivateNetwork: true\n", f"  allowPrivateNetwork: true\n  syncEndpoint: {peer.url}/changes\n"
    )
    spec += "syncFrequency: 1\n"

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": spec}) as p, serve(p) as api:
            peer.script = lambda seen: Reply(502) if seen.path == "/changes" else Reply()
            await p.until(lambda: peer.requests("/changes"))
            await p.until(lambda: p.store.attempts("hook"), "the sync attempt is logged")
            [item] = (await health(api))["integrations"]
            assert (item["status"], item["reason"]) == ("degraded", "SyncFailing")
            assert "the latest sync fetch failed: HTTP 502" in item["message"]

    run(scenario)


def test_a_refused_file_is_not_ok(tmp_path, peer: Peer):
    async def scenario() -> None:
        other = integration(f"""
            id: other
            name: Other
            type: webhook
            config:
              endpoint: {peer.url}/other
              allowPrivateNetwork: true
            webhooks:
              - events: ["user.*"]
            """)
        files = {"hook.yaml": webhook_to(peer.url), "other.yaml": other}
        async with Pipeline(tmp_path, files) as p, serve(p) as api:
            assert (await health(api))["status"] == "ok"
            (p.config / "hook.yaml").write_text(webhook_to(peer.url).replace("type: webhook", "type: pigeon"))
            before = p.reconciler.passes
            p.reconciler.trigger()
            await p.until(lambda: p.reconciler.passes > before)
            status = await health(api)
            assert status["status"] == "degraded"
            path = p.config / "hook.yaml"
            assert f"file refused: hook.yaml (`reconciler validate {path}` shows why)" in status["problems"]
            by_id = {i["id"]: i for i in status["integrations"]}
            # the last good version still runs, and says it is not what the file says
            assert (by_id["hook"]["status"], by_id["hook"]["reason"]) == ("degraded", "FileRefused")
            assert by_id["other"]["status"] == "active"
            assert await status_exit(api, tmp_path) == 1

    run(scenario)


def test_the_daemon_measures_health_on_its_own(tmp_path, peer: Peer):
    """A real daemon: Degraded shows in the integration's view without anyone asking for the
    health document (the monitor runs every few seconds), and `reconciler status` exits 1."""
    config = tmp_path / "integrations.d"
    config.mkdir()
    (config / "hook.yaml").write_text(webhook_to(peer.url, retry=PATIENT))
    peer.script = lambda _seen: Reply(500)
    with (
        Daemon(tmp_path, "--config-dir", str(config), env={"ADMIN_SECRET": SECRET}) as daemon,
        httpx.Client(base_url=daemon.url, headers={"x-admin-secret": SECRET}, timeout=10) as client,
    ):
        trigger = {"event": "user.registered", "data": USER}
        assert client.post("/api/integrations/webhooks/trigger", json=trigger).status_code == 202
        deadline = time.monotonic() + 60
        while client.get("/api/integrations/hook").json()["status"] != "degraded":
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.1)  # polling, with the deadline above
        status = subprocess.run(
            [sys.executable, "-m", "reconciler", "status", "--server", daemon.url],
            env={"ADMIN_SECRET": SECRET, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 1, status.stdout + status.stderr
        assert "DeliveriesFailing" in status.stdout
        assert any(e.get("message") == "integration degraded" for e in daemon.entries()), daemon.log()
