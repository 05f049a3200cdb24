"""The outcome writer: what happened to each delivery, written to the store in groups.

Under load, outcomes arrive one by one; a thread hop per handful of them costs the event
loop more than the writes themselves, so the writer lingers a moment to gather a group. A
flush (a drain, a shutdown) ends the wait. Should the process die before a write, the
deliveries' leases expire and they are tried again: at-least-once holds.

While the store is unavailable, a group that could not be written stays first in line and is
written again after a backoff: an outcome is not dropped because the database went away for a
while (the request was made; dropping it would send it again once the lease expires).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from reconciler.store import AsyncStore, Outage, Outcome, StoreUnavailable

log = logging.getLogger("reconciler.delivery")

OUTCOME_GROUP = 1000  # outcomes per write
OUTCOME_LINGER_SECONDS = 0.02  # outcomes gather this long before a write (leases cover a crash)


class _Final:
    """The last item: written, the writer stops."""


_FINAL = _Final()
_Item = Outcome | asyncio.Future[None] | _Final  # an outcome, a flush request, the end


class OutcomeWriter:
    """Queues outcomes and writes them in groups until `close()`; `flush()` waits for a write."""

    def __init__(self, store: AsyncStore, owner: str | None = None) -> None:
        self.store = store
        self.owner = owner  # outcomes apply where this owner still holds the lease
        self._queue: deque[_Item] = deque()
        self._ready = asyncio.Event()
        self._linger: asyncio.Future[None] | None = None  # the writer's wait for more outcomes
        self._running = False
        self._outage = Outage("outcome writer")

    def put(self, outcome: Outcome) -> None:
        self._put(outcome)

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._put(_FINAL)

    async def flush(self) -> None:
        """Wait until the outcomes put so far are written."""
        if not self._running:
            return
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._put(written)
        await written

    async def run(self) -> None:
        self._running = True
        try:
            while await self._write_group():
                pass
        finally:
            self._running = False

    def _put(self, item: _Item) -> None:
        self._queue.append(item)
        if len(self._queue) == 1:
            self._ready.set()
        if not isinstance(item, Outcome) and self._linger is not None:
            _settle(self._linger)  # someone waits for the write: no lingering

    async def _write_group(self) -> bool:
        """Write the outcomes queued (up to a group); False once the final item is written."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        if isinstance(self._queue[0], Outcome) and len(self._queue) < OUTCOME_GROUP:
            await self._gather_more()
        items = [self._queue.popleft() for _ in range(min(OUTCOME_GROUP, len(self._queue)))]
        group = [item for item in items if isinstance(item, Outcome)]
        if group:
            try:
                applied = await self.store.record(group, self.owner)
            except StoreUnavailable as exc:
                # back in front, in order, and tried again after the backoff (a flush waits for it)
                self._queue.extendleft(reversed(items))
                await asyncio.sleep(self._outage.failed(exc))
                return True
            except Exception:
                # a bug, not an outage: the leases expire and the deliveries are tried again
                log.exception("could not record delivery outcomes")
            else:
                self._outage.recovered()
                if applied < len(group):
                    log.warning(
                        "outcomes not applied: the deliveries' leases were taken over by another replica, "
                        "which sends them again",
                        extra={"fields": {"outcomes": len(group) - applied, "owner": self.owner}},
                    )
        for item in items:
            if isinstance(item, asyncio.Future):
                _settle(item)
        return not any(isinstance(item, _Final) for item in items)

    async def _gather_more(self) -> None:
        loop = asyncio.get_running_loop()
        self._linger = loop.create_future()
        timer = loop.call_later(OUTCOME_LINGER_SECONDS, _settle, self._linger)
        try:
            await self._linger
        finally:
            timer.cancel()
            self._linger = None


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
