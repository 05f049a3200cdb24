"""The store's interface, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import re
import uuid

import pytest
import sqlalchemy as sa

from reconciler.store import AuditEntry, IntegrationRecord, Override, StoreError, open_store
from reconciler.store.schema import MIGRATIONS


def test_migrations_are_applied_once_and_recorded(store, store_url):
    assert store.migrate() == max(MIGRATIONS)
    again = open_store(store_url)
    try:
        with again.engine.connect() as connection:
            versions = connection.execute(sa.text("SELECT version FROM schema_version")).scalars().all()
        assert versions == sorted(MIGRATIONS)
    finally:
        again.close()


def test_registry_rows_round_trip_and_upsert(store):
    record = IntegrationRecord(
        "slack",
        [{"type": "Ready", "status": "True"}],
        type="webhook",
        name="Slack",
        generation=1,
        spec={"config": {"endpoint": "${env:SLACK}"}},
        spec_hash="sha256:1",
        source_file="slack.yaml",
        source_document=0,
        last_applied_revision={"commit": None, "contentHash": "sha256:f"},
    )
    store.save([record], [AuditEntry("add", "added", "slack")])
    loaded = store.get_integration("slack")
    assert loaded is not None and loaded.spec == record.spec and loaded.generation == 1
    record.generation = 2
    store.save([record])
    assert [r.generation for r in store.list_integrations()] == [2]
    assert store.get_integration("nope") is None


def test_delete_keeps_deliveries(store):
    from reconciler.store.schema import deliveries

    store.save([IntegrationRecord("gone", [])])
    with store.engine.begin() as connection:
        connection.execute(
            sa.insert(deliveries).values(
                id="d1",
                event_id="e1",
                integration_id="gone",
                status="pending",
                next_attempt_at=0.0,
                created_at=0.0,
                updated_at=0.0,
            )
        )
    store.delete_integration("gone", [AuditEntry("remove", "removed", "gone")])
    assert store.get_integration("gone") is None
    assert store.delivery_counts("gone") == {"pending": 1}


def test_overrides_are_stored_with_audit(store):
    store.set_override(
        Override("sis", True, "partner outage", "alice", 1.0), AuditEntry("suspend", "partner outage", "sis", "alice")
    )
    assert store.overrides()["sis"].actor == "alice"
    store.clear_override("sis", AuditEntry("resume", "back", "sis", "bob"))
    assert store.overrides() == {}
    trail = store.audit_trail("sis")
    assert [(e.action, e.actor) for e in trail] == [("resume", "bob"), ("suspend", "alice")]


def test_meta_values(store):
    assert store.get_meta("last_pass", {}) == {}
    store.set_meta("last_pass", {"ok": True})
    store.set_meta("last_pass", {"ok": False})
    assert store.get_meta("last_pass") == {"ok": False}


def test_sqlite_store_is_created_under_a_new_directory_in_wal_mode(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/new/dir/state.db")
    try:
        with store.engine.connect() as connection:
            assert connection.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        store.close()
    assert (tmp_path / "new" / "dir" / "state.db").exists()


def test_sqlite_store_and_its_directory_are_private_to_the_daemon(tmp_path):
    """The store holds events and audit entries: other local users may read neither."""
    import os
    import stat

    previous = os.umask(0o022)  # the usual umask, which leaves new files readable by all
    try:
        store = open_store(f"sqlite:///{tmp_path}/state/reconciler.db")
        try:
            store.set_meta("probe", {"ok": True})
        finally:
            store.close()
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    for name in ("reconciler.db", "reconciler.db-wal", "reconciler.db-shm"):
        if (tmp_path / "state" / name).exists():
            assert stat.S_IMODE((tmp_path / "state" / name).stat().st_mode) == 0o600, name


def test_unsupported_or_unreachable_store_urls_say_so():
    with pytest.raises(StoreError, match=re.escape("unsupported store URL 'mysql://u:***@h/d'")):
        open_store("mysql://u:pw@h/d")
    with pytest.raises(StoreError, match=re.escape("cannot open the store at postgresql://nobody:***@127.0.0.1:1/x")):
        open_store("postgresql://nobody:pw@127.0.0.1:1/x?connect_timeout=2")
    with pytest.raises(StoreError, match="names no file"):
        open_store("sqlite://")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:Pw0rdSecret@127.0.0.1:1/db?connect_timeout=2",
        "postgresql://alice@127.0.0.1:1/db?connect_timeout=2&password=Pw0rdSecret",
        "postgresql://alice@127.0.0.1:1/db?connect_timeout=2&PASSWORD=Pw0rdSecret&sslpassword=Pw0rdSecret",
        "postgresql://alice:Pw0rd%53ecret@127.0.0.1:1/db?connect_timeout=2",
    ],
)
def test_a_password_in_the_store_url_is_in_no_log_line_or_error(tmp_path, url):
    """`reconciler run --store URL` failing to connect says where, never with the password."""
    import subprocess
    import sys

    from reconciler.store.errors import redact_url
    from tests.conftest import ROOT

    assert "Pw0rd" not in redact_url(url) and "***" in redact_url(url)
    (tmp_path / "integrations.d").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "run", "--listen", "127.0.0.1:0", "--log-format", "json", "--store", url],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "127.0.0.1:1/db" in done.stderr  # it still says which store
    assert "Pw0rd" not in done.stderr + done.stdout


def test_retention_prunes_finished_work_and_keeps_everything_undelivered(store):
    import time as clock

    from reconciler.store import Attempt, NewDelivery, NewEvent, Outcome

    events = [NewEvent(f"e{n}", "user.login", "t", {"userId": n}, "api") for n in range(3)]
    store.enqueue(events, [NewDelivery(f"d{n}", f"e{n}", "t", 0, 0.0) for n in range(3)])
    now = clock.time()
    store.record(
        [
            Outcome(
                "d0",
                "delivered",
                1,
                now,
                None,
                Attempt(
                    delivery_id="d0",
                    integration_id="t",
                    at=now - 100,
                    attempt=1,
                    trigger="scheduled",
                    outcome="delivered",
                ),
            ),
            Outcome(
                "d1",
                "dead",
                10,
                now,
                "HTTP 500",
                Attempt(
                    delivery_id="d1", integration_id="t", at=now - 100, attempt=10, trigger="scheduled", outcome="dead"
                ),
            ),
        ]
    )
    removed = store.prune(before=now + 1)
    assert removed == {"events": 1, "deliveries": 1, "attempts": 2}
    assert store.delivery_counts("t") == {"dead": 1, "pending": 1}


def test_one_postgresql_replica_leads_at_a_time(postgres_url):
    first, second = open_store(postgres_url), open_store(postgres_url)
    try:
        assert first.is_leader() and not second.is_leader()
        first.close()
        assert second.is_leader(), "the lock passes on when the leader goes"
    finally:
        second.close()


def test_stores_in_two_schemas_of_one_database_lead_apart(postgres_url):
    """Leadership is per store: a store in another schema of the same database has its own leader."""
    import sqlalchemy as sa

    other_schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(postgres_url.split("?")[0].replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {other_schema}"))
    first = open_store(postgres_url)
    other = open_store(postgres_url.split("?")[0] + f"?options=-csearch_path%3D{other_schema}")
    try:
        assert first.is_leader() and other.is_leader()
    finally:
        first.close()
        other.close()
        with admin.begin() as connection:
            connection.execute(sa.text(f"DROP SCHEMA {other_schema} CASCADE"))
        admin.dispose()


def test_claims_in_one_round_return_only_their_own_integrations_rows(store):
    """The engine claims the unpaced integrations and then each paced one with the same owner,
    time and lease: a claim must not hand back rows an earlier one took (sent twice)."""
    from reconciler.store import NewDelivery, NewEvent

    events = [NewEvent(f"e{n}", "user.login", "t", {"userId": n}, "api") for n in range(4)]
    store.enqueue(events, [NewDelivery(f"d{n}", f"e{n}", "a" if n < 2 else "b", 0, 0.0) for n in range(4)])
    now = 1000.0
    first = store.claim("w", ["a"], now, 10, 300.0)
    second = store.claim("w", ["b"], now, 10, 300.0)
    assert sorted(d.id for d in first) == ["d0", "d1"]
    assert sorted(d.id for d in second) == ["d2", "d3"]
    assert store.claim("w", ["a", "b"], now, 10, 300.0) == []


def test_a_forged_cursor_is_refused_as_a_bad_cursor(store):
    """A cursor whose row number no database integer holds is refused like any other bad one."""
    import base64

    from reconciler.store.history import BadCursor, LogFilter

    forged = base64.urlsafe_b64encode(b"1.0|3|99999999999999999999999").decode().rstrip("=")
    with pytest.raises(BadCursor):
        store.log_page("t", LogFilter(), before=forged)
    with pytest.raises(BadCursor):
        store.log_after("t", LogFilter(), forged)


def test_renewed_leases_keep_held_work_from_a_second_claim(store):
    """Work waiting in a lane longer than its lease is renewed by its owner, and only by it."""
    from reconciler.store import NewDelivery, NewEvent

    events = [NewEvent(f"e{n}", "user.login", "t", {"userId": n}, "api") for n in range(3)]
    store.enqueue(events, [NewDelivery(f"d{n}", f"e{n}", "a", 0, 0.0) for n in range(3)])
    now = 1000.0
    assert len(store.claim("w1", ["a"], now, 10, 300.0)) == 3
    assert store.renew_leases("w2", ["d0", "d1", "d2"], now + 900) == 0  # not w2's to renew
    assert store.renew_leases("w1", ["d0", "d1"], now + 900) == 2
    later = now + 400  # past the first lease, within the renewed one
    assert [d.id for d in store.claim("w2", ["a"], later, 10, 300.0)] == ["d2"]


def test_replay_leaves_a_delivery_that_is_being_tried_alone(store):
    """A failed delivery whose retry holds a lease is in flight: replaying it would send it twice."""
    import time as clock

    from reconciler.store import Attempt, NewDelivery, NewEvent, Outcome

    events = [NewEvent(f"e{n}", "user.login", "t", {"userId": n}, "api") for n in range(2)]
    store.enqueue(events, [NewDelivery(f"d{n}", f"e{n}", "a", 0, 0.0) for n in range(2)])
    now = clock.time()
    store.record(
        [
            Outcome(
                f"d{n}",
                "failed",
                1,
                now - 1,
                "HTTP 500",
                Attempt(
                    delivery_id=f"d{n}", integration_id="a", at=now, attempt=1, trigger="scheduled", outcome="failed"
                ),
            )
            for n in range(2)
        ]
    )
    [retrying] = store.claim("w", ["a"], now, 1, 300.0)  # one of them is being retried now
    assert store.replay(integration_id="a", since=now - 60) == 1
    counts = store.delivery_counts("a")
    assert counts == {"pending": 1, "failed": 1}
    assert store.replay(delivery_id=retrying.id) == 0


def test_a_batch_is_claimed_whole(store):
    """A retried batch keeps its webhook-id, so it must keep its events: a claim that takes one
    member takes them all, even past its limit."""
    from reconciler.store import NewDelivery, NewEvent

    events = [NewEvent(f"e{n}", "user.login", "t", {"userId": n}, "api") for n in range(4)]
    store.enqueue(events, [NewDelivery(f"d{n}", f"e{n}", "a", 0, float(n)) for n in range(4)])
    store.assign_batch(["d0", "d1", "d2"], "bat_1")
    claimed = store.claim("w", ["a"], 1000.0, 1, 300.0)
    assert sorted(d.id for d in claimed) == ["d0", "d1", "d2"]
    assert {d.batch_id for d in claimed} == {"bat_1"}
    assert all(d.envelope["data"]["userId"] == int(d.id[1:]) for d in claimed)
    assert [d.id for d in store.claim("w", ["a"], 1000.0, 10, 300.0)] == ["d3"]


def test_a_store_url_without_a_password_is_shown_as_written():
    """The embedded default reads `sqlite:///state/reconciler.db` in the log, a path relative to
    the working directory, not `sqlite:/state/...`, which looks like one at the root."""
    from reconciler.store.errors import redact_url

    for url in ("sqlite:///state/reconciler.db", "sqlite:////var/lib/reconciler.db", "postgresql://db.internal/app"):
        assert redact_url(url) == url
    assert redact_url("sqlite:///state/x.db?password=p") == "sqlite:///state/x.db?password=***"


def test_a_store_of_the_previous_release_gains_the_declared_spec(store, store_url):
    """Migrations 3 and 4 on a store made before them: the column and the change counters are
    added, and the rows keep their data."""
    store.save([IntegrationRecord("old", type="webhook", spec={"type": "webhook"})])
    with store.engine.begin() as connection:  # the store as the previous release left it
        connection.execute(sa.text("ALTER TABLE integrations DROP COLUMN declared_spec"))
        connection.execute(sa.text("DELETE FROM schema_version WHERE version >= 3"))  # 3 and what came after
        for table in ("versions", "endpoint_states", "replicas"):
            connection.execute(sa.text(f"DROP TABLE {table}"))
    upgraded = open_store(store_url)
    try:
        old = upgraded.get_integration("old")
        assert old is not None and old.spec == {"type": "webhook"} and old.declared_spec is None
        upgraded.save([IntegrationRecord("new", declared_spec={"type": "api", "name": "New"})])
        new = upgraded.get_integration("new")
        assert new is not None and new.declared_spec == {"type": "api", "name": "New"} and new.spec is None
        assert upgraded.versions() == {"registry": 1, "overrides": 0, "pass": 0}
    finally:
        upgraded.close()
