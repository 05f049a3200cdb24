"""Circuit breakers and Retry-After pauses, one per endpoint for every replica of a store.

A breaker (one per endpoint: scheme and host) opens after THRESHOLD consecutive failures and
holds every request for a cool-down that doubles each time it opens again (up to
MAX_OPEN_SECONDS). Past the cool-down it is half-open: one request, the probe, decides; its
success closes the breaker, its failure opens it again. A pause (one per URL) holds every
request until the time a partner's Retry-After gave.

Both live in the store's `endpoint_states` rows, so N replicas behave as one: the failure
that opens a breaker opens it for all, none sends while it is open, and when it is half-open
exactly one replica wins the probe (a compare-and-set on the row: see
reconciler.store.endpoints) while the others hold their requests. The changes are the pure
functions below; the store applies them race-safe.

The hot path stays off the store: each process keeps the rows in memory and asks them per
request. It reads the store once a second (`follow`), so a breaker opened or a pause taken by
another replica holds here within about a second; it writes only what changes the shared
state: a failure, a success while failures are counted, a probe, a pause. A healthy
endpoint costs no store call per request.

Counting is approximate across replicas: a success clears the count only when this process
knows of failures (its copy is at most a second old), and requests in flight when the breaker
opens still end, and count, as they did in one process. Opening, and the one probe, are
decided by the store. While the store is unavailable, each process decides alone on its own
copy, as a single process did, and the store's rows are the truth again once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.delivery.retry import EndpointState
from reconciler.store import AsyncStore, EndpointChange, EndpointRow, StoreUnavailable

if TYPE_CHECKING:
    from reconciler.delivery.profile import DeliveryProfile

log = logging.getLogger("reconciler.delivery")

BREAKER = "breaker"
PAUSE = "pause"
THRESHOLD = 5  # consecutive failures that open a breaker
BASE_OPEN_SECONDS = 5.0  # the first cool-down; it doubles with each opening in a row
MAX_OPEN_SECONDS = 600.0
TRIAL_WAIT_SECONDS = 2.0  # held work is tried again this soon while another request probes
PROBE_GRACE_SECONDS = 10.0  # a probe's claim outlives its request's timeout by this much
FOLLOW_SECONDS = 1.0  # how stale this process's copy of the shared state may be
STORE_BACKOFF_SECONDS = 5.0  # after a failed store call, decide alone this long before asking again


@dataclass(frozen=True, slots=True)
class Turn:
    """What the breaker says to one request: go (as the endpoint's one probe when `probe` is
    set), or wait until `retry_at`."""

    go: bool
    probe: str | None = None
    retry_at: float = 0.0


GO = Turn(True)


# --- the changes the store applies (pure: a row in, a row out) ----------------------------------------


def cool_down(opened: int) -> float:
    """The cool-down of the breaker's opening after `opened` openings in a row."""
    return min(MAX_OPEN_SECONDS, BASE_OPEN_SECONDS * 2.0 ** min(opened, 32))


def failure_counted(row: EndpointRow, *, now: float, probe: str | None) -> EndpointRow:
    """A request failed: count it; open the breaker at THRESHOLD, and again (for longer) when
    the failed request was the probe. Failures of requests already in flight when it opened
    do not lengthen the cool-down."""
    failures = row.failures + 1
    opens = row.open_until is None and failures >= THRESHOLD
    probe_failed = probe is not None and row.probe_owner == probe
    if not (opens or probe_failed):
        return dataclasses.replace(row, failures=failures)
    return dataclasses.replace(
        row,
        failures=failures,
        open_until=now + cool_down(row.opened),
        opened=row.opened + 1,
        probe_owner=None,
        probe_until=None,
    )


def closed(row: EndpointRow) -> EndpointRow:
    """A request succeeded: the endpoint works, for every replica."""
    return dataclasses.replace(row, failures=0, opened=0, open_until=None, probe_owner=None, probe_until=None)


def probe_claimed(row: EndpointRow, *, token: str, now: float, until: float) -> EndpointRow:
    """Take the probe when the breaker is half-open and nobody holds it (or its holder's claim
    lapsed): the row as it was when another replica was first or the breaker is not half-open."""
    half_open = row.open_until is not None and row.open_until <= now
    free = row.probe_until is None or row.probe_until < now
    if not (half_open and free):
        return row
    return dataclasses.replace(row, probe_owner=token, probe_until=until)


def probe_ended(row: EndpointRow, *, token: str) -> EndpointRow:
    """The probe's answer said nothing about the endpoint (a 4xx, a template error): the next
    request may probe at once."""
    if row.probe_owner != token:
        return row
    return dataclasses.replace(row, probe_owner=None, probe_until=None)


def paused(row: EndpointRow, *, until: float) -> EndpointRow:
    """A partner asked to wait until `until` (the later of two pauses holds)."""
    if row.paused_until is not None and row.paused_until >= until:
        return row
    return dataclasses.replace(row, paused_until=until)


# --- one process's copy, and its changes through the store ------------------------------------------


class SharedEndpoints:
    """The breakers and pauses of every endpoint, as this process knows them: asked in memory
    per request, changed through the store, followed from the store once a second."""

    def __init__(self, store: AsyncStore, owner: str) -> None:
        self.store = store
        self.owner = owner
        self._rows: dict[tuple[str, str], EndpointRow] = {}
        self._probes = itertools.count(1)
        self._closing: set[str] = set()  # breakers whose closing is being written
        self._store_down_until = 0.0

    # --- per request, in memory -------------------------------------------------------------------

    def turn(self, profile: DeliveryProfile, now: float) -> Turn | None:
        """Whether a request to the profile's endpoint may go: GO (closed: the common case), a
        wait, or None when the breaker is half-open and the probe is free: `claim_probe` then."""
        row = self._rows.get((BREAKER, profile.breaker_key))
        if row is None or row.open_until is None:
            return GO
        if now < row.open_until:
            return Turn(False, retry_at=row.open_until)
        if row.probe_until is not None and now <= row.probe_until:
            return Turn(False, retry_at=now + TRIAL_WAIT_SECONDS)
        return None

    def paused_until(self, profile: DeliveryProfile) -> float:
        row = self._rows.get((PAUSE, profile.pause_key))
        return (row.paused_until or 0.0) if row is not None else 0.0

    def state(self, profile: DeliveryProfile, now: float) -> EndpointState:
        """What holds the profile's endpoint now, for the health monitor."""
        breaker = self._rows.get((BREAKER, profile.breaker_key))
        paused_until = self.paused_until(profile)
        return EndpointState(
            breaker_open_until=breaker.open_until if breaker is not None else None,
            paused_until=paused_until if paused_until > now else None,
        )

    def rows(self, kind: str) -> dict[str, EndpointRow]:
        """This process's copy of the rows of one kind, by key."""
        return {key: row for (k, key), row in self._rows.items() if k == kind}

    # --- changes ------------------------------------------------------------------------------------

    async def claim_probe(self, profile: DeliveryProfile, now: float) -> Turn:
        """Try to be the one request that probes the half-open breaker, among every replica."""
        key = profile.breaker_key
        token = f"{self.owner}#{next(self._probes)}"
        change = _bind(probe_claimed, token=token, now=now, until=now + profile.timeout_seconds + PROBE_GRACE_SECONDS)
        # claimed here at once, so the other requests of this process wait rather than ask too
        self._keep(change(self._row(BREAKER, key)), local=True)
        row, _ = await self._change(BREAKER, key, change)
        if row.probe_owner == token:
            return Turn(True, probe=token)
        return self.turn(profile, now) or Turn(False, retry_at=now + TRIAL_WAIT_SECONDS)

    def needs_success(self, profile: DeliveryProfile, turn: Turn) -> bool:
        """Whether a success must be written (it probed, or failures are counted): most are not."""
        if turn.probe is not None:
            return True
        row = self._rows.get((BREAKER, profile.breaker_key))
        dirty = row is not None and (row.failures > 0 or row.open_until is not None)
        return dirty and profile.breaker_key not in self._closing

    async def succeeded(self, profile: DeliveryProfile) -> None:
        key = profile.breaker_key
        self._closing.add(key)
        try:
            before, _, wrote = await self._observed(BREAKER, key, closed)
        finally:
            self._closing.discard(key)
        if wrote and before.open_until is not None:
            log.info("circuit breaker closed", extra={"fields": {"endpoint": key}})

    async def failed(self, profile: DeliveryProfile, now: float, turn: Turn) -> None:
        key = profile.breaker_key
        before, row, wrote = await self._observed(BREAKER, key, _bind(failure_counted, now=now, probe=turn.probe))
        if wrote and row.open_until is not None and row.open_until != before.open_until:
            log.warning(
                "circuit breaker opened",
                extra={
                    "fields": {
                        "endpoint": key,
                        "failures": row.failures,
                        "probe_failed": turn.probe is not None,
                        "seconds": round(row.open_until - now, 3),
                    }
                },
            )

    async def settled(self, turn: Turn, profile: DeliveryProfile) -> None:
        """A probe's answer said nothing about the endpoint: free the probe."""
        if turn.probe is not None:
            await self._change(BREAKER, profile.breaker_key, _bind(probe_ended, token=turn.probe))

    async def pause(self, profile: DeliveryProfile, until: float) -> None:
        """Hold every request to the profile's URL until `until`: here at once, on every
        replica once they read the store (within FOLLOW_SECONDS)."""
        key = profile.pause_key
        change = _bind(paused, until=until)
        self._keep(change(self._row(PAUSE, key)), local=True)
        await self._change(PAUSE, key, change)

    # --- following the store --------------------------------------------------------------------------

    async def follow(self, stop: asyncio.Event, every: float = FOLLOW_SECONDS) -> None:
        """Read the shared state every `every` seconds until `stop`."""
        while not stop.is_set():
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    async def refresh(self) -> None:
        """Replace this copy with the store's, keeping what this process changed since the read."""
        started = time.time()
        if started < self._store_down_until:
            return
        try:
            rows = await self.store.endpoint_rows(started)
        except StoreUnavailable:  # the dispatcher says so; this copy holds until the store is back
            self._store_down_until = time.time() + STORE_BACKOFF_SECONDS
            return
        except Exception:
            log.exception("could not read the shared circuit breakers and pauses")
            return
        fresh = {(row.kind, row.key): row for row in rows}
        for key, mine in self._rows.items():
            theirs = fresh.get(key)
            newer = mine.updated_at >= started if theirs is None else mine.version > theirs.version
            if newer:
                fresh[key] = mine  # written after the read began
        self._rows = fresh

    # --- internals ------------------------------------------------------------------------------------

    def _row(self, kind: str, key: str) -> EndpointRow:
        return self._rows.get((kind, key)) or EndpointRow(kind, key)

    def _keep(self, row: EndpointRow, local: bool = False) -> None:
        """Take a row into this copy unless it holds a newer one; `local`: changed here only
        (until the store's answer), with the version it was worked out from."""
        if local:
            row = dataclasses.replace(row, updated_at=time.time())
        mine = self._rows.get((row.kind, row.key))
        if mine is None or row.version >= mine.version:
            self._rows[(row.kind, row.key)] = row

    async def _change(self, kind: str, key: str, change: EndpointChange) -> tuple[EndpointRow, bool]:
        """Apply `change` through the store, or here alone while the store is unavailable."""
        if time.time() >= self._store_down_until:
            try:
                row, wrote = await self.store.change_endpoint(kind, key, change)
            except StoreUnavailable:
                self._store_down_until = time.time() + STORE_BACKOFF_SECONDS
            except Exception:  # a bug must not cost the send's outcome: decide alone this once
                log.exception("could not write a shared circuit breaker or pause", extra={"fields": {"key": key}})
            else:
                self._keep(row)
                return row, wrote
        before = self._row(kind, key)
        row = change(before)
        self._keep(row, local=True)
        return row, row != before

    async def _observed(self, kind: str, key: str, change: EndpointChange) -> tuple[EndpointRow, EndpointRow, bool]:
        """`_change`, also returning the row the written change was worked out from."""
        seen: list[EndpointRow] = []

        def recorded(row: EndpointRow) -> EndpointRow:
            seen.append(row)
            return change(row)

        row, wrote = await self._change(kind, key, recorded)
        return seen[-1], row, wrote


def _bind(change: Callable[..., EndpointRow], **values: object) -> EndpointChange:
    """One of the changes above with its arguments, as the store applies it: row in, row out."""

    def bound(row: EndpointRow) -> EndpointRow:
        return change(row, **values)

    return bound
