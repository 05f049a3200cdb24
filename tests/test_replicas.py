"""Replicas on one store: heartbeats, the takeover of a dead replica's work (recorded in the
attempt log), the fence that keeps a replica declared dead from overwriting a survivor's
outcomes, and the leader's connection. The store's part runs on SQLite and PostgreSQL alike;
the leader's connection is PostgreSQL's."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from reconciler import __version__
from reconciler.store import Attempt, NewDelivery, NewEvent, Outcome, ReplicaInfo, open_store
from tests.conftest import ROOT
from tests.peers import Peer, Reply
from tests.polling import until
from tests.test_daemon import SECRET, Daemon
from tests.test_durability import SIGNING, target


def replica(replica_id: str) -> ReplicaInfo:
    return ReplicaInfo(id=replica_id, role="all", version="test", host="h", pid=1, config_revision="abc")


def silence(store, replica_id: str, seconds: float) -> None:
    """Make a replica's last heartbeat `seconds` old, as if it had stopped beating then."""
    with store.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE replicas SET heartbeat_at = heartbeat_at - :s WHERE id = :id"),
            {"s": seconds, "id": replica_id},
        )


def enqueue(store, count: int) -> None:
    events = [NewEvent(f"e{n}", "user.login", "t", {"userId": n}, "api") for n in range(count)]
    store.enqueue(events, [NewDelivery(f"d{n}", f"e{n}", "a", 0, 0.0) for n in range(count)])


def test_a_dead_replicas_leases_are_taken_over_and_recorded(store):
    store.register_replica(replica("alive"))
    store.register_replica(replica("dead"))
    enqueue(store, 3)
    now = time.time()
    assert len(store.claim("dead", ["a"], now, 2, 300.0)) == 2
    assert store.heartbeat("dead", "abc", False) and store.heartbeat("alive", "abc", True)
    assert store.take_over_dead_replicas(6.0) == [], "nobody is silent yet"

    silence(store, "dead", 30)
    [takeover] = store.take_over_dead_replicas(6.0)
    assert (takeover.replica_id, takeover.deliveries) == ("dead", 2)
    assert takeover.silent_seconds >= 29
    assert store.take_over_dead_replicas(6.0) == [], "taken over once"
    _, rows = store.replicas()
    assert [r["id"] for r in rows] == ["alive"]
    assert not store.heartbeat("dead", "abc", False), "its row is gone: it learns it was declared dead"

    # the freed deliveries are claimed at once, long before their 300 s leases would end
    assert {d.id for d in store.claim("alive", ["a"], now + 1, 10, 300.0)} == {"d0", "d1", "d2"}
    takeovers = [a for a in store.attempts("a") if a["outcome"] == "takeover"]
    assert sorted(a["delivery_id"] for a in takeovers) == ["d0", "d1"]
    for row in takeovers:
        assert row["trigger"] == "takeover" and row["attempt"] == 1
        assert "replica dead" in row["error"] and "may have sent it" in row["error"]


def test_outcomes_of_a_replica_that_lost_its_lease_are_fenced(store):
    """A replica declared dead while paused comes back with outcomes: they do not overwrite
    what the survivor now does; the attempts it made are in the log all the same."""
    store.register_replica(replica("paused"))
    store.register_replica(replica("survivor"))
    enqueue(store, 1)
    now = time.time()
    store.claim("paused", ["a"], now, 1, 300.0)
    silence(store, "paused", 30)
    store.take_over_dead_replicas(6.0)
    [claimed] = store.claim("survivor", ["a"], now, 1, 300.0)

    def outcome(status: str) -> Outcome:
        attempt = Attempt(delivery_id="d0", integration_id="a", at=now, attempt=1, trigger="scheduled", outcome=status)
        return Outcome("d0", status, 1, now + 60, None if status == "delivered" else "HTTP 500", attempt)

    store.assign_batch(["d0"], "bat_paused", owner="paused")
    assert store.claim("survivor", ["a"], now + 400, 1, 300.0)[0].batch_id is None, "nor does its batch"
    assert store.record([outcome("failed")], owner="paused") == 0
    assert store.record([outcome("delivered")], owner="paused") == 0
    _, rows = store.replicas()
    assert {r["id"]: r["leases"] for r in rows} == {"survivor": 1}
    assert store.delivery_counts("a") == {"pending": 1}, "still the survivor's to send"
    assert store.record([outcome("delivered")], owner="survivor") == 1
    assert store.delivery_counts("a") == {"delivered": 1}
    assert [a["outcome"] for a in store.attempts("a")].count("delivered") == 2  # both requests were made


def test_the_leader_connection_is_never_idle_in_a_transaction(postgres_url):
    """The connection holding the leader lock runs in autocommit: a server that ends sessions
    idle in a transaction (idle_in_transaction_session_timeout) leaves it, and its lock, alone."""
    url = postgres_url + "%20-cidle_in_transaction_session_timeout%3D500"
    leader, other = open_store(url), open_store(url)
    try:
        assert leader.is_leader() and not other.is_leader()
        with leader.engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "500ms"
        pid = leader._leader_connection.dbapi_connection.info.backend_pid
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # three times the timeout, checking all along
            assert leader.is_leader() and not other.is_leader()
            with other.engine.connect() as connection:
                state = connection.execute(
                    sa.text("SELECT state FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                ).scalar()
            assert state == "idle", f"the leader's connection is {state!r}"
            time.sleep(0.1)  # pacing the checks over the window, not synchronising
        assert leader._leader_connection.dbapi_connection.info.backend_pid == pid, "the same session all along"
    finally:
        leader.close()
        other.close()


# --- real replicas: `reconciler run` processes on one PostgreSQL schema --------------------------


def start_replicas(tmp_path: Path, store_url: str, peer: Peer, count: int) -> list[Daemon]:
    """`count` replicas of one deployment: the same files, the same store, ports of their own."""
    daemons = []
    for n in range(count):
        workdir = tmp_path / f"replica-{n}"
        (workdir / "integrations.d").mkdir(parents=True)
        (workdir / "integrations.d" / "target.yaml").write_text(target(peer))
        daemons.append(Daemon(workdir, "--store", store_url, env={"ADMIN_SECRET": SECRET, "SIGNING": SIGNING}))
    try:
        for daemon in daemons:
            daemon.wait_ready(60)
    except BaseException:
        stop_all(daemons)
        raise
    return daemons


def stop_all(daemons: list[Daemon]) -> None:
    for daemon in daemons:
        if daemon.process.poll() is None:
            daemon.stop()


def status(daemon: Daemon) -> dict[str, Any]:
    response = httpx.get(f"{daemon.url}/api/integrations/health/status", headers={"x-admin-secret": SECRET}, timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "ADMIN_SECRET": SECRET}
    command = [sys.executable, "-m", "reconciler", *args]
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)


def post_events(url: str, count: int, acked: list[str]) -> None:
    with httpx.Client(base_url=url, headers={"x-admin-secret": SECRET}, timeout=30) as client:
        for n in range(count):
            response = client.post(
                "/api/integrations/webhooks/trigger", json={"event": "user.login", "data": {"userId": n}}
            )
            assert response.status_code == 202, response.text
            assert response.json()["deliveries"] == 1, response.text
            acked.append(response.json()["id"])


def test_the_work_of_a_replica_killed_mid_delivery_resumes_on_a_survivor(tmp_path, postgres_url, peer):
    """Three replicas, events posted to each, the partner slow to answer: one replica is killed
    (SIGKILL) while it holds deliveries, some of them in flight. Nothing acknowledged is lost,
    its work resumes on the survivors in seconds (not after its 300 s leases), and every
    delivery sent again is recorded as a takeover attempt naming the dead replica."""
    peer.script = lambda seen: Reply(delay=1.0)  # requests stay in flight for a second
    daemons = start_replicas(tmp_path, postgres_url, peer, 3)
    store = open_store(postgres_url)
    try:
        victim, survivors = daemons[0], daemons[1:]
        victim_id = status(victim)["replica"]
        acked: list[str] = []
        senders = [threading.Thread(target=post_events, args=(d.url, 60, acked)) for d in daemons]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(120)
        assert len(acked) == 180

        def victim_leases() -> int:
            with store.engine.connect() as connection:
                return int(
                    connection.execute(
                        sa.text("SELECT count(*) FROM deliveries WHERE lease_owner = :id"), {"id": victim_id}
                    ).scalar()
                    or 0
                )

        until(lambda: victim_leases() >= 20, "the victim holds deliveries", 30)
        until(lambda: any(s.finished_at == 0.0 for s in peer.requests("/hook")), "requests in flight", 30)
        held = victim_leases()
        killed_at = time.time()
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)

        def all_received() -> bool:
            return set(acked) <= {s.json()["id"] for s in peer.requests("/hook")}

        until(all_received, "every acknowledged event reaches the partner", 120)
        takeovers = [a for a in store.attempts("target", limit=100_000) if a["outcome"] == "takeover"]
        assert takeovers, "the victim's deliveries were taken over"
        assert all(victim_id in a["error"] and "may have sent it" in a["error"] for a in takeovers)
        taken = {a["delivery_id"] for a in takeovers}
        with store.engine.connect() as connection:
            event_of = dict(
                connection.execute(
                    sa.text("SELECT id, event_id FROM deliveries WHERE id = ANY(:ids)"), {"ids": list(taken)}
                ).all()
            )
        # how long the victim's work waited: from the kill to the survivors' requests
        after_kill: dict[str, float] = {}
        for seen in peer.requests("/hook"):
            if seen.at >= killed_at:
                event = seen.json()["id"]
                after_kill[event] = min(after_kill.get(event, seen.at), seen.at)
        first_resend = min(after_kill[event_of[d]] for d in taken) - killed_at
        resumed = max(after_kill[event_of[d]] for d in taken) - killed_at
        first_takeover = min(a["at"] for a in takeovers) - killed_at
        print(
            f"\nvictim held {held} deliveries; {len(taken)} taken over {first_takeover:.1f} s after the kill; "
            f"the first sent again after {first_resend:.1f} s, all of them within {resumed:.1f} s"
        )
        assert resumed < 30, "a killed replica's work resumes in seconds, not after its leases end"

        # every event the partner received twice was resent after a takeover, and says so
        counts = collections.Counter(s.json()["id"] for s in peer.requests("/hook"))
        resent = {event for event, n in counts.items() if n > 1}
        assert resent <= set(event_of.values()), "every second send is recorded as a takeover attempt"
        until(lambda: store.delivery_counts("target") == {"delivered": 180}, "every delivery recorded delivered", 30)

        shown = run_cli("logs", "target", "--status", "takeover", "--limit", "500", "--server", survivors[0].url)
        lines = [line for line in shown.stdout.splitlines() if " takeover " in line]
        assert len(lines) == len(takeovers) and all(victim_id in line for line in lines), shown.stdout + shown.stderr

        _, rows = store.replicas()
        assert victim_id not in {r["id"] for r in rows}, "the dead replica's row is gone"
        took_over = [
            e for d in survivors for e in d.entries() if e.get("message") == "took over the work of a dead replica"
        ]
        assert [e["dead"] for e in took_over] == [victim_id], "one survivor took it over, once"
    finally:
        store.close()
        stop_all(daemons)


def test_status_lists_the_replicas_and_the_leader_and_leadership_passes_on(tmp_path, postgres_url, peer):
    daemons = start_replicas(tmp_path, postgres_url, peer, 2)
    try:
        found = until(
            lambda: (s := status(daemons[1]))["leader"] and len(s["replicas"]) == 2 and s,
            "two replicas listed, one leading",
            30,
        )
        ids = {d: status(d)["replica"] for d in daemons}
        assert {r["id"] for r in found["replicas"]} == set(ids.values())
        for row in found["replicas"]:
            assert row["alive"] and row["role"] == "all" and row["version"] == __version__
            assert row["heartbeatAgeSeconds"] < 10 and isinstance(row["leases"], int)
            assert row["leader"] == (row["id"] == found["leader"])
        leader = next(d for d in daemons if ids[d] == found["leader"])
        follower = next(d for d in daemons if d is not leader)
        assert any(e.get("message", "").startswith("leadership acquired") for e in leader.entries())

        # the queue is the database's: only the leader reports it, so a sum over replicas counts it once
        for daemon, leading in ((leader, True), (follower, False)):
            metrics = httpx.get(f"{daemon.url}/metrics", timeout=10).text
            assert ("\nreconciler_queue_depth " in metrics) is leading, metrics
            assert f"\nreconciler_leader {1.0 if leading else 0.0}" in metrics
            assert (
                f'reconciler_replica_info{{replica="{ids[daemon]}",role="all",version="{__version__}"}} 1.0' in metrics
            )

        shown = run_cli("status", "--server", follower.url)
        assert f"replicas: 2, leader {ids[leader]}" in shown.stdout, shown.stdout + shown.stderr
        assert "this one" in shown.stdout and "leader" in shown.stdout

        code, _ = leader.stop()  # a clean stop: its row goes, its lock goes with its connection
        assert code == 0
        after = until(
            lambda: (s := status(follower))["leader"] == ids[follower] and len(s["replicas"]) == 1 and s,
            "the follower leads, alone",
            30,
        )
        assert [r["id"] for r in after["replicas"]] == [ids[follower]]
        assert any(e.get("message", "").startswith("leadership acquired") for e in follower.entries())
    finally:
        stop_all(daemons)


def test_a_replica_paused_past_the_dead_after_threshold_is_fenced_and_registers_again(tmp_path, postgres_url, peer):
    """A replica stopped (SIGSTOP) while it holds deliveries is declared dead and its work taken
    over; resumed, it finds its row gone, overwrites none of the survivor's outcomes, gives back
    what it held, and registers again. Every delivery ends delivered."""
    peer.script = lambda seen: Reply(delay=1.0)
    daemons = start_replicas(tmp_path, postgres_url, peer, 2)
    paused, survivor = daemons
    store = open_store(postgres_url)
    try:
        paused_id = status(paused)["replica"]
        acked: list[str] = []
        post_events(paused.url, 40, acked)
        until(lambda: any(s.finished_at == 0.0 for s in peer.requests("/hook")), "requests in flight", 30)
        paused.process.send_signal(signal.SIGSTOP)
        try:
            until(lambda: any(e.get("dead") == paused_id for e in survivor.entries()), "the survivor takes over", 30)
        finally:
            paused.process.send_signal(signal.SIGCONT)
        until(
            lambda: any(e.get("message", "").startswith("this replica was declared dead") for e in paused.entries()),
            "the paused replica learns it was declared dead",
            30,
        )
        until(lambda: paused_id in {r["id"] for r in status(survivor)["replicas"]}, "it registers again", 30)
        until(lambda: set(acked) <= {s.json()["id"] for s in peer.requests("/hook")}, "everything arrives", 60)
        until(lambda: store.delivery_counts("target") == {"delivered": 40}, "every delivery recorded delivered", 30)
        taken = {a["delivery_id"] for a in store.attempts("target", limit=10_000) if a["outcome"] == "takeover"}
        with store.engine.connect() as connection:
            taken_events = set(
                connection.execute(
                    sa.text("SELECT event_id FROM deliveries WHERE id = ANY(:ids)"), {"ids": list(taken)}
                ).scalars()
            )
        counts = collections.Counter(s.json()["id"] for s in peer.requests("/hook"))
        assert {event for event, n in counts.items() if n > 1} <= taken_events, "every resend was a recorded takeover"
    finally:
        store.close()
        stop_all(daemons)
