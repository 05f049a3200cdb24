"""Operations on one integration: test sends, its log (and following it), deliveries, replays."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from reconciler.api.common import Runtime, admin_only, admin_only_json, not_found, plain_text, problem, runtime_of
from reconciler.manifests.durations import parse_duration
from reconciler.registry import AppliedIntegration
from reconciler.store import AuditEntry, Outage, StoreUnavailable
from reconciler.store.history import DELIVERY_STATUSES, LOG_KINDS, BadCursor, LogFilter, iso

FOLLOW_POLL_SECONDS = 0.5
FOLLOW_HEARTBEAT_SECONDS = 15.0
MAX_PAGE = 500
DEFAULT_PAGE = 50
REPLAYABLE = ("failed", "dead")
MIN_TIME = 0.0  # 1970-01-01T00:00:00Z
MAX_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


class BadQuery(ValueError):
    """A query parameter or body field that is not valid; its message says what is expected."""


@admin_only_json
async def test(request: Request, body: dict[str, Any]) -> Response:
    """Send an integration.test event through the integration's real sink, now, once."""
    return await run_test(request, body)


async def run_test(request: Request, body: dict[str, Any]) -> Response:
    """The test route's work, once the caller is known to be an admin (the status page's test
    button checks its caller its own way, then answers with what this answers)."""
    runtime = runtime_of(request)
    integration_id = request.path_params["id"]
    found = _testable(runtime, integration_id)
    if isinstance(found, Response):
        return found
    message = body.get("message")
    if message is not None and not isinstance(message, str):
        return problem(422, "Invalid request", "message must be a string", "invalid-request")
    return JSONResponse(await _test_send(runtime, integration_id, found, message[:1000] if message else None))


@admin_only
async def logs(request: Request) -> Response:
    """A page of the integration's log, newest first; with follow=true a stream of its new entries."""
    return await read_log(request)


async def read_log(request: Request) -> Response:
    """The logs route's work, for whoever may read it (the status page follows the same stream)."""
    runtime = runtime_of(request)
    integration_id = request.path_params["id"]
    unknown = _unknown(runtime, integration_id)
    if unknown:
        return unknown
    try:
        where = _log_filter(request)
        limit = _limit(request)
        follow = _flag(request, "follow")
    except BadQuery as exc:
        return problem(400, "Bad request", str(exc), "invalid-query")
    if follow:
        # where to start is read before the stream opens: a store that is unavailable now is
        # answered with a 503, not with a stream that breaks at once
        start = request.headers.get("last-event-id") or await runtime.reconciler.store.latest_log_cursor(
            integration_id, where
        )
        return StreamingResponse(
            _follow(runtime, integration_id, where, start),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
    try:
        items, cursor = await runtime.reconciler.store.log_page(
            integration_id, where, before=request.query_params.get("cursor"), limit=limit
        )
    except BadCursor as exc:
        return problem(400, "Bad request", str(exc), "invalid-query")
    return JSONResponse({"items": items, "nextCursor": cursor})


@admin_only
async def deliveries(request: Request) -> Response:
    """A page of the integration's deliveries by status (pending, failed and dead unless asked), newest first."""
    runtime = runtime_of(request)
    integration_id = request.path_params["id"]
    unknown = _unknown(runtime, integration_id)
    if unknown:
        return unknown
    try:
        statuses = _choices(request, "status", DELIVERY_STATUSES) or ["pending", "failed", "dead"]
        limit = _limit(request)
        items, cursor = await runtime.reconciler.store.delivery_page(
            integration_id,
            statuses,
            before=request.query_params.get("cursor"),
            limit=limit,
        )
    except (BadQuery, BadCursor) as exc:
        return problem(400, "Bad request", str(exc), "invalid-query")
    return JSONResponse({"items": items, "nextCursor": cursor})


@admin_only_json
async def replay(request: Request, body: dict[str, Any]) -> Response:
    """Queue one delivery again, or every failed or dead one since a time, with fresh attempts."""
    return await run_replay(request, body)


async def run_replay(request: Request, body: dict[str, Any]) -> Response:
    """The replay route's work, once the caller is known to be an admin (see run_test)."""
    runtime = runtime_of(request)
    integration_id = request.path_params["id"]
    unknown = _unknown(runtime, integration_id)
    if unknown:
        return unknown
    try:
        delivery_id, since, statuses = _replay_request(body)
    except BadQuery as exc:
        return problem(422, "Invalid request", str(exc), "invalid-request")
    if delivery_id is not None:
        owner = await runtime.reconciler.store.delivery_integration(delivery_id)
        if owner != integration_id:
            return problem(
                404, "Not found", f"integration {integration_id!r} has no delivery {delivery_id!r}", "not-found"
            )
    actor = plain_text(body.get("actor") or request.headers.get("x-actor") or "admin", 200)
    count = await _replay(runtime, integration_id, delivery_id, since, statuses, actor)
    return JSONResponse({"integrationId": integration_id, "replayed": count}, status_code=202 if count else 200)


# --- the work behind the routes -----------------------------------------------------------------


async def _test_send(
    runtime: Runtime, integration_id: str, applied: AppliedIntegration, message: str | None
) -> dict[str, Any]:
    """One test send through the delivery engine, and its result as the test route answers it."""
    assert runtime.engine is not None
    event_id, result = await runtime.engine.test_send(applied, message)
    return {
        "integrationId": integration_id,
        "eventId": event_id,
        "ok": result.ok,
        "status": result.status,
        "latencyMs": round(result.latency_ms, 2),
        "responseExcerpt": result.excerpt,
        "error": result.error,
    }


async def _replay(
    runtime: Runtime,
    integration_id: str,
    delivery_id: str | None,
    since: float | None,
    statuses: tuple[str, ...],
    actor: str,
) -> int:
    """Queue the deliveries again, audit it, and wake the engine; how many were queued."""
    store = runtime.reconciler.store
    count = await store.replay(delivery_id=delivery_id, integration_id=integration_id, since=since, statuses=statuses)
    what = f"delivery {delivery_id}" if delivery_id else f"{'/'.join(statuses)} deliveries since {_iso(since)}"
    await store.save(
        [],
        [AuditEntry("replay", f"replayed {count} ({what})", integration_id, actor, details={"count": count})],
    )
    if count and runtime.engine is not None:
        runtime.engine.wake()
    return count


# --- following a log ----------------------------------------------------------------------------


async def _follow(runtime: Runtime, integration_id: str, where: LogFilter, cursor: str | None) -> AsyncIterator[str]:
    """Server-Sent Events: each new log entry after `cursor` as it is written, oldest first
    (`Last-Event-ID` resumes after the last entry a client saw)."""
    store = runtime.reconciler.store
    yield f": following the log of {integration_id}\n\n"
    quiet_since = time.monotonic()
    outage = Outage("log stream")
    while runtime.stop is None or not runtime.stop.is_set():
        try:
            entries = await store.log_after(integration_id, where, cursor)
        except BadCursor:
            yield "event: error\ndata: " + json.dumps({"detail": "Last-Event-ID is not a cursor of this log"}) + "\n\n"
            return
        except StoreUnavailable as exc:
            # the stream stays open and picks up where it was once the store is back
            if not outage.active:
                yield ": the store is unavailable; following resumes when it is back\n\n"
            await asyncio.sleep(outage.failed(exc))
            continue
        outage.recovered()
        for entry in entries:
            cursor = entry["cursor"]
            yield f"id: {cursor}\nevent: {entry['kind']}\ndata: {json.dumps(entry, separators=(',', ':'))}\n\n"
        now = time.monotonic()
        if entries:
            quiet_since = now
        elif now - quiet_since >= FOLLOW_HEARTBEAT_SECONDS:
            quiet_since = now
            yield ": keep-alive\n\n"  # keeps proxies from closing a quiet stream
        await asyncio.sleep(FOLLOW_POLL_SECONDS)


# --- request parsing ----------------------------------------------------------------------------


def _unknown(runtime: Runtime, integration_id: str) -> Response | None:
    """The 404 for an id the registry does not hold."""
    return None if integration_id in runtime.reconciler.snapshot.registry else not_found(integration_id)


def _testable(runtime: Runtime, integration_id: str) -> AppliedIntegration | Response:
    """The applied integration a test send goes through, or the 404 or 409 that says why there is none."""
    snapshot = runtime.reconciler.snapshot  # once: the registry and the applied versions of one pass
    if integration_id not in snapshot.registry:
        return not_found(integration_id)
    applied = snapshot.applied.get(integration_id)
    if applied is None:
        return problem(
            409,
            "Not applied",
            f"integration {integration_id!r} has no applied version yet; see its conditions for why",
            "not-applied",
        )
    if applied.resolved is None:
        return problem(
            409,
            "Secrets missing",
            f"integration {integration_id!r} waits for secrets that do not resolve; see its conditions",
            "secrets-missing",
        )
    if runtime.engine is None or not runtime.engine.sends(applied.spec.type):
        return problem(409, "Nothing to send to", f"integration type {applied.spec.type!r} has no sink", "no-sink")
    if getattr(applied.spec, "config", None) is None:
        return problem(
            409,
            "Nothing to send to",
            f"integration {integration_id!r} only receives webhooks; it has no endpoint to test",
            "no-sink",
        )
    return applied


def _log_filter(request: Request) -> LogFilter:
    kinds = _choices(request, "kind", LOG_KINDS) or list(LOG_KINDS)
    status = _comparable(request.query_params.get("status") or None, "status")
    event = _comparable(request.query_params.get("event") or None, "event")
    since = _time(request.query_params.get("since"), "since")
    return LogFilter(tuple(kinds), status, event, since)


def _comparable(value: str | None, name: str) -> str | None:
    """A value the store compares with its text columns: PostgreSQL refuses any text with a
    NUL in it, so such a value is the client's mistake, not the store's."""
    if value is not None and "\x00" in value:
        raise BadQuery(f"{name} must not contain a NUL character (%00)")
    return value


def _choices(request: Request, name: str, allowed: tuple[str, ...]) -> list[str]:
    values = [v for raw in request.query_params.getlist(name) for v in raw.split(",") if v]
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise BadQuery(f"{name}={unknown[0]} is not one of {', '.join(allowed)}")
    return values


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_PAGE
    # ASCII digits: str.isdigit() also says yes to "²", which int() refuses
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        raise BadQuery(f"limit must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise BadQuery(f"{name} must be true or false")
    return raw in ("true", "1")


def _time(raw: Any, name: str) -> float | None:
    """An RFC 3339 time, or a duration back from now (`15m`, `2h`)."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise BadQuery(f"{name} must be an RFC 3339 time such as 2026-01-15T10:30:00Z, or a duration such as 2h")
    shown = json.dumps(raw[:80])  # quoted back in ASCII, whatever was sent (a lone surrogate too)
    try:
        at = time.time() - parse_duration(raw)
    except ValueError:
        parsed = None
        with contextlib.suppress(ValueError):
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        if parsed is None or parsed.tzinfo is None:
            raise BadQuery(
                f"{name}={shown} is neither an RFC 3339 time with an offset (2026-01-15T10:30:00Z) nor a duration (2h)"
            ) from None
        try:
            at = parsed.timestamp()
        except (OverflowError, ValueError):
            at = math.nan  # past year 9999 in UTC: refused below
    # The store keeps nothing from before 1970, and times are shown back as dates: a time that
    # is not between then and year 9999 would fail to print, long after it was taken.
    if not MIN_TIME <= at <= MAX_TIME:
        raise BadQuery(
            f"{name}={shown} is not a time between 1970 and 9999; give a recent time "
            "(2026-01-15T10:30:00Z) or a shorter duration (24h, 30d)"
        )
    return at


def _replay_request(body: dict[str, Any]) -> tuple[str | None, float | None, tuple[str, ...]]:
    delivery_id = body.get("deliveryId")
    if delivery_id is not None and (not isinstance(delivery_id, str) or not delivery_id or "\x00" in delivery_id):
        raise BadQuery("deliveryId must be a delivery id from GET .../deliveries")
    statuses = body.get("status", list(REPLAYABLE))
    if isinstance(statuses, str):
        statuses = [statuses]
    if not isinstance(statuses, list) or not statuses or any(s not in REPLAYABLE for s in statuses):
        raise BadQuery('status must be "failed", "dead" or a list of them')
    since = _time(body.get("since"), "since")
    if delivery_id is None and since is None:
        raise BadQuery(
            'say what to replay: {"deliveryId": "..."} for one delivery, or {"since": "2026-01-15T10:30:00Z"} '
            '(or {"since": "24h"}) for every failed or dead one since then'
        )
    return delivery_id, since, tuple(statuses)


def _iso(at: float | None) -> str:
    return iso(at) or "the start"
