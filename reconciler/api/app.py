"""The Starlette application served by `reconciler run`.

Reads of the registry and of what happened (logs, deliveries, health), runtime operations
(suspend/resume, test sends, replays, event triggers, inbound receipt) and probes. Declared
state changes only through git: the write routes of the integration guide answer 405 with
the file to commit. Errors are RFC 9457 problem documents.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from reconciler import __version__
from reconciler.api import declared, inbound, operations, status
from reconciler.api.common import (
    STATUS_WORDS,
    TITLES,
    Runtime,
    admin_json,
    not_found,
    problem,
    require_admin,
    status_word,
)
from reconciler.api.openapi import openapi_routes
from reconciler.events.envelope import EventRejected
from reconciler.intake.committer import IntakeStopped
from reconciler.reconcile.conditions import ConditionType, condition
from reconciler.registry import Snapshot
from reconciler.store import IntegrationRecord


def create_app(runtime: Runtime) -> Starlette:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        passes = runtime.reconciler.passes
        if passes == 0:
            return problem(503, "Not ready", "the first reconcile pass has not finished")
        return JSONResponse({"status": "ready", "passes": passes})

    async def list_integrations(request: Request) -> Response:
        denied = require_admin(request, runtime.admin_secret)
        if denied:
            return denied
        query = request.query_params
        wanted_types = set(query.getlist("type"))
        wanted_statuses = set(query.getlist("status"))
        wanted_labels = [label.partition("=") for label in query.getlist("label")]
        unknown = sorted(wanted_types - set(INTEGRATION_TYPES)) or sorted(wanted_statuses - set(STATUS_WORDS))
        if unknown or any(not name or not sep for name, sep, _ in wanted_labels):
            return problem(
                400,
                "Bad request",
                f"filter by type ({', '.join(INTEGRATION_TYPES)}), status ({', '.join(STATUS_WORDS)}) "
                "and label=name=value",
                "invalid-query",
            )
        items = []
        snapshot = runtime.reconciler.snapshot
        for record in snapshot.registry.values():
            view = integration_view(snapshot, record)
            if wanted_types and record.type not in wanted_types:
                continue
            if wanted_statuses and view["status"] not in wanted_statuses:
                continue
            labels = (record.spec or {}).get("labels") or {}
            if any(labels.get(name) != value for name, _, value in wanted_labels):
                continue
            items.append(view)
        return JSONResponse({"items": items, "count": len(items)})

    async def get_integration(request: Request) -> Response:
        denied = require_admin(request, runtime.admin_secret)
        if denied:
            return denied
        snapshot = runtime.reconciler.snapshot
        record = snapshot.registry.get(request.path_params["id"])
        if record is None:
            return not_found(request.path_params["id"])
        view = integration_view(snapshot, record)
        store = runtime.reconciler.store
        view["deliveries"] = await store.delivery_counts(record.id)
        view["auditTrail"] = [
            {"at": e.at, "action": e.action, "actor": e.actor, "message": e.message, "generation": e.generation}
            for e in await store.audit_trail(record.id, limit=20)
        ]
        return JSONResponse(view)

    async def activate(request: Request) -> Response:
        return await _override(request, suspend=False)

    async def deactivate(request: Request) -> Response:
        return await _override(request, suspend=True)

    async def _override(request: Request, suspend: bool) -> Response:
        body = await admin_json(request, runtime.admin_secret)
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
            return not_found(integration_id)
        return JSONResponse(integration_view(runtime.reconciler.snapshot, record))

    async def trigger(request: Request) -> Response:
        """Emit an event, as the course system does: 202 once it and its deliveries are stored."""
        body = await admin_json(request, runtime.admin_secret)
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
        except IntakeStopped as exc:  # as inbound receipt does: the sender tries again shortly
            response = problem(503, "Shutting down", str(exc), "shutting-down")
            response.headers["Retry-After"] = "5"
            return response
        return JSONResponse(accepted.as_dict(), status_code=202)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        response = problem(exc.status_code, TITLES.get(exc.status_code, "Error"), str(exc.detail))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            # one path may be served by several routes (GET here, POST in declared.py): allow all of theirs
            response.headers["Allow"] = ", ".join(_allowed(routes, request.url.path))
        return response

    async def on_error(request: Request, exc: Exception) -> Response:
        return problem(500, "Internal error", "the request failed; the daemon's log has the details")

    # The event routes first: Starlette tries routes in order, and these carry the load. Fixed
    # paths before `{id}` paths: `templates` and `health` are not integration ids.
    routes: list[BaseRoute] = [
        Route("/api/integrations/webhooks/trigger", trigger, methods=["POST"]),
        *inbound.routes(runtime),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        *status.routes(runtime),
        *openapi_routes(),
        Route("/api/integrations", list_integrations, methods=["GET"]),
        *declared.routes(runtime),
        Route("/api/integrations/{id}", get_integration, methods=["GET"]),
        Route("/api/integrations/{id}/activate", activate, methods=["POST"]),
        Route("/api/integrations/{id}/deactivate", deactivate, methods=["POST"]),
        *operations.routes(runtime),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: on_http_error, Exception: on_error},
    )


INTEGRATION_TYPES = ("api", "webhook", "database", "file")


def _allowed(routes: list[BaseRoute], path: str) -> list[str]:
    matching = [r for r in routes if isinstance(r, Route) and r.methods and r.path_regex.match(path)]
    # a fixed path (`/api/integrations/templates`) is not also an `{id}`
    fixed = [r for r in matching if not r.param_convertors]
    methods: set[str] = set()
    for route in fixed or matching:
        methods |= route.methods or set()
    return sorted(methods)


def integration_view(snapshot: Snapshot, record: IntegrationRecord) -> dict[str, Any]:
    """The API's view of a registry row: redacted spec, conditions, revisions, drift."""
    ready = condition(record.conditions, ConditionType.READY)
    override = snapshot.overrides.get(record.id)
    return {
        "id": record.id,
        "name": record.name,
        "type": record.type,
        "status": status_word(record),
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


__all__ = ["Runtime", "__version__", "create_app"]
