"""The registry's routes: the integration list and one integration, the runtime suspend and
resume overrides, and the event trigger of the integration guide."""

from __future__ import annotations

import re
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reconciler.api.common import (
    STATUS_WORDS,
    Runtime,
    admin_only,
    admin_only_json,
    conditions_of,
    not_found,
    plain_text,
    problem,
    runtime_of,
    status_word,
)
from reconciler.events.envelope import EventRejected
from reconciler.intake.committer import IdempotencyConflict, IntakeStopped
from reconciler.reconcile.conditions import ConditionType, condition
from reconciler.registry import Snapshot
from reconciler.store import IntegrationRecord
from reconciler.store.history import iso

INTEGRATION_TYPES = ("api", "webhook", "database", "file")
AUDIT_TRAIL_LENGTH = 20


@admin_only
async def list_integrations(request: Request) -> Response:
    """The integrations of the registry, filtered by type, status and labels."""
    runtime = runtime_of(request)
    found = matching(runtime, runtime.reconciler.snapshot, request.query_params)
    if isinstance(found, Response):
        return found
    return JSONResponse({"items": found, "count": len(found)})


@admin_only
async def get_integration(request: Request) -> Response:
    """One integration: its view with its delivery counters and the latest of its audit trail."""
    runtime = runtime_of(request)
    snapshot = runtime.reconciler.snapshot
    record = snapshot.registry.get(request.path_params["id"])
    if record is None:
        return not_found(request.path_params["id"])
    return JSONResponse(await integration_detail(runtime, snapshot, record))


async def integration_detail(runtime: Runtime, snapshot: Snapshot, record: IntegrationRecord) -> dict[str, Any]:
    """One integration as its route (and the status page) shows it: its view, its delivery
    counters and the latest of its audit trail."""
    view = integration_view(snapshot, record, runtime.degraded(record.id))
    store = runtime.reconciler.store
    view["deliveries"] = await store.delivery_counts(record.id)
    view["auditTrail"] = [
        {"at": iso(e.at), "action": e.action, "actor": e.actor, "message": e.message, "generation": e.generation}
        for e in await store.audit_trail(record.id, limit=AUDIT_TRAIL_LENGTH)
    ]
    return view


@admin_only_json
async def activate(request: Request, body: dict[str, Any]) -> Response:
    """Resume a suspended integration (a runtime override, audited)."""
    return await set_override(request, body, suspend=False)


@admin_only_json
async def deactivate(request: Request, body: dict[str, Any]) -> Response:
    """Suspend an integration (a runtime override, audited): its deliveries wait."""
    return await set_override(request, body, suspend=True)


@admin_only_json
async def trigger(request: Request, body: dict[str, Any]) -> Response:
    """Emit an event, as the course system does: 202 once it and its deliveries are stored
    (503 with Retry-After while the store is unavailable: the app's handler answers it)."""
    intake = runtime_of(request).intake
    assert intake is not None
    event = body.get("event", body.get("type"))  # the guide's custom events say "type"
    idempotency = idempotency_of(request, body)
    if isinstance(idempotency, Response):
        return idempotency
    key, event_id = idempotency
    try:
        accepted = await intake.emit(
            event,
            body.get("data"),
            timestamp=body.get("timestamp"),
            source="api",
            idempotency_key=key,
            event_id=event_id,
        )
    except IdempotencyConflict as exc:
        return problem(
            422,
            "Idempotency key reused",
            str(exc),
            "idempotency-key-reused",
            original=exc.original.id,
            conflicts=exc.fields,
        )
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


IDEMPOTENCY_KEY_CHARS = 200  # the dedup column holds 255 with the prefix
EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def idempotency_of(request: Request, body: dict[str, Any]) -> tuple[str | None, str | None] | Response:
    """The request's Idempotency-Key header (a structured-field string, quoted or bare, as the
    IETF httpapi draft writes it) and the sender's own event `id`; or the 400/422 that refuses one."""
    header = request.headers.get("idempotency-key")
    key = None
    if header is not None:
        key = header.strip()
        if len(key) >= 2 and key[0] == key[-1] == '"':
            key = key[1:-1]
        if not key or len(key) > IDEMPOTENCY_KEY_CHARS or not all(" " <= c <= "~" for c in key):
            return problem(
                400,
                "Bad request",
                f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_CHARS} printable ASCII characters, such as a UUID",
                "bad-idempotency-key",
            )
    event_id = body.get("id")
    if event_id is not None and not (isinstance(event_id, str) and EVENT_ID.fullmatch(event_id)):
        return problem(
            422,
            "Event refused",
            "the event id, when the sender gives one, is 1 to 64 letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit",
            "event-refused",
            errors=[{"pointer": "/id", "message": "not a usable event id"}],
        )
    return key, event_id


def matching(runtime: Runtime, snapshot: Snapshot, query: QueryParams) -> list[dict[str, Any]] | Response:
    """The views of the integrations the query's filters select, or the 400 of a filter not understood."""
    wanted_types = set(query.getlist("type"))
    wanted_statuses = set(query.getlist("status"))
    wanted_labels = [label.partition("=") for label in query.getlist("label")]
    unknown = sorted(wanted_types - set(INTEGRATION_TYPES)) or sorted(wanted_statuses - set(STATUS_WORDS))
    if unknown or any(not name or not sep for name, sep, _ in wanted_labels):
        return problem(
            400,
            "Bad request",
            f"filter by type ({', '.join(INTEGRATION_TYPES)}), status ({', '.join(STATUS_WORDS)}) and label=name=value",
            "invalid-query",
        )
    items = []
    for record in snapshot.registry.values():
        view = integration_view(snapshot, record, runtime.degraded(record.id))
        if wanted_types and view["type"] not in wanted_types:
            continue
        if wanted_statuses and view["status"] not in wanted_statuses:
            continue
        labels = (record.declared_spec or record.spec or {}).get("labels") or {}
        if any(labels.get(name) != value for name, _, value in wanted_labels):
            continue
        items.append(view)
    return items


async def set_override(request: Request, body: dict[str, Any], suspend: bool) -> Response:
    """Suspend or resume the integration of the path, for the actor and reason of the request."""
    runtime = runtime_of(request)
    reconciler = runtime.reconciler
    reason = plain_text(body.get("reason", ""), 500).strip()
    actor = plain_text(body.get("actor") or request.headers.get("x-actor") or "admin", 200)
    integration_id = request.path_params["id"]
    try:
        if suspend:
            record = await reconciler.suspend(integration_id, actor, reason)
        else:
            record = await reconciler.resume(integration_id, actor, reason)
    except KeyError:
        return not_found(integration_id)
    # the snapshot read after the override: the one that holds it
    return JSONResponse(integration_view(reconciler.snapshot, record, runtime.degraded(record.id)))


def integration_view(
    snapshot: Snapshot, record: IntegrationRecord, degraded: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The API's view of a registry row: redacted specs, conditions (Degraded as measured),
    revisions, drift.

    Two versions show side by side: `spec` is the applied one (at `lastAppliedRevision`; null
    until one is applied) and `declaredSpec` the one the file declares now (at
    `lastAttemptedRevision`; null while it does not validate), so an integration waiting for
    secrets shows what it will be. `name` and `type` are the declared version's when it
    validates, else the applied one's."""
    ready = condition(record.conditions, ConditionType.READY)
    override = snapshot.overrides.get(record.id)
    declared = record.declared_spec
    return {
        "id": record.id,
        "name": declared.get("name") if declared else record.name,
        "type": declared.get("type") if declared else record.type,
        "status": status_word(record, degraded),
        "generation": record.generation,
        "spec": record.spec,
        "declaredSpec": declared,
        "conditions": conditions_of(record, degraded),
        "sourceFile": record.source_file,
        "lastAppliedRevision": record.last_applied_revision,
        "lastAttemptedRevision": record.last_attempted_revision,
        "ready": bool(ready and ready["status"] == "True"),
        "drift": (
            {"suspended": True, "by": override.actor, "reason": override.reason, "at": iso(override.at)}
            if override and override.suspended
            else None
        ),
    }
