"""What every route shares: problem documents, admin authentication, bounded JSON bodies."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reconciler.api.auth import is_admin
from reconciler.reconcile.conditions import ConditionType, condition

if TYPE_CHECKING:
    from reconciler.delivery.engine import DeliveryEngine
    from reconciler.intake.committer import Intake
    from reconciler.reconcile.loop import Reconciler
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


def problem(status: int, title: str, detail: str, kind: str = "about:blank", **extra: Any) -> JSONResponse:
    body = {
        "type": kind if kind == "about:blank" else PROBLEM_TYPE + kind,
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


TITLES = {404: "Not found", 405: "Method not allowed", 401: "Unauthorized", 413: "Payload too large"}


def require_admin(request: Request, admin_secret: str) -> Response | None:
    if is_admin(request, admin_secret):
        return None
    response = problem(
        401,
        "Unauthorized",
        "send the admin secret in the x-admin-secret header (or Authorization: Bearer); query strings are not accepted",
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="reconciler"'
    return response


def not_found(integration_id: str) -> Response:
    return problem(404, "Not found", f"no integration {integration_id!r} is applied or declared", "not-found")


async def admin_json(request: Request, admin_secret: str) -> dict[str, Any] | Response:
    """The JSON object an admin sent, or the problem response that refuses the request."""
    return require_admin(request, admin_secret) or await json_body(request)


async def json_body(request: Request) -> dict[str, Any] | Response:
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


STATUS_WORDS = ("active", "suspended", "inactive", "failing", "pending", "removing")


def status_word(record: IntegrationRecord) -> str:
    """One word for lists and filters: active, suspended, inactive, failing, pending, removing."""
    ready = condition(record.conditions, ConditionType.READY) or {}
    suspended = condition(record.conditions, ConditionType.SUSPENDED) or {}
    if suspended.get("status") == "True":
        return "suspended"
    reason = ready.get("reason")
    if ready.get("status") == "True":
        return "active"
    return {"Inactive": "inactive", "Removing": "removing"}.get(str(reason), "failing" if record.applied else "pending")
