"""The Starlette application served by `reconciler run`.

Reads of the registry, runtime suspend/resume, and health probes. Declared state changes only
through git; errors are RFC 9457 problem documents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from reconciler import __version__
from reconciler.api.auth import is_admin
from reconciler.delivery.engine import DeliveryEngine
from reconciler.events.envelope import EventRejected
from reconciler.events.intake import Intake
from reconciler.reconcile.conditions import ConditionType, condition
from reconciler.reconcile.loop import Reconciler
from reconciler.store import IntegrationRecord

MAX_BODY_BYTES = 512 * 1024  # an event's data (at most 256 KiB) with room for its envelope
PROBLEM_TYPE = "https://cms.integrations/problems/"


@dataclass
class Runtime:
    reconciler: Reconciler
    admin_secret: str
    intake: Intake | None = None
    engine: DeliveryEngine | None = None


def problem(status: int, title: str, detail: str, kind: str = "about:blank", **extra: Any) -> JSONResponse:
    body = {
        "type": kind if kind == "about:blank" else PROBLEM_TYPE + kind,
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def create_app(runtime: Runtime) -> Starlette:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        passes = runtime.reconciler.passes
        if passes == 0:
            return problem(503, "Not ready", "the first reconcile pass has not finished")
        return JSONResponse({"status": "ready", "passes": passes})

    async def list_integrations(request: Request) -> Response:
        denied = _require_admin(request, runtime)
        if denied:
            return denied
        wanted_type = request.query_params.get("type")
        wanted_status = request.query_params.get("status")
        wanted_labels = [label.partition("=") for label in request.query_params.getlist("label")]
        items = []
        for record in runtime.reconciler.registry.values():
            view = integration_view(runtime, record)
            if wanted_type and record.type != wanted_type:
                continue
            if wanted_status and view["status"] != wanted_status:
                continue
            labels = (record.spec or {}).get("labels") or {}
            if any(labels.get(name) != value for name, _, value in wanted_labels):
                continue
            items.append(view)
        return JSONResponse({"items": items, "count": len(items)})

    async def get_integration(request: Request) -> Response:
        denied = _require_admin(request, runtime)
        if denied:
            return denied
        record = runtime.reconciler.registry.get(request.path_params["id"])
        if record is None:
            return _not_found(request.path_params["id"])
        view = integration_view(runtime, record)
        view["auditTrail"] = [
            {"at": e.at, "action": e.action, "actor": e.actor, "message": e.message, "generation": e.generation}
            for e in runtime.reconciler.store.audit_trail(record.id, limit=20)
        ]
        return JSONResponse(view)

    async def activate(request: Request) -> Response:
        return await _override(request, suspend=False)

    async def deactivate(request: Request) -> Response:
        return await _override(request, suspend=True)

    async def _override(request: Request, suspend: bool) -> Response:
        body = await _admin_json(request, runtime)
        if isinstance(body, Response):
            return body
        reason = str(body.get("reason", "")).strip()[:500]
        actor = str(body.get("actor") or request.headers.get("x-actor") or "admin")[:200]
        integration_id = request.path_params["id"]
        try:
            if suspend:
                record = await runtime.reconciler.suspend(integration_id, actor, reason)
            else:
                record = await runtime.reconciler.resume(integration_id, actor, reason)
        except KeyError:
            return _not_found(integration_id)
        return JSONResponse(integration_view(runtime, record))

    async def trigger(request: Request) -> Response:
        """Emit an event, as the course system does: 202 once it and its deliveries are stored."""
        body = await _admin_json(request, runtime)
        if isinstance(body, Response):
            return body
        assert runtime.intake is not None
        event = body.get("event", body.get("type"))  # the guide's custom events say "type"
        try:
            accepted = await runtime.intake.emit(event, body.get("data"), timestamp=body.get("timestamp"), source="api")
        except EventRejected as exc:
            return problem(
                422,
                "Event refused",
                "the event does not match its type; see errors",
                "event-refused",
                errors=exc.reasons,
            )
        return JSONResponse(accepted.as_dict(), status_code=202)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return problem(exc.status_code, _TITLES.get(exc.status_code, "Error"), str(exc.detail))

    async def on_error(request: Request, exc: Exception) -> Response:
        return problem(500, "Internal error", "the request failed; the daemon's log has the details")

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/integrations", list_integrations),
        Route("/api/integrations/webhooks/trigger", trigger, methods=["POST"]),
        Route("/api/integrations/{id}", get_integration),
        Route("/api/integrations/{id}/activate", activate, methods=["POST"]),
        Route("/api/integrations/{id}/deactivate", deactivate, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: on_http_error, Exception: on_error})


_TITLES = {404: "Not found", 405: "Method not allowed", 401: "Unauthorized", 413: "Payload too large"}


def _require_admin(request: Request, runtime: Runtime) -> Response | None:
    if is_admin(request, runtime.admin_secret):
        return None
    response = problem(
        401,
        "Unauthorized",
        "send the admin secret in the x-admin-secret header (or Authorization: Bearer); query strings are not accepted",
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="reconciler"'
    return response


def _not_found(integration_id: str) -> Response:
    return problem(404, "Not found", f"no integration {integration_id!r} is applied or declared", "not-found")


async def _admin_json(request: Request, runtime: Runtime) -> dict[str, Any] | Response:
    """The JSON object an admin sent, or the problem response that refuses the request."""
    return _require_admin(request, runtime) or await _json_body(request)


async def _json_body(request: Request) -> dict[str, Any] | Response:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            return problem(413, "Payload too large", f"bodies are limited to {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return problem(400, "Bad request", f"the body is not JSON: {exc}")
    if not isinstance(body, dict):
        return problem(400, "Bad request", 'the body must be a JSON object such as {"reason": "..."}')
    return body


def integration_view(runtime: Runtime, record: IntegrationRecord) -> dict[str, Any]:
    """The API's view of a registry row: redacted spec, conditions, revisions, drift."""
    ready = condition(record.conditions, ConditionType.READY)
    override = runtime.reconciler.overrides.get(record.id)
    return {
        "id": record.id,
        "name": record.name,
        "type": record.type,
        "status": _status_word(record),
        "generation": record.generation,
        "spec": record.spec,
        "conditions": record.conditions,
        "sourceFile": record.source_file,
        "lastAppliedRevision": record.last_applied_revision,
        "lastAttemptedRevision": record.last_attempted_revision,
        "ready": bool(ready and ready["status"] == "True"),
        "drift": (
            {"suspended": True, "by": override.actor, "reason": override.reason, "at": override.at}
            if override and override.suspended
            else None
        ),
    }


def _status_word(record: IntegrationRecord) -> str:
    """One word for lists and filters: active, suspended, inactive, failing, pending, removing."""
    ready = condition(record.conditions, ConditionType.READY) or {}
    suspended = condition(record.conditions, ConditionType.SUSPENDED) or {}
    if suspended.get("status") == "True":
        return "suspended"
    reason = ready.get("reason")
    if ready.get("status") == "True":
        return "active"
    return {"Inactive": "inactive", "Removing": "removing"}.get(str(reason), "failing" if record.applied else "pending")


__all__ = ["Runtime", "__version__", "create_app"]
