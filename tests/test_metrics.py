"""/metrics of a real daemon: the latency of every sink, and pass counters that mean what they say."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from reconciler.api.common import Runtime
from reconciler.api.status import metric_sources
from reconciler.metrics import render
from reconciler.reconcile.loop import Reconciler
from reconciler.store import AsyncStore, open_store
from tests.conftest import ROOT
from tests.peers import Peer
from tests.test_daemon import SECRET, Daemon, admin

WAIT_SECONDS = 30.0  # generous for a loaded machine
USER = {"userId": 7, "email": "ada@example.edu", "name": "Ada"}


def spec(ident: str, body: str) -> str:
    return f"apiVersion: cms.integrations/v1\nkind: Integration\nid: {ident}\nname: {ident}\n{body}"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_latency_is_observed_for_every_sink_and_errors_count_failed_passes_only(tmp_path: Path) -> None:
    peer = Peer()
    config = tmp_path / "integrations.d"
    config.mkdir()
    hooks = ["user.*"]
    (config / "http.yaml").write_text(
        spec("http", f"type: webhook\nconfig: {{endpoint: {peer.url}/hook, allowPrivateNetwork: true}}\n")
        + f"webhooks: [{{events: {hooks}}}]\n"
    )
    (config / "db.yaml").write_text(
        spec(
            "db",
            "type: database\nconfig: {url: '${env:DB_URL}', table: cms_events, mode: upsert, key: [event_id], "
            "createTable: true}\n",
        )
        + f"webhooks: [{{events: {hooks}}}]\n"
    )
    (config / "files.yaml").write_text(
        spec("files", f"type: file\nconfig: {{url: 'file://{tmp_path}/out'}}\n") + f"webhooks: [{{events: {hooks}}}]\n"
    )
    # a valid integration waiting for a secret and a file that does not validate: neither is a failed pass
    (config / "waiting.yaml").write_text(spec("waiting", "type: webhook\nconfig: {endpoint: '${env:NOT_SET_HOOK}'}\n"))
    (config / "broken.yaml").write_text(spec("broken", "type: nonsense\n"))
    daemon = Daemon(
        tmp_path, env={"ADMIN_SECRET": SECRET, "DB_URL": f"sqlite:///{tmp_path}/target.db"}, unset=("NOT_SET_HOOK",)
    )
    try:
        daemon.wait_ready()
        with admin(daemon) as client:
            for _ in range(3):
                response = client.post(
                    "/api/integrations/webhooks/trigger", json={"event": "user.registered", "data": USER}
                )
                assert response.status_code == 202, response.text
            found = _until_delivered(client, ("http", "db", "files"), 3)
            scrape = client.get("/metrics").text
        assert len(peer.requests("/hook")) == 3 and list((tmp_path / "out").rglob("*"))
        for integration in ("http", "db", "files"):
            key = ("reconciler_delivery_latency_seconds_count", (("integration", integration),))
            assert found.get(key, 0) >= 3, f"no latency observed for {integration}"
            assert found[("reconciler_delivery_latency_seconds_sum", (("integration", integration),))] > 0
        assert found[("reconciler_reconcile_passes_total", ())] >= 1
        assert found[("reconciler_reconcile_errors_total", ())] == 0, "a pending secret or a refused file is no error"
        assert found[("reconciler_files_refused", ())] == 1
        assert found[("reconciler_integrations_waiting_for_secrets", ())] == 1
        documented = (ROOT / "README.md").read_text()
        for family in text_string_to_metric_families(scrape):
            name = family.name + ("_total" if family.type == "counter" else "")
            assert f"| `{name}` |" in documented, f"{name} is not in the Metrics table of README.md"
        with admin(daemon) as client:
            health = client.get("/api/integrations/health/status").json()
        assert health["lastPass"]["ok"] is True and health["lastPass"]["error"] is None
        assert health["lastPass"]["waitingForSecrets"] == ["waiting"] and health["lastPass"]["filesRefused"]
    finally:
        daemon.stop()
        peer.close()


def _until_delivered(
    client: httpx.Client, integrations: tuple[str, ...], count: int
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = samples(client.get("/metrics").text)
        delivered = [
            found.get(("reconciler_delivery_attempts_total", (("integration", i), ("outcome", "delivered"))), 0)
            for i in integrations
        ]
        if all(n >= count for n in delivered):
            return found
        assert time.monotonic() < deadline, f"not delivered in time: {delivered}"
        time.sleep(0.05)  # polling, with the deadline above


def test_a_pass_that_fails_counts_as_an_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = AsyncStore(open_store(f"sqlite:///{tmp_path}/state.db"))
        try:
            reconciler = Reconciler(store, tmp_path / "no-such-directory")
            result = await reconciler.reconcile_once("start")
            assert not result.ok and result.error
            text = (await asyncio.to_thread(render, metric_sources(Runtime(reconciler, SECRET)))).decode()
        finally:
            await store.close()
        found = samples(text)
        assert found[("reconciler_reconcile_passes_total", ())] == 1
        assert found[("reconciler_reconcile_errors_total", ())] == 1

    asyncio.run(scenario())
