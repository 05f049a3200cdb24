"""The event pipeline in-process (reconciler, intake, delivery engine) on a real store."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler.delivery.engine import DeliveryEngine
from reconciler.delivery.sources import SourceWatcher
from reconciler.delivery.sync import SyncScheduler
from reconciler.intake.committer import Accepted, Intake
from reconciler.reconcile.loop import Reconciler
from reconciler.sinks.files import FileSink
from reconciler.store import AsyncStore, open_store

WAIT_SECONDS = 20.0  # generous for a loaded CI machine


def integration(body: str) -> str:
    """A YAML integration from an indented body."""
    return "apiVersion: cms.integrations/v1\nkind: Integration\n" + textwrap.dedent(body).lstrip("\n")


def webhook_to(url: str, *, retry: str = "retry: {schedule: [1s], maxAttempts: 1}", events: str = '["user.*"]') -> str:
    """The webhook integration `hook`, posting to a loopback `url`/hook."""
    return integration(f"""
        id: hook
        name: Hook
        type: webhook
        config:
          endpoint: {url}/hook
          allowPrivateNetwork: true
        {retry}
        webhooks:
          - events: {events}
        """)


def partner_receiver(secret_variable: str = "PARTNER_PATH") -> str:
    """The inbound integration `partner`: receipts at its path secret emit custom.partner.pushed."""
    return integration(f"""
        id: partner
        name: Partner
        type: webhook
        receive:
          secret: ${{env:{secret_variable}}}
          event: custom.partner.pushed
        """)


class Pipeline:
    def __init__(
        self, tmp: Path, files: dict[str, str], environ: dict[str, str] | None = None, store_url: str | None = None
    ) -> None:
        self.config = tmp / "integrations.d"
        self.config.mkdir(exist_ok=True)
        for name, text in files.items():
            (self.config / name).write_text(text)
        self.store_url = store_url or f"sqlite:///{tmp}/state/pipeline.db"
        self.environ = environ or {}

    async def __aenter__(self) -> Pipeline:
        # the components' store, as the daemon has it (its calls off the loop, enforced), and a
        # second handle on the same database for the test's own reads
        self.daemon_store = AsyncStore(open_store(self.store_url))
        self.store = open_store(self.store_url)
        self.reconciler = Reconciler(
            self.daemon_store, self.config, environ=self.environ, resync_seconds=3600, on_remove=self._drain
        )
        self.engine = DeliveryEngine(self.daemon_store, self.reconciler)
        self.intake = Intake(self.daemon_store, self.reconciler, on_commit=self.engine.wake, handoff=self.engine)
        self.stop, self.intake_stop, self.engine_stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.tasks = [
            asyncio.create_task(self.reconciler.run(self.stop)),
            asyncio.create_task(self.reconciler.follow(self.stop)),  # a second pipeline on one store follows
            asyncio.create_task(self.intake.run(self.intake_stop)),
            asyncio.create_task(self.engine.run(self.engine_stop)),
            asyncio.create_task(SyncScheduler(self.reconciler, self.intake, self.engine.http).run(self.stop)),
        ]
        files = self.engine.records.get("file")
        self.sources = SourceWatcher(self.reconciler, self.intake, files if isinstance(files, FileSink) else None)
        self.tasks.append(asyncio.create_task(self.sources.run(self.stop)))
        await self.until(lambda: self.reconciler.ready)
        problems = self.reconciler.last_pass
        assert problems is not None and not problems.refused and not problems.waiting, problems
        return self

    async def _drain(self, integration_id: str) -> None:
        await self.engine.drain(integration_id)

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        self.intake_stop.set()
        self.engine_stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), timeout=30)
        await self.daemon_store.close()
        self.store.close()

    async def emit(self, event: str, data: dict[str, Any]) -> Accepted:
        return await self.intake.emit(event, data)

    async def until(self, check: Callable[[], object], what: str = "", timeout: float = WAIT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what or check}")

    def statuses(self, integration_id: str) -> dict[str, int]:
        return self.store.delivery_counts(integration_id)
