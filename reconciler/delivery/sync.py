"""Scheduled syncs: every `syncFrequency` seconds, an integration's `config.syncEndpoint` is
fetched with the integration's auth, and the result is emitted as `integration.synced`, an
event other integrations can subscribe to (the student information system's changes feeding
a reporting table, say).

Syncs are aligned to multiples of their frequency, like batch flushes, and at most one per
integration is in flight. Each fetch is logged as an attempt (`sync:<id>`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from reconciler.delivery.attempts import attempt_of
from reconciler.delivery.schedule import Schedule
from reconciler.events.envelope import EventRejected, new_id, now_timestamp
from reconciler.manifests.models import HttpConfig
from reconciler.sinks import config_of

if TYPE_CHECKING:
    from reconciler.intake.committer import Intake
    from reconciler.reconcile.loop import Reconciler
    from reconciler.registry import AppliedIntegration
    from reconciler.sinks.http import HttpSink

log = logging.getLogger("reconciler.sync")

SYNC_BODY_BYTES = 256 * 1024  # the part of a sync result that goes into the event
EXCERPT_CHARS = 1024


class SyncScheduler(Schedule):
    """Fetches each integration's `syncEndpoint` on its schedule and emits the answer as
    `integration.synced`; every fetch is an attempt in the integration's log."""

    role = "sync"

    def __init__(self, reconciler: Reconciler, intake: Intake, http: HttpSink) -> None:
        super().__init__(reconciler)
        self.intake = intake
        self.http = http

    def serves(self, integration: AppliedIntegration) -> bool:
        config = integration.spec.config
        return isinstance(config, HttpConfig) and bool(config.syncEndpoint)

    def job(self, integration: AppliedIntegration) -> Coroutine[Any, Any, None]:
        return self.sync(integration)

    async def sync(self, integration: AppliedIntegration) -> None:
        """Fetch the sync endpoint once and emit what it answered."""
        endpoint = config_of(integration, HttpConfig).syncEndpoint
        assert endpoint is not None  # serves() chose it for having one
        started = time.time()
        result = await self.http.send(
            integration, b"", new_id("sync"), method="GET", url=endpoint, read_limit=SYNC_BODY_BYTES
        )
        body: Any = result.excerpt
        with contextlib.suppress(TypeError, ValueError):
            body = json.loads(result.excerpt or "")
        attempt = attempt_of(
            result,
            delivery_id=f"sync:{integration.id}",
            integration_id=integration.id,
            at=started,
            trigger="sync",
            excerpt_chars=EXCERPT_CHARS,
        )
        await self.reconciler.store.log_attempts([attempt])
        if not result.ok:
            log.warning("sync failed", extra={"fields": {"integration": integration.id, "error": result.error}})
            return
        data = {"integrationId": integration.id, "status": result.status, "body": body, "fetchedAt": now_timestamp()}
        try:
            await self.intake.emit("integration.synced", data, source=f"sync:{integration.id}")
        except EventRejected as exc:
            log.warning("sync result refused", extra={"fields": {"integration": integration.id, "error": str(exc)}})
