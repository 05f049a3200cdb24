"""The Starlette application served by `reconciler run`.

Reads of the registry and of what happened (logs, deliveries, health), runtime operations
(suspend/resume, test sends, replays, event triggers, inbound receipt) and probes. Declared
state changes only through git: the write routes of the integration guide answer 405 with
the file to commit. Errors are RFC 9457 problem documents.

The routes are one table, ROUTES; each endpoint is a function of its module that reaches the
Runtime through the app's state (common.runtime_of). Which routes need the admin secret is
said by the endpoints' decorators (common.admin_only and its variants).
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from reconciler import __version__
from reconciler.api import declared, inbound, integrations, operations, schemas, source, status
from reconciler.api.common import TITLES, Runtime, problem, store_unavailable
from reconciler.api.openapi import openapi_json
from reconciler.api.pages import PAGE_ROUTES
from reconciler.store import StoreUnavailable

log = logging.getLogger("reconciler.api")

# The event routes first: Starlette tries routes in order, and these carry the load. Fixed
# paths before `{id}` paths: `templates` and `health` are not integration ids.
ROUTES: list[BaseRoute] = [
    Route("/api/integrations/webhooks/trigger", integrations.trigger, methods=["POST"]),
    Route(inbound.RECEIVE_PATH, inbound.receive, methods=["POST"], name="inbound-receive"),
    Route(source.WEBHOOK_PATH, source.webhook, methods=["POST"], name="source-webhook"),
    Route("/healthz", status.healthz),
    Route("/readyz", status.readyz),
    Route("/metrics", status.metrics, methods=["GET"]),
    Route("/api/integrations/templates", status.templates, methods=["GET"]),
    Route("/api/integrations/health/status", status.health, methods=["GET"]),
    Route("/api/openapi.json", openapi_json, methods=["GET"]),
    Route("/schemas/{name}", schemas.file_format, methods=["GET"]),
    Route("/schemas/events/{name}", schemas.event_data, methods=["GET"]),
    Route("/api/integrations", integrations.list_integrations, methods=["GET"]),
    Route("/api/integrations", declared.create, methods=["POST"]),
    Route("/api/integrations/{id}", declared.update_or_delete, methods=["PUT", "DELETE"]),
    Route("/api/integrations/{id}/webhooks", declared.add_webhook, methods=["POST"]),
    Route("/api/integrations/{id}", integrations.get_integration, methods=["GET"]),
    Route("/api/integrations/{id}/activate", integrations.activate, methods=["POST"]),
    Route("/api/integrations/{id}/deactivate", integrations.deactivate, methods=["POST"]),
    Route("/api/integrations/{id}/test", operations.test, methods=["POST"]),
    Route("/api/integrations/{id}/logs", operations.logs, methods=["GET"]),
    Route("/api/integrations/{id}/deliveries", operations.deliveries, methods=["GET"]),
    Route("/api/integrations/{id}/replay", operations.replay, methods=["POST"]),
]


def create_app(runtime: Runtime) -> Starlette:
    """The application over a runtime: the API's ROUTES, then the status page's PAGE_ROUTES (HTML,
    not API: kept out of the OpenAPI document); errors as problem documents."""
    inbound.install_access_log_redaction()
    app = Starlette(
        routes=[*ROUTES, *PAGE_ROUTES],
        exception_handlers={
            HTTPException: on_http_error,
            StoreUnavailable: on_store_unavailable,
            ClientDisconnect: on_client_disconnect,
            Exception: on_error,
        },
    )
    app.state.runtime = runtime
    # one index per app: it is rebuilt from the snapshot of this runtime's reconciler
    app.state.inbound_index = inbound.InboundIndex(runtime.reconciler)
    return app


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's 404 and 405 (and any HTTPException) as problem documents."""
    assert isinstance(exc, HTTPException)
    response = problem(exc.status_code, TITLES.get(exc.status_code, "Error"), str(exc.detail))
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:
        # one path may be served by several routes (GET here, POST in declared.py): allow all of theirs
        response.headers["Allow"] = ", ".join(allowed_methods(request.app.routes, request.url.path))
    return response


async def on_store_unavailable(request: Request, exc: Exception) -> Response:
    """A route that needed the store while it was unavailable: 503 with Retry-After. Only admin
    routes get this far (open routes answer for themselves), so the answer may name the store."""
    assert isinstance(exc, StoreUnavailable)
    log.warning(
        "request answered 503: the store is unavailable",
        extra={"fields": {"method": request.method, "route": _route_of(request), "reason": exc.reason}},
    )
    return store_unavailable(exc)


async def on_client_disconnect(request: Request, exc: Exception) -> Response:
    """A client that went away before its body was complete: its mistake, not the daemon's (no
    traceback in the log for anyone to cause at will). The answer is for the record only."""
    log.info(
        "the client closed the connection before its body was complete", extra={"fields": {"route": _route_of(request)}}
    )
    return problem(400, "Bad request", "the connection closed before the body was complete")


def _route_of(request: Request) -> str:
    route = request.scope.get("route")
    return route.path if isinstance(route, Route) else request.url.path


async def on_error(request: Request, exc: Exception) -> Response:
    """Anything else: a 500 that says where the details are, never what they are."""
    return problem(500, "Internal error", "the request failed; the daemon's log has the details")


def allowed_methods(routes: list[BaseRoute], path: str) -> list[str]:
    """The methods the routes serve at a path, for the Allow header of a 405."""
    matching = [r for r in routes if isinstance(r, Route) and r.methods and r.path_regex.match(path)]
    # a fixed path (`/api/integrations/templates`) is not also an `{id}`
    fixed = [r for r in matching if not r.param_convertors]
    methods: set[str] = set()
    for route in fixed or matching:
        methods |= route.methods or set()
    return sorted(methods)


__all__ = ["ROUTES", "Runtime", "__version__", "create_app"]
