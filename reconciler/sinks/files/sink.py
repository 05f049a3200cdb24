"""FileSink: the RecordSink of `file` integrations.

It opens and caches each integration generation's storage (target.py), copies attachments
first (attachments.py), plans the unit's objects (formats.py) and puts them, all at once. fsspec
is blocking: its calls run on the sink's own threads, bounded by `config.timeout`. A failure is
a SinkResult whose message holds no secret; one on our side (config, data) is not the storage's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from reconciler.logs import count
from reconciler.manifests.durations import parse_duration
from reconciler.manifests.models import FileConfig
from reconciler.registry import AppliedIntegration
from reconciler.sinks import RecordSink, SinkResult, config_of, ssrf
from reconciler.sinks.files.attachments import Attachments
from reconciler.sinks.files.errors import FileSinkError
from reconciler.sinks.files.formats import plan
from reconciler.sinks.files.target import Target, inspect, open_target, put_object

T = TypeVar("T")

THREADS = 16  # blocking storage calls in flight, across file integrations
EXCERPT_CHARS = 1024


class FileSink(RecordSink):
    """Events as JSON Lines or CSV objects, on any fsspec storage; registered for `type: file`.

    Each delivered unit writes its own immutable objects, named so that a retry overwrites
    what an interrupted try left; the source watcher reads its storage through `target`."""

    def __init__(self) -> None:
        self._targets: dict[tuple[str, int, str], Target] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="file-sink")
        self._attachments = Attachments()

    # --- the RecordSink protocol ---------------------------------------------------------------

    async def write(
        self, integration: AppliedIntegration, envelopes: list[dict[str, Any]], message_id: str
    ) -> SinkResult:
        started = time.perf_counter()
        config = config_of(integration, FileConfig)
        target: Target | None = None
        try:
            target = await self.target(integration)
            attachments: dict[str, dict[str, Any]] = {}
            if config.copyAttachments:
                for envelope in envelopes:
                    if envelope.get("event") == "note.uploaded":
                        attachments[envelope["id"]] = await self._attachments.copy(
                            integration.id, config, target, envelope, self._putter(target)
                        )
            objects = plan(integration.id, config, envelopes, message_id, attachments)
            await asyncio.gather(*(self.blocking(target, put_object, target, o.name, o.body) for o in objects))
        except Exception as exc:
            return _failure(exc, target, config, started)
        shown = ", ".join(o.name for o in objects)
        copied = f"; {count(len(attachments), 'attachment')} copied" if attachments else ""
        excerpt = f"wrote {count(len(envelopes), 'record')} in {count(len(objects), 'object')}: {shown}{copied}"
        return SinkResult.success(target.scrub(excerpt)[:EXCERPT_CHARS], started)

    async def check(self, integration: AppliedIntegration) -> SinkResult:
        """Reach the storage and look at the target (and the source prefix), writing nothing."""
        started = time.perf_counter()
        config = config_of(integration, FileConfig)
        target: Target | None = None
        try:
            target = await self.target(integration)
            lines = [await self.blocking(target, inspect, target, "")]
            if config.source:
                lines.append(await self.blocking(target, inspect, target, config.source.strip("/")))
        except Exception as exc:
            return _failure(exc, target, config, started)
        excerpt = target.scrub("; ".join(lines))[:EXCERPT_CHARS]
        return SinkResult.success(excerpt, started)

    async def close(self) -> None:
        await self._attachments.close()
        self._targets.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- storage ---------------------------------------------------------------------------------

    async def target(self, integration: AppliedIntegration) -> Target:
        """The storage of the integration's generation, opened on first use within config.timeout and
        kept until the generation or a resolved secret changes."""
        resolved = integration.resolved
        key = (integration.id, integration.generation, resolved.fingerprint if resolved is not None else "")
        target = self._targets.get(key)
        if target is None:
            config = config_of(integration, FileConfig)
            timeout = parse_duration(config.timeout)
            loop = asyncio.get_running_loop()
            target = await asyncio.wait_for(
                loop.run_in_executor(self._executor, open_target, config, resolved, timeout), timeout
            )
            for stale in [k for k in self._targets if k[0] == integration.id]:
                del self._targets[stale]
            self._targets[key] = target
        return target

    async def blocking(self, target: Target, call: Callable[..., T], *args: Any) -> T:
        """A blocking storage call on the sink's threads, bounded by the integration's timeout.
        A call that times out may still finish later: names are stable, so a retry overwrites it."""
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(self._executor, call, *args), target.timeout)

    def _putter(self, target: Target) -> Callable[[str, bytes], Awaitable[None]]:
        """Where a copied attachment goes: an object of the target, put on the sink's threads."""

        async def put(name: str, body: bytes) -> None:
            await self.blocking(target, put_object, target, name, body)

        return put


def _failure(exc: Exception, target: Target | None, config: FileConfig, started: float) -> SinkResult:
    """The failed result: a message without secrets, counted against the storage only when it is
    the storage's (not our config's or data's)."""
    endpoint_failure = True
    blocked = ssrf.blocked_cause(exc)
    if blocked is not None:
        # the SSRF guard refused a connection the storage client made: our config's doing
        message, endpoint_failure = f"the storage was not reached: {blocked}", False
    elif isinstance(exc, FileSinkError):
        message, endpoint_failure = str(exc), False
    elif isinstance(exc, TimeoutError):
        message = f"the storage did not answer within {config.timeout}"
    elif isinstance(exc, FileNotFoundError):
        message, endpoint_failure = f"not found: {exc}", False
    elif isinstance(exc, PermissionError):
        message, endpoint_failure = f"permission denied: {exc}", False
    elif isinstance(exc, ImportError | ValueError | TypeError):
        # no backend for the URL's scheme, storage options the backend refuses, data JSON cannot hold
        message, endpoint_failure = f"{type(exc).__name__}: {exc}", False
    else:
        message = f"{type(exc).__name__}: {exc}"
    message = message[:500]
    if target is not None:
        message = target.scrub(message)
    return SinkResult.failure(message, started, endpoint_failure=endpoint_failure)
