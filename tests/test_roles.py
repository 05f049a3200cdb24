"""Roles of replicas on one PostgreSQL store, as real processes: one controller
reconciles the files, the others follow the registry from the store; runtime actions taken on
any replica hold on all of them.

Each test has a fresh schema of the machine's PostgreSQL (skipped without one, except in CI).
"""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from reconciler.store import open_store
from tests.peers import Reply
from tests.pipeline import webhook_to
from tests.polling import until
from tests.test_daemon import SECRET, Daemon, admin

USER = {"userId": 7, "email": "ada@example.edu", "name": "Ada"}


def replica(root: Path, name: str, store_url: str, *flags: str, files: dict[str, str] | None = None) -> Daemon:
    """A replica in a directory of its own; `files` its integrations.d (None: it has none)."""
    workdir = root / name
    workdir.mkdir()
    if files is not None:
        (workdir / "integrations.d").mkdir()
        for file_name, text in files.items():
            (workdir / "integrations.d" / file_name).write_text(text)
    return Daemon(workdir, "--store", store_url, *flags, env={"ADMIN_SECRET": SECRET})


def status_of(daemon: Daemon, integration_id: str) -> str | None:
    with admin(daemon) as client:
        answer = client.get(f"/api/integrations/{integration_id}")
        return answer.json()["status"] if answer.status_code == 200 else None


def trigger(daemon: Daemon, deliveries: int = 1) -> str:
    with admin(daemon) as client:
        answer = client.post("/api/integrations/webhooks/trigger", json={"event": "user.registered", "data": USER})
    assert answer.status_code == 202, answer.text
    assert answer.json()["deliveries"] == deliveries, f"acknowledged with other deliveries: {answer.text}"
    return str(answer.json()["id"])


def audit_actions(store_url: str, integration_id: str) -> list[str]:
    store = open_store(store_url)
    try:
        return [entry.action for entry in reversed(store.audit_trail(integration_id))]
    finally:
        store.close()


def first_attempts(store_url: str, event_ids: list[str]) -> dict[str, float]:
    """event id -> when its first attempt was made, for those tried so far."""
    store = open_store(store_url)
    try:
        with store.engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT d.event_id, min(a.at) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id "
                    "WHERE d.event_id = ANY(:ids) GROUP BY d.event_id"
                ),
                {"ids": event_ids},
            )
            return {row[0]: row[1] for row in rows}
    finally:
        store.close()


def test_a_worker_follows_the_controller_and_a_suspension_holds_on_every_replica(tmp_path, postgres_url, peer):
    hook = webhook_to(peer.url, retry="retry: {schedule: [1s], maxAttempts: 3}")
    with replica(tmp_path, "controller", postgres_url, files={"hook.yaml": hook}) as controller:
        with replica(tmp_path, "worker", postgres_url, "--role", "worker") as worker:
            # the worker has no config directory: what it runs is the controller's registry
            assert status_of(worker, "hook") == "active"
            delivered = trigger(worker)
            until(lambda: any(s.json()["id"] == delivered for s in peer.requests()), "the worker's event delivered")

            # suspended through the worker: the controller holds it too, within a second or so
            with admin(worker) as client:
                answer = client.post("/api/integrations/hook/deactivate", json={"reason": "partner maintenance"})
            assert answer.status_code == 200, answer.text
            suspended_at = time.monotonic()
            until(lambda: status_of(controller, "hook") == "suspended", "the suspension on the controller")
            print(f"suspension seen by the controller after {time.monotonic() - suspended_at:.2f} s")

            # events taken by either replica meanwhile are kept, and sent only once resumed
            held = [trigger(controller), trigger(worker), trigger(controller)]
            with admin(controller) as client:
                resumed = client.post("/api/integrations/hook/activate", json={"reason": "back"})
            assert resumed.status_code == 200, resumed.text
            resumed_at = time.time()
            until(lambda: status_of(worker, "hook") == "active", "the resumption on the worker")
            tried = until(lambda: (found := first_attempts(postgres_url, held)) and len(found) == 3 and found, "sends")
            assert all(at >= resumed_at - 0.5 for at in tried.values()), f"sent while suspended: {tried}"
            until(lambda: {s.json()["id"] for s in peer.requests()} >= set(held), "the held events delivered")

            with admin(worker) as client:
                assert client.get("/api/integrations/health/status").json()["passes"] == 0, "the worker passed"
        # one writer of the registry: one entry for the file's one integration, the suspension's two
        assert audit_actions(postgres_url, "hook") == ["add", "suspend", "resume"]


def test_a_replica_that_does_not_lead_never_acts_on_its_own_files(tmp_path, postgres_url, peer):
    hook = webhook_to(peer.url)
    # b starts after a (a leads), with an empty directory, then gains a file: none of it reaches the registry
    with (
        replica(tmp_path, "a", postgres_url, files={"hook.yaml": hook}) as leader,
        replica(tmp_path, "b", postgres_url, files={}) as follower,
    ):
        assert status_of(follower, "hook") == "active"
        (follower.workdir / "integrations.d" / "other.yaml").write_text(hook.replace("id: hook", "id: other"))
        with admin(follower) as client:
            health = client.get("/api/integrations/health/status").json()
        assert health["leading"] is False and health["passes"] == 0
        # the leader's files still decide: a file it gains is applied, nothing of b's is
        (leader.workdir / "integrations.d" / "more.yaml").write_text(hook.replace("id: hook", "id: more"))
        until(lambda: status_of(follower, "more") == "active", "the leader's new file, on the follower")
        assert status_of(leader, "other") is None and status_of(follower, "other") is None
        assert status_of(follower, "hook") == "active"
        with admin(follower) as client:
            assert client.get("/api/integrations/health/status").json()["passes"] == 0
    assert audit_actions(postgres_url, "hook") == ["add"], "one add, by the one controller"


def test_a_killed_controller_is_replaced_and_the_new_one_reconciles(tmp_path, postgres_url, peer):
    hook = webhook_to(peer.url)
    first = replica(tmp_path, "first", postgres_url, files={"hook.yaml": hook})
    with first, replica(tmp_path, "second", postgres_url, files={"hook.yaml": hook}) as second:
        with admin(second) as client:
            assert client.get("/api/integrations/health/status").json()["leading"] is False
        killed_at = time.monotonic()
        first.stop(signal.SIGKILL)

        def leads() -> bool:
            with admin(second) as client:
                return bool(client.get("/api/integrations/health/status").json()["leading"])

        until(leads, "the second replica to lead")
        print(f"controller takeover after {time.monotonic() - killed_at:.2f} s")
        assert any(e.get("message", "").startswith("leadership acquired") for e in second.entries()), second.log()
        # it reconciles its own files now: a new one is applied
        (second.workdir / "integrations.d" / "more.yaml").write_text(hook.replace("id: hook", "id: more"))
        until(lambda: status_of(second, "more") == "active", "the new controller's pass")
        assert trigger(second, deliveries=2)  # hook and more


def test_roles_other_than_all_need_a_shared_store(tmp_path):
    daemon = Daemon(tmp_path, "--role", "worker", env={"ADMIN_SECRET": SECRET})
    code = daemon.process.wait(timeout=30)
    assert code == 2
    assert "--role worker shares a PostgreSQL store" in daemon.log() and "--role all" in daemon.log()


def test_a_worker_is_ready_only_once_a_controller_stored_a_pass(tmp_path, postgres_url, peer):
    worker = replica(tmp_path, "worker", postgres_url, "--role", "worker")
    try:
        url = until(worker.listening, "the worker listening")

        def readiness() -> httpx.Response | None:
            try:
                return httpx.get(url + "/readyz", timeout=5)
            except httpx.TransportError:
                return None

        answer = until(readiness, "the worker answering")
        assert answer.status_code == 503, "ready with an empty registry: it would acknowledge events for no one"
        assert "no controller has stored a pass yet" in answer.json()["detail"]
        with replica(tmp_path, "controller", postgres_url, files={"hook.yaml": webhook_to(peer.url)}):
            worker.wait_ready()
            assert trigger(worker)
    finally:
        worker.stop()


def test_syncs_run_on_the_controller_alone_once_per_tick_and_move_with_it(tmp_path, postgres_url, peer):
    """Two replicas that may reconcile, a sync every second: each tick is fetched once, by the
    controller; killed, its successor takes the syncs over, still once per tick."""
    peer.script = lambda seen: Reply(200, '{"changed": 1}') if seen.path == "/changes" else Reply()
    source = webhook_to(peer.url, events='["grade.published"]').replace(
        "  allowPrivateNetwork: true\n", f"  allowPrivateNetwork: true\n  syncEndpoint: {peer.url}/changes\n"
    )
    source = source.replace("type: webhook\n", "type: webhook\nsyncFrequency: 1\n")
    files = {"sis.yaml": source}
    first = replica(tmp_path, "first", postgres_url, files=files)
    with first, replica(tmp_path, "second", postgres_url, files=files) as second:
        until(lambda: len(peer.requests("/changes")) >= 3, "syncs from the controller")
        first.stop(signal.SIGKILL)
        killed_at = time.time()
        until(lambda: len([s for s in peer.requests("/changes") if s.at > killed_at]) >= 3, "syncs after the kill")
        ticks = collections.Counter(int(s.at) for s in peer.requests("/changes"))
        assert max(ticks.values()) == 1, f"a tick synced twice: {sorted(ticks.items())}"
        with admin(second) as client:
            assert client.get("/api/integrations/health/status").json()["leading"] is True
