"""A store that fails does not kill the daemon: PostgreSQL going away behind a proxy and coming
back, an SQLite disk that fills up, an SQLite write lock held too long.

While the store is unreachable every role backs off and retries, /readyz says not ready and
names the store (never its password), and the routes that would store something answer 503
with Retry-After; once it is back, everything acknowledged is delivered.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import sqlalchemy as sa

from reconciler.store import open_store
from tests.api_server import serve
from tests.peers import Peer, Reply
from tests.pipeline import Pipeline, partner_receiver, webhook_to
from tests.tcp_proxy import TcpProxy
from tests.test_daemon import Daemon

SECRET = "store-outage-admin-secret-0123456789"
PASSWORD = "never-shown-pw-4c1d"
TRIGGER = "/api/integrations/webhooks/trigger"
WAIT_SECONDS = 60.0  # generous: reconnecting after an outage goes through backoffs on a busy machine


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def hook(peer: Peer) -> str:
    return webhook_to(peer.url, retry="retry: {schedule: [1s], maxAttempts: 20}", events='["user.*", "custom.*"]')


PARTNER = partner_receiver()
PATH_SECRET = "in_" + "0123456789abcdef" * 3
RECEIVE = "/api/integrations/webhook/receive/" + PATH_SECRET


def through(proxy: TcpProxy, url: str) -> str:
    """The store URL with the proxy as its host, and a password (trust auth ignores it) that
    must never be shown."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD}@127.0.0.1:{proxy.port}"))


def until(check: Callable[[], object], what: str, daemon: Daemon | None = None, timeout: float = WAIT_SECONDS) -> Any:
    """Poll `check` until it returns something true; fail if the daemon exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        if daemon is not None and daemon.process.poll() is not None:
            raise AssertionError(f"the daemon exited ({daemon.process.returncode}) {what}: {daemon.log()[-4000:]}")
        try:
            found = check()
        except httpx.TransportError:
            found = None  # the daemon went away (seen above on the next round) or is busy
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting until {what}: {daemon.log()[-4000:] if daemon else ''}"
        time.sleep(0.05)


def trigger(client: httpx.Client, n: int) -> httpx.Response:
    try:
        return client.post(TRIGGER, json={"event": "user.login", "data": {"userId": n, "at": "2026-01-15T10:30:00Z"}})
    except httpx.TransportError as exc:  # only the store goes away here: the API always answers
        raise AssertionError(f"the API did not answer: {exc!r}") from None


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    running = TcpProxy(5432).start()
    yield running
    running.stop()


def test_the_daemon_outlives_a_postgresql_outage_and_delivers_everything_acknowledged(
    tmp_path: Path, postgres_url: str, proxy: TcpProxy, peer: Peer
) -> None:
    (tmp_path / "integrations.d").mkdir()
    (tmp_path / "integrations.d" / "hook.yaml").write_text(hook(peer))
    (tmp_path / "integrations.d" / "partner.yaml").write_text(PARTNER)
    url = through(proxy, postgres_url)
    # replies take a moment: some deliveries are in flight when the store goes away, and their
    # outcomes must be written once it is back
    peer.script = lambda _seen: Reply(delay=0.3)
    daemon = Daemon(tmp_path, "--store", url, env={"ADMIN_SECRET": SECRET, "PARTNER_PATH": PATH_SECRET})
    acknowledged: set[str] = set()
    try:
        daemon.wait_ready(timeout=60)
        with httpx.Client(base_url=daemon.url, headers={"x-admin-secret": SECRET}, timeout=30) as client:
            for n in range(20):
                answer = trigger(client, n)
                assert answer.status_code == 202, answer.text
                acknowledged.add(answer.json()["id"])
            receipt = client.post(RECEIVE, json={"n": 0}, headers={"x-admin-secret": ""})
            assert receipt.status_code == 202, receipt.text
            acknowledged.add(receipt.json()["id"])

            proxy.stop()  # every connection cut, new ones refused: a database that went away

            not_ready = until(
                lambda: (r := client.get("/readyz")).status_code == 503 and r, "/readyz says not ready", daemon
            )
            reason = not_ready.json()["detail"]
            assert f"127.0.0.1:{proxy.port}" in reason and "postgres:***@" in reason, reason
            assert PASSWORD not in not_ready.text

            refused = until(lambda: (r := trigger(client, 99)).status_code != 202 and r, "a trigger is refused", daemon)
            assert refused.status_code == 503, refused.text
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.headers["content-type"] == "application/problem+json"
            assert PASSWORD not in refused.text
            read = client.get("/api/integrations/hook")  # a read of the store answers 503 too, never 500
            assert read.status_code == 503 and "retry-after" in read.headers, read.text
            # a partner's receipt: 503 with Retry-After, and no word of the store's address
            unstored = client.post(RECEIVE, json={"n": 1}, headers={"x-admin-secret": ""})
            assert unstored.status_code == 503 and int(unstored.headers["retry-after"]) >= 1, unstored.text
            assert unstored.json()["type"].endswith("/store-unavailable")
            assert "127.0.0.1" not in unstored.text and "postgres" not in unstored.text

            # the roles that check the store on their own schedule (the controller election, which
            # syncs and sources follow, and reading back what other replicas wrote) meet the outage
            # and carry on: the process stays up
            def roles_waiting() -> bool:
                waiting = {
                    e.get("role") for e in daemon.entries() if e.get("message", "").startswith("store unavailable")
                }
                return {"election", "follow", "delivery"} <= waiting

            until(roles_waiting, "every role has met the outage", daemon)
            assert client.get("/healthz").status_code == 200

            proxy.start()  # the database is back, on the same address

            until(lambda: client.get("/readyz").status_code == 200, "/readyz is ready again", daemon)

            def accepted_again() -> bool:
                answer = trigger(client, 100 + len(acknowledged))
                if answer.status_code == 202:
                    acknowledged.add(answer.json()["id"])
                    return True
                assert answer.status_code == 503, answer.text
                return False

            until(accepted_again, "triggers are accepted again", daemon)
            for n in range(5):
                answer = trigger(client, 200 + n)
                assert answer.status_code == 202, answer.text
                acknowledged.add(answer.json()["id"])
            again = client.post(RECEIVE, json={"n": 1}, headers={"x-admin-secret": ""})
            assert again.status_code == 202, again.text  # the receipt refused above, sent again
            acknowledged.add(again.json()["id"])

            def delivered() -> bool:
                received = {s.json()["id"] for s in peer.requests("/hook")}
                return acknowledged <= received

            until(delivered, "every acknowledged event reached the sink", daemon)
            store = open_store(postgres_url)
            try:

                def recorded() -> bool:
                    with store.engine.connect() as connection:
                        rows = connection.execute(sa.text("SELECT event_id, status FROM deliveries")).all()
                    by_event = {event_id: status for event_id, status in rows}
                    return all(by_event.get(event_id) == "delivered" for event_id in acknowledged)

                until(recorded, "every acknowledged event is recorded as delivered", daemon)
            finally:
                store.close()
        code, log = daemon.stop()
        assert code == 0, log[-4000:]
        assert PASSWORD not in log
    finally:
        if daemon.process.poll() is None:
            daemon.stop()


def test_a_full_sqlite_disk_answers_503_with_retry_after(tmp_path: Path, peer: Peer) -> None:
    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            engine = p.daemon_store.sync.engine
            path = p.store_url.removeprefix("sqlite:///")
            with sqlite3.connect(path) as probe:
                pages = probe.execute("PRAGMA page_count").fetchone()[0]

            def cap(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")  # no room to grow: a full disk

            sa.event.listen(engine, "connect", cap)
            engine.dispose()  # the pool's connections are opened again, capped
            big = {"userId": 1, "at": "2026-01-15T10:30:00Z", "notes": "x" * 200_000}
            full = await api.post(TRIGGER, json={"event": "user.login", "data": big})
            assert full.status_code == 503, full.text
            assert int(full.headers["retry-after"]) >= 1
            assert full.headers["content-type"] == "application/problem+json"
            assert "full" in full.json()["detail"]

            sa.event.remove(engine, "connect", cap)
            engine.dispose()
            deadline = time.monotonic() + WAIT_SECONDS
            while (again := await api.post(TRIGGER, json={"event": "user.login", "data": big})).status_code != 202:
                assert again.status_code == 503 and time.monotonic() < deadline, again.text
                await asyncio.sleep(0.05)
            await p.until(lambda: p.statuses("hook") == {"delivered": 1}, "the event after the disk had room")

    run(scenario)


def test_an_sqlite_write_lock_held_too_long_answers_503_with_retry_after(
    tmp_path: Path, peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reconciler.store.sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_MS", 300)  # "too long" comes sooner in a test

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"hook.yaml": hook(peer)}) as p, serve(p) as api:
            holder = sqlite3.connect(p.store_url.removeprefix("sqlite:///"), isolation_level=None)
            try:
                holder.execute("BEGIN EXCLUSIVE")  # another process writing, and not letting go
                locked = await api.post(TRIGGER, json={"event": "user.login", "data": {"userId": 1, "at": "x"}})
                assert locked.status_code == 503, locked.text
                assert int(locked.headers["retry-after"]) >= 1
                assert "locked" in locked.json()["detail"]
            finally:
                holder.rollback()
                holder.close()
            deadline = time.monotonic() + WAIT_SECONDS
            data = {"userId": 2, "at": "2026-01-15T10:30:00Z"}
            while (again := await api.post(TRIGGER, json={"event": "user.login", "data": data})).status_code != 202:
                assert again.status_code == 503 and time.monotonic() < deadline, again.text
                await asyncio.sleep(0.05)

    run(scenario)


def test_classification_says_unavailable_or_a_bug() -> None:
    from reconciler.store.errors import StoreUnavailable, unavailable_reason

    def wrapped(orig: Exception) -> sa.exc.DBAPIError:
        return sa.exc.OperationalError("INSERT ...", {}, orig)

    def sqlite_error(message: str, code: int) -> sqlite3.Error:
        error = sqlite3.OperationalError(message)
        error.sqlite_errorcode = code  # type: ignore[attr-defined]
        return error

    assert unavailable_reason(wrapped(sqlite_error("database or disk is full", 13))) == "database or disk is full"
    assert unavailable_reason(wrapped(sqlite_error("database is locked", 5))) == "database is locked"
    assert unavailable_reason(wrapped(sqlite_error("disk I/O error", 10 | (3 << 8)))) == "disk I/O error"
    assert unavailable_reason(wrapped(sqlite_error("no such table: nope", 1))) is None  # a bug
    assert unavailable_reason(sa.exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE"))) is None
    assert unavailable_reason(ValueError("a bug")) is None
    assert unavailable_reason(ConnectionRefusedError(111, "Connection refused")) is not None
    assert unavailable_reason(StoreUnavailable("sqlite:///x", "gone")) == "gone"
    # the password never shows, whatever the driver put in its message
    shown = StoreUnavailable.of(wrapped(sqlite_error("cannot reach u:pw-123@db", 14)), "postgresql://u:pw-123@db/x")
    assert shown is not None and "pw-123" not in str(shown) and "postgresql://u:***@db/x" in str(shown)
