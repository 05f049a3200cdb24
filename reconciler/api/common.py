"""What every route shares: the Runtime, problem documents, admin authentication, bounded JSON bodies.

Endpoints are module-level functions of a request. They reach the Runtime through
`runtime_of(request)` (create_app puts it in the app's state), and the admin secret is checked
by one decorator: `@admin_only`, `@admin_only_when(...)` for a route whose check is a setting,
and `@admin_only_json` for the routes that take a JSON object as their body.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reconciler.api.auth import is_admin
from reconciler.events import jsontext
from reconciler.reconcile.conditions import ConditionType, condition
from reconciler.store import StoreUnavailable

if TYPE_CHECKING:
    from reconciler.delivery.engine import DeliveryEngine
    from reconciler.delivery.health import HealthMonitor
    from reconciler.delivery.replica import Replica
    from reconciler.intake.committer import Intake
    from reconciler.reconcile.loop import Reconciler
    from reconciler.reconcile.source import GitSource
    from reconciler.store import IntegrationRecord

MAX_BODY_BYTES = 512 * 1024  # an event's data (at most 256 KiB) with room for its envelope
PROBLEM_TYPE = "https://cms.integrations/problems/"


@dataclass
class Runtime:
    """What the routes reach: the reconciler (registry, store), the intake, the delivery engine."""

    reconciler: Reconciler
    admin_secret: str
    intake: Intake | None = None
    engine: DeliveryEngine | None = None
    metrics_need_admin: bool = False  # `run --metrics-auth`: /metrics behind the admin secret
    stop: asyncio.Event | None = None  # set at shutdown: streams end so the server can stop
    health: HealthMonitor | None = None  # the Degraded conditions; None: none measured (the bare app)
    source: GitSource | None = None  # `run --source`: the git source the daemon follows
    source_webhook_secret: str | None = field(default=None, repr=False)  # push webhooks' secret; None: off
    public_status: bool = False  # `run --public-status`: the status page is readable without the secret
    replica: Replica | None = None  # this process's row among the replicas on the store

    def degraded(self, integration_id: str) -> dict[str, Any] | None:
        """The integration's latest Degraded condition, as the health monitor measured it."""
        return self.health.condition(integration_id) if self.health is not None else None


Handler = Callable[[Request], Awaitable[Response]]  # a route's endpoint
JsonHandler = Callable[[Request, dict[str, Any]], Awaitable[Response]]  # one given the JSON body too


def runtime_of(request: Request) -> Runtime:
    """The Runtime of the app serving the request (create_app puts it in the app's state)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def problem(status: int, title: str, detail: str, kind: str = "about:blank", **extra: Any) -> JSONResponse:
    """An RFC 9457 problem document; `kind` names a problem type of ours, `extra` adds members."""
    body = {
        "type": kind if kind == "about:blank" else PROBLEM_TYPE + kind,
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


TITLES = {404: "Not found", 405: "Method not allowed", 401: "Unauthorized", 413: "Payload too large"}


def store_unavailable(exc: StoreUnavailable, detail: str | None = None) -> JSONResponse:
    """The 503 of a request the store could not serve right now, with the Retry-After it asks for.
    `detail` replaces the message that names the store, for routes open to other parties."""
    response = problem(503, "Store unavailable", detail or str(exc), "store-unavailable")
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def plain_text(value: Any, limit: int) -> str:
    """A free-text field (a reason, an actor) as stored: a string of at most `limit` characters,
    without NUL (PostgreSQL text cannot hold it) or lone surrogates (UTF-8 has none)."""
    text = str(value)[:limit].replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")


def require_admin(request: Request, admin_secret: str) -> Response | None:
    """None for an admin, else the 401 that asks for the secret (the one answer of every admin route)."""
    if is_admin(request, admin_secret):
        return None
    response = problem(
        401,
        "Unauthorized",
        "send the admin secret in the x-admin-secret header (or Authorization: Bearer); query strings are not accepted",
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="reconciler"'
    return response


def admin_only_when(needed: Callable[[Runtime], bool]) -> Callable[[Handler], Handler]:
    """The endpoint behind the admin secret whenever `needed(runtime)` holds: for a route whose
    protection is a setting (`/metrics` with `run --metrics-auth`)."""

    def decorate(endpoint: Handler) -> Handler:
        @functools.wraps(endpoint)  # the route's name and docstring stay the endpoint's
        async def guarded(request: Request) -> Response:
            runtime = runtime_of(request)
            if needed(runtime):
                denied = require_admin(request, runtime.admin_secret)
                if denied:
                    return denied
            return await endpoint(request)

        return guarded

    return decorate


def admin_only(endpoint: Handler) -> Handler:
    """The endpoint behind the admin secret: anyone else gets require_admin's 401."""
    return admin_only_when(_always)(endpoint)


def _always(runtime: Runtime) -> bool:
    return True


def admin_only_json(endpoint: JsonHandler) -> Handler:
    """`admin_only` for a route whose body is a JSON object: the endpoint gets it parsed, after the
    admin check (an anonymous request is refused before its body is read); a body that is too
    large or not a JSON object is answered with json_body's problem."""

    @admin_only
    @functools.wraps(endpoint)
    async def with_body(request: Request) -> Response:
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        return await endpoint(request, body)

    return with_body


def not_found(integration_id: str) -> Response:
    """The 404 of an id the registry does not hold."""
    return problem(404, "Not found", f"no integration {integration_id!r} is applied or declared", "not-found")


async def json_body(request: Request) -> dict[str, Any] | Response:
    """The body as a JSON object ({} when empty), or the 413 or 400 that refuses it."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            return problem(413, "Payload too large", f"bodies are limited to {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        # nesting capped and lone surrogates refused for every route; NUL characters are left
        # to what reads the field (intake refuses them in event data, naming the field)
        body = jsontext.loads(raw, nul=False)
    except jsontext.UnfitJson as exc:
        return problem(400, "Bad request", f"the body cannot be taken: {exc}", "bad-body")
    except (ValueError, UnicodeDecodeError) as exc:
        return problem(400, "Bad request", f"the body is not JSON: {exc}")
    if not isinstance(body, dict):
        return problem(400, "Bad request", 'the body must be a JSON object such as {"reason": "..."}')
    return body


STATUS_WORDS = ("active", "degraded", "suspended", "inactive", "failing", "pending", "removing")


def conditions_of(record: IntegrationRecord, degraded: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The registry's conditions, with Degraded as the health monitor measured it (a Degraded
    stored by an older version of the daemon is not a measurement, so it is dropped)."""
    kept = [c for c in record.conditions if c.get("type") != ConditionType.DEGRADED]
    return [*kept, degraded] if degraded is not None else kept


def status_word(record: IntegrationRecord, degraded: dict[str, Any] | None = None) -> str:
    """One word for lists and filters: active, degraded (applied, ready, but its events are not
    getting through), suspended, inactive, failing, pending, removing."""
    ready = condition(record.conditions, ConditionType.READY) or {}
    suspended = condition(record.conditions, ConditionType.SUSPENDED) or {}
    if suspended.get("status") == "True":
        return "suspended"
    reason = ready.get("reason")
    if ready.get("status") == "True":
        return "degraded" if degraded is not None and degraded.get("status") == "True" else "active"
    return {"Inactive": "inactive", "Removing": "removing"}.get(str(reason), "failing" if record.applied else "pending")
