"""What holds an endpoint, shared by the replicas of one store: circuit breakers and
Retry-After pauses (the `endpoint_states` table).

The store does not decide what a failure or a probe means: delivery hands it a change (a
pure function from the row as it is to the row as it should be) and the store applies it
with compare-and-set on the row's `version`. The UPDATE only matches the version the change
was worked out from, which PostgreSQL (re-checking the condition on the newest row version)
and SQLite (one writer at a time) both make race-safe: when replicas race, one wins and the
others work their change out again from what it wrote.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from reconciler.store import schema as t

CHANGE_TRIES = 20  # a change lost to another replica's is worked out again this often at most
RECENT_SECONDS = 60.0  # a row cleared this recently is still read, so every replica sees it cleared


@dataclass(frozen=True, slots=True)
class EndpointRow:
    """One endpoint's shared state: a breaker (`kind` "breaker") or a pause (`kind` "pause")."""

    kind: str
    key: str
    failures: int = 0
    opened: int = 0
    open_until: float | None = None
    probe_owner: str | None = None
    probe_until: float | None = None
    paused_until: float | None = None
    version: int = 0
    updated_at: float = 0.0


EndpointChange = Callable[[EndpointRow], EndpointRow]

_FIELDS = [f.name for f in dataclasses.fields(EndpointRow)]


class Endpoints:
    """Mixed into Store: needs `self.engine`."""

    engine: sa.Engine
    _insert: Any  # the dialect's insert(), which has on_conflict_do_nothing
    # the outbox's transaction for writes whose loss in a power failure costs little: here a
    # failure counted again or a probe sent twice, never an event
    _bookkeeping: Callable[[], AbstractContextManager[sa.Connection]]

    def endpoint_rows(self, now: float) -> list[EndpointRow]:
        """The rows that hold something now (failures counted, open, a probe, a pause) and
        those changed in the last minute (so a replica sees a breaker close, not only open)."""
        c = t.endpoint_states.c
        query = sa.select(t.endpoint_states).where(
            sa.or_(
                c.failures > 0,
                c.open_until.is_not(None),
                c.probe_until.is_not(None),
                c.paused_until > now,
                c.updated_at > now - RECENT_SECONDS,
            )
        )
        with self.engine.connect() as connection:
            return [EndpointRow(**dict(row)) for row in connection.execute(query).mappings()]

    def change_endpoint(self, kind: str, key: str, change: EndpointChange) -> tuple[EndpointRow, bool]:
        """Apply `change` to the row (a fresh one if there is none); return the row as stored
        and whether this change wrote it (False: the change left the row as it was). Raises
        RuntimeError when other replicas' changes win every one of CHANGE_TRIES tries."""
        c = t.endpoint_states.c
        where = sa.and_(c.kind == kind, c.key == key)
        for _ in range(CHANGE_TRIES):
            with self._bookkeeping() as connection:
                found = connection.execute(sa.select(t.endpoint_states).where(where)).mappings().first()
                current = EndpointRow(**dict(found)) if found else EndpointRow(kind, key)
                wanted = change(current)
                if wanted == current:
                    return current, False
                stored = dataclasses.replace(
                    wanted, kind=kind, key=key, version=current.version + 1, updated_at=time.time()
                )
                values = {name: getattr(stored, name) for name in _FIELDS}
                if found is None:
                    # two replicas inserting at once: one row goes in, the other tries again
                    write: sa.Insert | sa.Update = (
                        self._insert(t.endpoint_states).values(values).on_conflict_do_nothing()
                    )
                else:
                    write = sa.update(t.endpoint_states).where(where, c.version == current.version).values(values)
                # RETURNING says whether it wrote: the driver's rowcount is -1 for a skipped insert
                if connection.execute(write.returning(c.version)).first() is not None:
                    return stored, True
        raise RuntimeError(f"the {kind} state of {key} changed under every one of {CHANGE_TRIES} tries")
