"""Watched sources: every `syncFrequency` seconds, a file integration's `config.source` prefix is
listed, and each new file found there is emitted once as `file.received`.

"Once" survives restarts: each emission carries an intake dedup key made of the integration,
the file's path and its version (the object's ETag, else its modification time and size), and
the events table keeps those keys unique. A file rewritten with new content is a new version
and is emitted again. Keys go with their events after the store's retention; a file older than
the retention that the watcher has been seeing all along is not emitted a second time.

Scans are aligned to multiples of their frequency, run on the leader only (as syncs do), and at
most one per integration is in flight. Each failed listing is logged as an attempt
(`source:<id>`). Objects the file sink writes itself (named with a unit id, and attachments)
are never reported, so a source overlapping the export prefix does not feed itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reconciler.delivery.schedule import Schedule
from reconciler.events.envelope import EventRejected
from reconciler.manifests.models import FileConfig
from reconciler.sinks import config_of
from reconciler.sinks.files import FileSink, Target
from reconciler.store import Attempt

if TYPE_CHECKING:
    from reconciler.intake.committer import Intake
    from reconciler.reconcile.loop import Reconciler
    from reconciler.registry import AppliedIntegration

log = logging.getLogger("reconciler.sources")

MAX_FILES_PER_SCAN = 100_000
# what the file sink writes: `<stem>.evt_<28 hex>[-NNN].<ext>`, `<stem>.bat_...`, `{id}` names
# (`.../evt_<28 hex>.<ext>`) and attachments (`.../attachments/evt_<28 hex>/<name>`)
_OWN_OBJECT = re.compile(r"((^|[/.])(evt|bat)_[0-9a-f]{28}(-\d{3})?(\.[^/]*)?$)|(/|^)attachments/evt_[0-9a-f]{28}/")


class SourceWatcher(Schedule):
    """Lists the `source` prefix of file integrations on their schedule and emits `file.received`
    for each new object, deduplicated by the events table."""

    role = "sources"

    def __init__(
        self,
        reconciler: Reconciler,
        intake: Intake,
        files: FileSink | None = None,
        retention_seconds: float | None = None,
    ) -> None:
        super().__init__(reconciler)
        self.intake = intake
        self.files = files or FileSink()
        self._owns_files = files is None
        self.retention_seconds = retention_seconds
        self._seen: dict[str, set[str]] = {}  # dedup keys known emitted, per integration
        self.scans = 0

    def serves(self, integration: AppliedIntegration) -> bool:
        config = integration.spec.config
        return isinstance(config, FileConfig) and bool(config.source)

    def job(self, integration: AppliedIntegration) -> Coroutine[Any, Any, int]:
        return self.scan(integration)

    async def closed(self) -> None:
        if self._owns_files:
            await self.files.close()

    async def scan(self, integration: AppliedIntegration) -> int:
        """List the source prefix once and emit what is new; returns how many were emitted."""
        started = time.time()
        source = (config_of(integration, FileConfig).source or "").strip("/")
        target: Target | None = None
        try:
            target = await self.files.target(integration)
            found = await self.files.blocking(target, _list, target, source)
            since = await self.reconciler.store.call(self._watching_since, integration.id, started)
        except Exception as exc:
            error = f"listing {source} failed: {type(exc).__name__}: {exc}"[:500]
            error = target.scrub(error) if target is not None else error
            await self.reconciler.store.log_attempts(
                [
                    Attempt(
                        delivery_id=f"source:{integration.id}",
                        integration_id=integration.id,
                        at=started,
                        attempt=1,
                        trigger="sync",
                        outcome="failed",
                        error=error,
                    )
                ],
            )
            log.warning("source listing failed", extra={"fields": {"integration": integration.id, "error": error}})
            return 0
        horizon = started - self.retention_seconds if self.retention_seconds else None
        seen = self._seen.setdefault(integration.id, set())
        current: set[str] = set()
        emitted = 0
        for path, info in found:
            data = _data(integration.id, target, path, info)
            key = dedup_key(integration.id, path, data.get("etag") or _stamp(info))
            current.add(key)
            if key in seen:
                continue
            modified = _modified(info)
            if horizon is not None and since < horizon and modified is not None and modified < horizon:
                seen.add(key)  # seen by scans long ago; its event (and key) may be gone with retention
                continue
            try:
                accepted = await self.intake.emit(
                    "file.received", data, source=f"source:{integration.id}", dedup_key=key
                )
            except EventRejected as exc:
                log.warning(
                    "file.received refused", extra={"fields": {"integration": integration.id, "error": str(exc)}}
                )
                continue
            seen.add(key)
            emitted += 0 if accepted.duplicate_of else 1
        seen.intersection_update(current)  # files gone from the prefix are forgotten here (not in the store)
        self.scans += 1
        return emitted

    def _watching_since(self, integration_id: str, now: float) -> float:
        key = f"source-since:{integration_id}"
        store = self.reconciler.store.sync  # on the store's threads (called through `call`)
        since = store.get_meta(key)
        if since is None:
            store.set_meta(key, now)
            return now
        return float(since)


def dedup_key(integration_id: str, path: str, version: str) -> str:
    """At most 255 characters whatever the path's length (the events table's limit)."""
    digest = hashlib.sha256(f"{path}\0{version}".encode()).hexdigest()
    return f"file.received:{integration_id}:{digest}"


def _list(target: Target, source: str) -> list[tuple[str, dict[str, Any]]]:
    """Files under the prefix (recursively), as (path relative to the target's root, info)."""
    prefix = target.full(source)
    if not target.fs.exists(prefix):
        return []
    found = target.fs.find(prefix, detail=True)
    files: list[tuple[str, dict[str, Any]]] = []
    root = target.root + "/" if target.root else ""
    for name, info in found.items():
        if info.get("type", "file") != "file":
            continue
        relative = name[len(root) :] if root and name.startswith(root) else name
        base = relative.rsplit("/", 1)[-1]
        if base.startswith(".") or _OWN_OBJECT.search(relative):
            continue  # hidden and temporary files, and what the file sink wrote
        files.append((relative, info))
        if len(files) >= MAX_FILES_PER_SCAN:
            break
    files.sort()
    return files


def _data(integration_id: str, target: Target, path: str, info: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {"integrationId": integration_id, "url": target.url(path), "path": path}
    size = info.get("size")
    if isinstance(size, int) and size >= 0:
        data["size"] = size
    modified = _modified(info)
    if modified is not None:
        moment = datetime.fromtimestamp(modified, UTC)
        data["modifiedAt"] = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    etag = info.get("ETag") or info.get("etag")
    if isinstance(etag, str) and etag:
        data["etag"] = etag.strip('"')
    return data


def _modified(info: dict[str, Any]) -> float | None:
    for field in ("LastModified", "mtime", "last_modified", "updated", "modified"):
        value = info.get(field)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def _stamp(info: dict[str, Any]) -> str:
    return f"{_modified(info)}:{info.get('size')}"
