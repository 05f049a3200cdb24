"""Circuit breakers and Retry-After pauses shared by replicas through the store.

Replicas racing on one row (threads on two store connections pools, SQLite and PostgreSQL):
one opening, one probe, no failure lost. Then two `reconciler run` processes on one
PostgreSQL schema against one failing loopback target: the breaker opens once for both,
neither sends while it is open, exactly one probe reaches the target per half-open period,
and its success closes the breaker for both; a 429 with Retry-After seen by one replica holds
the other's requests too, and both say Paused.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.delivery.breakers import (
    BASE_OPEN_SECONDS,
    BREAKER,
    PAUSE,
    THRESHOLD,
    closed,
    cool_down,
    failure_counted,
    paused,
    probe_claimed,
)
from reconciler.store import EndpointRow, Store, open_store
from tests.peers import Peer, Reply, Seen
from tests.pipeline import Pipeline, integration
from tests.test_daemon import Daemon

SECRET = "shared-breakers-admin-secret-0123456789"
TRIGGER = "/api/integrations/webhooks/trigger"
WAIT_SECONDS = 60.0
ENDPOINT = "http://127.0.0.1:9"


# --- replicas racing on one row, on both stores ---------------------------------------------------------


@pytest.fixture
def replicas(store_url: str) -> Iterator[list[Store]]:
    """Two stores on one database, each with its own connections: two replicas' views."""
    opened = [open_store(store_url), open_store(store_url)]
    try:
        yield opened
    finally:
        for store in opened:
            store.close()


def race(replicas: list[Store], per_replica: int, change: Callable[[int], Callable[[EndpointRow], EndpointRow]]):
    """Run `change(n)` on the breaker row from `per_replica` threads of each replica at once;
    the (row, wrote) each got back, by n."""
    barrier = threading.Barrier(len(replicas) * per_replica)
    results: dict[int, tuple[EndpointRow, bool]] = {}
    errors: list[BaseException] = []

    def one(store: Store, n: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[n] = store.change_endpoint(BREAKER, ENDPOINT, change(n))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=one, args=(store, index * per_replica + k))
        for index, store in enumerate(replicas)
        for k in range(per_replica)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


def test_failures_racing_from_two_replicas_are_all_counted_and_open_the_breaker_once(replicas):
    now = time.time()
    race(replicas, 6, lambda _n: lambda row: failure_counted(row, now=now, probe=None))
    row, _ = replicas[0].change_endpoint(BREAKER, ENDPOINT, lambda row: row)
    assert row.failures == 12, "no failure lost to another replica's write"
    assert row.opened == 1 and row.open_until == now + BASE_OPEN_SECONDS, "opened once, by the fifth failure"
    assert row.version == 12


def test_of_many_replicas_racing_for_the_probe_exactly_one_wins(replicas):
    now = time.time()
    for _ in range(THRESHOLD):
        replicas[0].change_endpoint(BREAKER, ENDPOINT, lambda row: failure_counted(row, now=now - 10, probe=None))
    results = race(replicas, 5, lambda n: lambda row: probe_claimed(row, token=f"r{n}", now=now, until=now + 30))
    winners = [n for n, (row, wrote) in results.items() if wrote]
    assert len(winners) == 1, results
    assert all(row.probe_owner == f"r{winners[0]}" for row, _ in results.values()), "every loser sees the winner"
    # the winner's probe fails: open again, for longer, and the probe is free for the next period
    row, wrote = replicas[1].change_endpoint(
        BREAKER, ENDPOINT, lambda row: failure_counted(row, now=now, probe=f"r{winners[0]}")
    )
    assert wrote and row.opened == 2 and row.open_until == now + cool_down(1) and row.probe_owner is None
    # a claim while it is open again takes nothing; a success closes it for everyone
    assert (
        replicas[0].change_endpoint(BREAKER, ENDPOINT, lambda r: probe_claimed(r, token="x", now=now, until=now))[1]
        is False
    )
    row, _ = replicas[0].change_endpoint(BREAKER, ENDPOINT, closed)
    assert (row.failures, row.opened, row.open_until) == (0, 0, None)
    seen = {(r.kind, r.key): r for r in replicas[1].endpoint_rows(time.time())}
    assert seen[(BREAKER, ENDPOINT)].open_until is None, "read by the other replica as closed"


def test_a_probe_claim_of_a_replica_that_died_lapses_and_another_takes_it(replicas):
    now = time.time()
    for _ in range(THRESHOLD):
        replicas[0].change_endpoint(BREAKER, ENDPOINT, lambda row: failure_counted(row, now=now - 60, probe=None))
    dead, wrote = replicas[0].change_endpoint(
        BREAKER, ENDPOINT, lambda row: probe_claimed(row, token="dead", now=now - 30, until=now - 1)
    )
    assert wrote and dead.probe_owner == "dead"
    row, wrote = replicas[1].change_endpoint(
        BREAKER, ENDPOINT, lambda row: probe_claimed(row, token="alive", now=now, until=now + 30)
    )
    assert wrote and row.probe_owner == "alive"
    # the late answer of the first claim's request reopens nothing: it is no longer the probe
    row, _ = replicas[0].change_endpoint(BREAKER, ENDPOINT, lambda r: failure_counted(r, now=now, probe="dead"))
    assert (row.opened, row.probe_owner) == (1, "alive")


def test_a_pause_is_read_by_every_replica_until_it_ends(replicas):
    now = time.time()
    replicas[0].change_endpoint(PAUSE, ENDPOINT + "/hook", lambda r: paused(r, until=now + 30))
    replicas[1].change_endpoint(PAUSE, ENDPOINT + "/hook", lambda r: paused(r, until=now + 10))
    [row] = [r for r in replicas[1].endpoint_rows(now) if r.kind == PAUSE]
    assert row.paused_until == now + 30, "the later of two pauses holds"
    assert not [r for r in replicas[1].endpoint_rows(now + 31 + 60) if r.kind == PAUSE], "an ended pause is not read"


# --- two delivery engines on one store, in one process ---------------------------------------------------


def given_back(p: Pipeline, event_id: str) -> set[str]:
    """The integrations whose delivery of the event went back to the store untried, due later."""
    import sqlalchemy as sa

    from reconciler.store import schema

    c = schema.deliveries.c
    query = sa.select(c.integration_id).where(
        c.event_id == event_id, c.lease_owner.is_(None), c.attempts == 0, c.next_attempt_at > time.time()
    )
    with p.store.engine.connect() as connection:
        return set(connection.execute(query).scalars())


def test_an_engine_follows_the_breaker_and_pause_another_engine_stored(tmp_path: Path, store_url: str, peer: Peer):
    """What one replica's engine learns (an opened breaker, a Retry-After) holds the other's
    within its next read of the store, and shows in its health."""
    peer.script = lambda seen: Reply(429, "slow down", {"Retry-After": "60"}) if seen.path == "/slow" else Reply(503)
    files = {"hook.yaml": hook(peer), "slow.yaml": hook(peer).replace("/hook", "/slow").replace("id: hook", "id: slow")}

    async def scenario() -> None:
        async with (
            Pipeline(tmp_path, files, store_url=store_url) as p,
            Pipeline(tmp_path / "replica", files, store_url=store_url) as q,
        ):
            for n in range(THRESHOLD):
                await p.emit("user.login", {"userId": n})
            await p.until(lambda: p.engine.endpoints.rows(BREAKER), "the breaker opened by p")
            hook_q = q.reconciler.snapshot.applied["hook"]
            slow_q = q.reconciler.snapshot.applied["slow"]
            await q.until(lambda: q.engine.endpoint_state(hook_q).breaker_open_until is not None, "q sees it open")
            await q.until(lambda: q.engine.endpoint_state(slow_q).paused_until is not None, "q sees the pause")
            assert q.engine.endpoint_state(hook_q).paused_until is None, "a pause holds its URL, not the host's others"
            requests = len(peer.requests())
            accepted = await q.emit("user.login", {"userId": 99})  # handed to q's own lanes at once
            await q.until(lambda: given_back(q, accepted.id) == {"hook", "slow"}, "both deliveries held back by q")
            assert len(peer.requests()) == requests, "q sent nothing while the breaker was open and the URL paused"

    (tmp_path / "replica").mkdir()
    asyncio.run(scenario())


# --- two daemons on one PostgreSQL schema -----------------------------------------------------------------


def hook(peer: Peer) -> str:
    return integration(f"""
        id: hook
        name: Hook
        type: webhook
        config:
          endpoint: {peer.url}/hook
          allowPrivateNetwork: true
          rateLimit: {{concurrency: 1}}
        retry: {{schedule: [0s, 50ms], maxAttempts: 100}}
        webhooks:
          - events: ["user.*"]
        """)


def replicas_on(tmp_path: Path, stack: ExitStack, postgres_url: str, peer: Peer) -> list[Daemon]:
    """Two `reconciler run` processes on one store and one config directory, both ready."""
    (tmp_path / "integrations.d").mkdir()
    (tmp_path / "integrations.d" / "hook.yaml").write_text(hook(peer))
    daemons = [
        stack.enter_context(Daemon(tmp_path, "--store", postgres_url, env={"ADMIN_SECRET": SECRET})) for _ in range(2)
    ]
    return daemons


def until(check: Callable[[], Any], what: str, daemons: list[Daemon], timeout: float = WAIT_SECONDS) -> Any:
    """Poll `check` until it returns something true; fail if a daemon exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        for daemon in daemons:
            if daemon.process.poll() is not None:
                raise AssertionError(f"a daemon exited ({daemon.process.returncode}) {what}: {daemon.log()[-4000:]}")
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting until {what}: " + "\n".join(
            d.log()[-3000:] for d in daemons
        )
        time.sleep(0.05)


def trigger(daemon: Daemon, n: int) -> str:
    answer = httpx.post(
        daemon.url + TRIGGER,
        json={"event": "user.login", "data": {"userId": n, "at": "2026-01-15T10:30:00Z"}},
        headers={"x-admin-secret": SECRET},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def degraded_reason(daemon: Daemon) -> str | None:
    health = httpx.get(daemon.url + "/api/integrations/health/status", headers={"x-admin-secret": SECRET}, timeout=30)
    [item] = health.json()["integrations"]
    return item["reason"] if item["status"] == "degraded" else None


@pytest.fixture
def outside(postgres_url: str) -> Iterator[Store]:
    """The store as a test looks at it from outside the replicas."""
    store = open_store(postgres_url)
    yield store
    store.close()


def shared(store: Store, kind: str) -> EndpointRow | None:
    """The one row of a kind in the store, if any."""
    rows = [r for r in store.endpoint_rows(time.time()) if r.kind == kind]
    return rows[0] if rows else None


def logged(daemons: list[Daemon], message: str) -> list[dict[str, Any]]:
    return [e for d in daemons for e in d.entries() if e.get("message") == message]


def arrived(requests: list[Seen], after: float, before: float) -> list[Seen]:
    return [s for s in requests if after <= s.at < before]


def test_two_replicas_open_one_breaker_send_one_probe_per_half_open_period_and_close_it_together(
    tmp_path: Path, postgres_url: str, outside: Store, peer: Peer
):
    peer.script = lambda _seen: Reply(500, "down", delay=0.2)  # slow enough for both replicas to be in flight

    def breaker() -> EndpointRow | None:
        return shared(outside, BREAKER)

    with ExitStack() as stack:
        daemons = replicas_on(tmp_path, stack, postgres_url, peer)
        accepted_by = {trigger(daemons[n % 2], n): n % 2 for n in range(20)}  # each replica sends what it accepted
        sent = set(accepted_by)

        first = until(lambda: (row := breaker()) and row.opened >= 1 and row, "the breaker opened", daemons)
        opened_at, open_until = first.open_until - cool_down(0), first.open_until
        # every replica says so, whichever opened it
        until(lambda: all(degraded_reason(d) == "CircuitOpen" for d in daemons), "both replicas CircuitOpen", daemons)
        second = until(lambda: (row := breaker()) and row.opened >= 2 and row, "the probe failed", daemons)
        reopened_at, reopen_until = second.open_until - cool_down(1), second.open_until
        peer.script = lambda _seen: Reply(200, delay=0.2)  # the endpoint recovers during the second cool-down

        until(lambda: (row := breaker()) and row.open_until is None, "the breaker closed", daemons)
        until(lambda: outside.delivery_counts("hook") == {"delivered": len(sent)}, "every event delivered", daemons)
        until(lambda: not any(degraded_reason(d) == "CircuitOpen" for d in daemons), "closed on both", daemons)

        requests = sorted(peer.requests("/hook"), key=lambda s: s.at)
        before = arrived(requests, 0, opened_at)
        # one count for both: opened at the fifth failure, plus at most the other replica's
        # request in flight then (two per-process breakers would let up to ten through)
        assert THRESHOLD <= len(before) <= THRESHOLD + 1, [s.at for s in requests]
        assert {accepted_by[s.json()["id"]] for s in before} == {0, 1}, "both replicas were sending"
        assert not arrived(requests, opened_at, open_until), "nothing sent while open"
        assert len(arrived(requests, open_until, reopened_at)) == 1, "one probe in the first half-open period"
        assert not arrived(requests, reopened_at, reopen_until), "nothing sent while open again"
        [probe, *after] = arrived(requests, reopen_until, float("inf"))
        assert all(s.at >= probe.finished_at for s in after), "the others waited for the probe's answer"
        assert len(logged(daemons, "circuit breaker opened")) == 2, "opened once, reopened once, by one replica each"
        assert len(logged(daemons, "circuit breaker closed")) == 1


def test_a_retry_after_seen_by_one_replica_holds_both(tmp_path: Path, postgres_url: str, outside: Store, peer: Peer):
    told: list[Seen] = []

    def script(seen: Seen) -> Reply:
        if not told:
            told.append(seen)
            return Reply(429, "slow down", {"Retry-After": "10"})
        return Reply(200)

    peer.script = script
    with ExitStack() as stack:
        daemons = replicas_on(tmp_path, stack, postgres_url, peer)
        sent = {trigger(daemons[0], 0)}
        row = until(lambda: shared(outside, PAUSE), "the pause stored", daemons)
        until(lambda: all(degraded_reason(d) == "Paused" for d in daemons), "both replicas Paused", daemons)
        sent |= {trigger(daemons[n % 2], n) for n in range(1, 11)}
        assert time.time() < row.paused_until, "posted during the pause (or this test shows nothing)"

        until(lambda: outside.delivery_counts("hook") == {"delivered": len(sent)}, "every event delivered", daemons)
        later = peer.requests("/hook")[1:]
        assert len(later) == len(sent), "each event sent once after the pause"
        assert all(s.at >= row.paused_until for s in later), "no request from either replica during the pause"


def test_a_replica_that_does_not_deliver_shows_the_pause_others_met(tmp_path: Path, postgres_url: str, peer: Peer):
    """An `api` replica runs no engine, yet its status says Paused when a delivering replica met
    a partner's Retry-After: it reads the shared rows too."""
    peer.script = lambda seen: Reply(429, "slow down", {"Retry-After": "30"})
    with ExitStack() as stack:
        [delivering] = replicas_on(tmp_path, stack, postgres_url, peer)[:1]
        serving = stack.enter_context(
            Daemon(tmp_path, "--store", postgres_url, "--role", "api", env={"ADMIN_SECRET": SECRET})
        )
        trigger(serving, 0)  # taken by the api replica, sent by the delivering one
        until(lambda: degraded_reason(delivering) == "Paused", "the delivering replica Paused", [delivering, serving])
        until(lambda: degraded_reason(serving) == "Paused", "the api replica Paused", [delivering, serving])
