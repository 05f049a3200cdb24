"""The OpenAPI 3.1 document of the daemon's HTTP API, served at /api/openapi.json.

Written out rather than generated from docstrings: each route's responses (problem documents
included) are part of the contract, and the test suite checks the running API against this
document with schemathesis.
"""

from __future__ import annotations

import functools
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reconciler import __version__
from reconciler.api.openapi_schemas import ANY_OBJECT, PROBLEM, SCHEMAS, ref

ADMIN: list[dict[str, list[str]]] = [{"adminSecret": []}, {"bearer": []}]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": PROBLEM}}}


def _retry_later(description: str) -> dict[str, Any]:
    """A 503 that says when to try again."""
    return {
        **_problem(description),
        "headers": {"Retry-After": {"schema": {"type": "string"}, "description": "seconds to wait"}},
    }


STORE_UNAVAILABLE = "the store is unavailable (unreachable, full or locked); try again after Retry-After"


def _admin(
    summary: str,
    responses: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    tag: str = "integrations",
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "security": ADMIN,
        "parameters": parameters or [],
        "responses": {**responses, "401": _problem("The admin secret is missing or wrong")},
    }
    operation["responses"].setdefault("503", _retry_later(STORE_UNAVAILABLE.capitalize()))
    if body is not None:
        operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
        operation["responses"].setdefault(
            "400",
            _problem("The body is not a JSON object, is nested more than 64 levels deep, or holds a lone surrogate"),
        )
        operation["responses"].setdefault("413", _problem("The body is too large"))
    return operation


ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
CURSOR = {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "nextCursor of the last page"}
LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}
NOT_FOUND = _problem("No such integration")
DECLARED = {
    "description": "Declared state changes through git: where to change it, and the YAML file to commit when a "
    "body was sent",
    "headers": {"Allow": {"schema": {"type": "string"}}},
    "content": {"application/problem+json": {"schema": ref("DeclaredInGit")}},
}


def _schema_operation(summary: str) -> dict[str, Any]:
    """A schema route: open, like this document; the name is the file's name under schemas/."""
    return {
        "get": {
            "summary": summary,
            "tags": ["schemas"],
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {
                    "description": "JSON Schema 2020-12",
                    "content": {"application/schema+json": {"schema": ANY_OBJECT}},
                },
                "404": _problem("No schema of that name"),
            },
        }
    }


def _paths() -> dict[str, Any]:
    """`paths` of the document: every route of the app, by path and method."""
    list_params = [
        {"name": "type", "in": "query", "schema": {"enum": ["api", "webhook", "database", "file"]}},
        {
            "name": "status",
            "in": "query",
            "schema": {"enum": ["active", "degraded", "suspended", "inactive", "failing", "pending", "removing"]},
        },
        {
            "name": "label",
            "in": "query",
            "schema": {"type": "array", "items": {"type": "string", "pattern": "^[^=]+=.*$"}},
            "description": "name=value; repeat for several",
        },
    ]
    log_params: list[dict[str, Any]] = [
        ID,
        {
            "name": "kind",
            "in": "query",
            "schema": {"type": "array", "items": {"enum": ["attempt", "test", "sync", "reconcile", "receipt"]}},
        },
        {"name": "status", "in": "query", "schema": {"type": "string"}},
        {"name": "event", "in": "query", "schema": {"type": "string"}},
        {"name": "since", "in": "query", "schema": {"type": "string"}, "description": "RFC 3339, or a duration (2h)"},
        CURSOR,
        LIMIT,
        {
            "name": "follow",
            "in": "query",
            "schema": {"type": "boolean"},
            "description": "stream new entries as Server-Sent Events instead of returning a page",
        },
    ]
    bad_query = _problem("A query parameter is not valid")
    return {
        "/healthz": {
            "get": {"summary": "Liveness", "tags": ["probes"], "responses": {"200": _json(ANY_OBJECT, "Alive")}}
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the first reconcile pass has finished, and the store answers",
                "tags": ["probes"],
                "responses": {
                    "200": _json(ANY_OBJECT, "Ready"),
                    "503": _problem("Not ready: the first pass has not finished, or the store does not answer"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "tags": ["probes"],
                "responses": {
                    "200": {
                        "description": "Text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": _problem("Metrics need the admin secret (run --metrics-auth)"),
                    "503": _problem("The store could not be read"),
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "tags": ["probes"],
                "responses": {"200": _json(ANY_OBJECT, "OpenAPI 3.1")},
            }
        },
        "/schemas/{name}": _schema_operation(
            "A JSON Schema of the file format (integration.schema.json, eventtype.schema.json)"
        ),
        "/schemas/events/{name}": _schema_operation(
            "The JSON Schema of a built-in event type's data (user.registered.schema.json)"
        ),
        "/api/integrations": {
            "get": _admin(
                "List integrations",
                {"200": _json(ref("IntegrationList"), "Integrations"), "400": _problem("A filter is not valid")},
                parameters=list_params,
            ),
            "post": _admin("Create an integration: declared in git", {"405": DECLARED}, body=ANY_OBJECT),
        },
        "/api/integrations/templates": {
            "get": _admin("Scaffolding templates, as YAML and JSON", {"200": _json(ref("Templates"), "Templates")})
        },
        "/api/integrations/health/status": {
            "get": _admin("System health", {"200": _json(ref("HealthStatus"), "Health")}, tag="health")
        },
        "/api/integrations/webhooks/trigger": {
            "post": _admin(
                "Emit an event; 202 once it and its deliveries are stored",
                {
                    "202": _json(ref("Accepted"), "Stored, or a repeat of an idempotent request (duplicate: true)"),
                    "400": _problem(
                        "The body is not a JSON object, or the Idempotency-Key is not 1 to 200 ASCII characters"
                    ),
                    "422": _problem(
                        "The event does not match its type (errors lists every reason), or its idempotency key was "
                        "used for a different request (conflicts names the fields)"
                    ),
                    "503": _retry_later(f"The daemon is stopping, or {STORE_UNAVAILABLE}"),
                },
                parameters=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "a repeat with the same key and body is answered with the first event",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    }
                ],
                body=ref("EventRequest"),
                tag="events",
            )
        },
        "/api/integrations/webhook/receive/{secret}": {
            "post": {
                "summary": "Inbound webhook from a partner, verified by the integration's scheme",
                "tags": ["events"],
                "security": [],
                "parameters": [{"name": "secret", "in": "path", "required": True, "schema": {"type": "string"}}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": ANY_OBJECT},
                        "application/x-www-form-urlencoded": {"schema": ANY_OBJECT},
                    },
                },
                "responses": {
                    "200": _json(ANY_OBJECT, "A repeated webhook id: acknowledged, not emitted again"),
                    "202": _json(ANY_OBJECT, "Verified, stored and emitted"),
                    "400": _problem("The body is not JSON, is nested too deep, or holds a lone surrogate"),
                    "401": _problem("The signature or timestamp does not verify"),
                    "404": _problem("No integration receives at this path"),
                    "413": _problem("The body is too large"),
                    "422": _problem("The payload does not match the configured event type"),
                    "503": _retry_later(
                        "The integration is paused, its signing secret is unusable, or the receipt cannot be "
                        "stored at the moment"
                    ),
                },
            }
        },
        "/api/integrations/{id}": {
            "get": _admin(
                "One integration: spec, conditions, revisions, delivery counters",
                {"200": _json(ref("Integration"), "The integration"), "404": NOT_FOUND},
                parameters=[ID],
            ),
            "put": _admin(
                "Update: declared in git", {"405": DECLARED, "404": NOT_FOUND}, parameters=[ID], body=ANY_OBJECT
            ),
            "delete": _admin("Delete: declared in git", {"405": DECLARED, "404": NOT_FOUND}, parameters=[ID]),
        },
        "/api/integrations/{id}/activate": {
            "post": _admin(
                "Resume a suspended integration (runtime override, audited)",
                {"200": _json(ref("Integration"), "Resumed"), "404": NOT_FOUND},
                parameters=[ID],
                body=ref("Reason"),
            )
        },
        "/api/integrations/{id}/deactivate": {
            "post": _admin(
                "Suspend an integration (runtime override, audited; deliveries wait)",
                {"200": _json(ref("Integration"), "Suspended"), "404": NOT_FOUND},
                parameters=[ID],
                body=ref("Reason"),
            )
        },
        "/api/integrations/{id}/webhooks": {
            "post": _admin(
                "Add a subscription: declared in git",
                {"405": DECLARED, "404": NOT_FOUND, "409": _problem("Unreadable file")},
                parameters=[ID],
                body=ANY_OBJECT,
            )
        },
        "/api/integrations/{id}/test": {
            "post": _admin(
                "Send integration.test through the real sink, once, now",
                {
                    "200": _json(ref("TestResult"), "The result (ok false when the target failed)"),
                    "404": NOT_FOUND,
                    "409": _problem("Not applied, secrets missing, or nothing to send to"),
                    "422": _problem("The request is not valid"),
                },
                parameters=[ID],
                body=ref("TestRequest"),
            )
        },
        "/api/integrations/{id}/logs": {
            "get": _admin(
                "Attempts, syncs, reconcile actions and inbound receipts, newest first",
                {
                    "200": {
                        "description": "A page, or with follow=true a stream of Server-Sent Events",
                        "content": {
                            "application/json": {"schema": ref("LogPage")},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    "400": bad_query,
                    "404": NOT_FOUND,
                },
                parameters=log_params,
            )
        },
        "/api/integrations/{id}/deliveries": {
            "get": _admin(
                "Deliveries by status, newest first",
                {"200": _json(ref("DeliveryPage"), "A page"), "400": bad_query, "404": NOT_FOUND},
                parameters=[
                    ID,
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "array", "items": {"enum": ["pending", "failed", "delivered", "dead"]}},
                    },
                    CURSOR,
                    LIMIT,
                ],
            )
        },
        "/api/integrations/{id}/replay": {
            "post": _admin(
                "Queue one delivery, or every failed or dead one since a time, again",
                {
                    "200": _json(ref("ReplayResult"), "Nothing matched"),
                    "202": _json(ref("ReplayResult"), "Queued again"),
                    "404": NOT_FOUND,
                    "422": _problem("The request is not valid"),
                },
                parameters=[ID],
                body=ref("ReplayRequest"),
            )
        },
    }


def document() -> dict[str, Any]:
    """The whole OpenAPI document, built anew on each call."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "CMS integrations reconciler",
            "version": __version__,
            "description": "Reads, runtime operations and event intake of the integrations daemon. Declared state "
            "changes through git; errors are RFC 9457 problem documents.",
        },
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "adminSecret": {"type": "apiKey", "in": "header", "name": "x-admin-secret"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


async def openapi_json(request: Request) -> Response:
    """This document (open, like the probes)."""
    return JSONResponse(served())


@functools.cache
def served() -> dict[str, Any]:
    """The document as served: built once, at the first request, and shared by every app."""
    return document()
