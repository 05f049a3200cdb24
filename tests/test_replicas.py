"""Replicas on one store: heartbeats, the takeover of a dead replica's work (recorded in the
attempt log), the fence that keeps a replica declared dead from overwriting a survivor's
outcomes, and the leader's connection. The store's part runs on SQLite and PostgreSQL alike;
the leader's connection is PostgreSQL's."""

from __future__ import annotations

import time

import sqlalchemy as sa

from reconciler.store import Attempt, NewDelivery, NewEvent, Outcome, ReplicaInfo, open_store


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
