"""The status page's endpoints: the list, one integration, its live log, the actions, sign-in and out.

Every read renders what the API's routes answer (integration_view, integration_detail,
health_status, the store's log and delivery pages); every action runs the API route's own
work (run_test, set_override, run_replay) once the viewer is known to be an admin and the
form's CSRF token holds, then redirects back with what it answered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import yaml
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from reconciler import __version__
from reconciler.api.common import STATUS_WORDS, Runtime, runtime_of
from reconciler.api.integrations import INTEGRATION_TYPES, integration_detail, matching, set_override
from reconciler.api.operations import read_log, run_replay, run_test
from reconciler.api.pages.apidocs import curl, reference
from reconciler.api.pages.chart import plot
from reconciler.api.pages.markup import list_rows
from reconciler.api.pages.render import page, secured, static_response
from reconciler.api.pages.session import COOKIE, CSRF_FIELD, SESSION_SECONDS, Sessions, Viewer
from reconciler.api.pages.sources import document_line
from reconciler.api.status import SUCCESS_WINDOW_SECONDS, health_status
from reconciler.store import IntegrationRecord
from reconciler.store.history import DELIVERY_STATUSES, LOG_KINDS, LogFilter

FLASH_COOKIE = "reconciler_flash"
MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 20
LOG_LENGTH = 50
DELIVERY_PAGE = 25
PLOT_HOURS = (1, 6, 24)
DEFAULT_PLOT_HOURS = 6


def sessions_of(request: Request) -> Sessions:
    """The app's Sessions (one per app, for its admin secret; made at the first request)."""
    found: Sessions | None = getattr(request.app.state, "sessions", None)
    if found is None:
        found = request.app.state.sessions = Sessions(runtime_of(request).admin_secret)
    return found


def _may_read(runtime: Runtime, viewer: Viewer) -> bool:
    return viewer.admin or runtime.public_status


def _common(request: Request, viewer: Viewer, title: str) -> dict[str, Any]:
    """What every page's frame shows: the title, who is looking, the CSRF token of their forms."""
    sessions = sessions_of(request)
    flash = _read_flash(request)
    return {
        "title": title,
        "viewer": viewer,
        "csrf_field": CSRF_FIELD,
        "csrf": sessions.csrf_token(viewer.nonce) if viewer.nonce else "",
        "flash": flash,
        "version": __version__,
        "here": _here(request),
    }


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


async def _sign_in_page(request: Request, status: int = 401, error: str | None = None, after: str = "/") -> Response:
    context = _common(request, Viewer(admin=False), "Sign in")
    context.update({"error": error, "next": after})
    response = await page("sign_in.html", context, status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="reconciler"'
    return _with_flash_cleared(request, response)


# --- the list -----------------------------------------------------------------------------------


async def index(request: Request) -> Response:
    """The status page: every integration at a glance, filtered by type, status and label."""
    runtime = runtime_of(request)
    viewer = sessions_of(request).viewer(request)
    if not _may_read(runtime, viewer):
        return await _sign_in_page(request, after=_here(request))
    snapshot = runtime.reconciler.snapshot
    chosen = QueryParams([(k, v) for k, v in request.query_params.multi_items() if v and k in FILTERS])
    found = matching(runtime, snapshot, chosen)
    error = None
    if isinstance(found, Response):
        error = json.loads(bytes(found.body))["detail"]
        found = []
    figures = await runtime.reconciler.store.call(_list_figures, runtime)
    labels = sorted(
        {
            f"{name}={value}"
            for record in snapshot.registry.values()
            for name, value in ((record.declared_spec or record.spec or {}).get("labels") or {}).items()
        }
    )
    rows = [_row(view, figures) for view in sorted(found, key=lambda v: v["id"])]
    context = _common(request, viewer, "Integrations")
    context.update(
        {
            "rows": rows,
            "rows_html": await asyncio.to_thread(list_rows, rows),
            "total": len(snapshot.registry),
            "health": figures["health"],
            "refusals": runtime.reconciler.last_pass.refusals if runtime.reconciler.last_pass else [],
            "types": INTEGRATION_TYPES,
            "statuses": STATUS_WORDS,
            "labels": labels,
            "chosen": {k: chosen.get(k, "") for k in FILTERS},
            "error": error,
        }
    )
    response = await page("list.html", context, 400 if error else 200)
    return _with_flash_cleared(request, response)


FILTERS = ("type", "status", "label")


# --- the API reference ----------------------------------------------------------------------------


async def api_docs(request: Request) -> Response:
    """The OpenAPI document as a page with a "Try it" form per operation; open, like the document."""
    viewer = sessions_of(request).viewer(request)
    base_url = str(request.base_url)
    context = _common(request, viewer, "API")
    context.update({"ref": reference(), "curl": lambda operation: curl(operation, base_url)})
    return _with_flash_cleared(request, await page("api_docs.html", context))


def _list_figures(runtime: Runtime) -> dict[str, Any]:
    """The health document (counters, queue, last pass) and each integration's latest send:
    one call on the store's threads."""
    health = health_status(runtime)
    latest = runtime.reconciler.store.sync.latest_attempts(time.time() - SUCCESS_WINDOW_SECONDS)
    config_dir = runtime.reconciler.config_dir
    return {
        "lines": {r.id: _line_of(config_dir, r) for r in runtime.reconciler.snapshot.registry.values()},
        "health": health,
        "by_id": {item["id"]: item for item in health["integrations"]},
        "last_send": {i: attempt for (i, is_sync), attempt in latest.items() if not is_sync},
    }


def _line_of(config_dir: Path, record: IntegrationRecord) -> int | None:
    """The line of the integration's document in its file (the version last attempted)."""
    revision = record.last_attempted_revision or record.last_applied_revision or {}
    return document_line(config_dir, record.source_file, record.source_document, revision.get("contentHash"))


def _row(view: dict[str, Any], figures: dict[str, Any]) -> dict[str, Any]:
    health = figures["by_id"].get(view["id"], {})
    last = figures["last_send"].get(view["id"])
    return {
        **view,
        "labels": ((view.get("declaredSpec") or view.get("spec") or {}).get("labels") or {}),
        "sourceLine": figures["lines"].get(view["id"]),
        "queue": health.get("queue", {"depth": 0, "dead": 0}),
        "attempts24h": health.get("attempts24h", 0),
        "successRate24h": health.get("successRate24h"),
        "lastSend": None if last is None else {"at": last.at, "outcome": last.outcome, "statusCode": last.status_code},
    }


# --- one integration ----------------------------------------------------------------------------


async def integration(request: Request) -> Response:
    """One integration: its spec, conditions, live log, deliveries with their attempts, and plot."""
    runtime = runtime_of(request)
    viewer = sessions_of(request).viewer(request)
    if not _may_read(runtime, viewer):
        return await _sign_in_page(request, after=_here(request))
    snapshot = runtime.reconciler.snapshot
    integration_id = request.path_params["id"]
    record = snapshot.registry.get(integration_id)
    if record is None:
        context = _common(request, viewer, "Not found")
        context["missing"] = integration_id
        return await page("not_found.html", context, 404)
    detail = await integration_detail(runtime, snapshot, record)
    detail["sourceLine"] = await asyncio.to_thread(_line_of, runtime.reconciler.config_dir, record)
    hours = _plot_hours(request.query_params.get("hours"))
    statuses = _delivery_statuses(request.query_params.get("deliveries"))
    found = await runtime.reconciler.store.call(_integration_figures, runtime, integration_id, statuses, hours)
    context = _common(request, viewer, detail["name"] or integration_id)
    context.update(
        {
            "item": detail,
            "spec_yaml": _yaml(detail.get("declaredSpec") or detail["spec"]),
            # the applied version, when it is not the one the file declares now (refused, waiting)
            "applied_yaml": _yaml(detail["spec"]) if detail.get("declaredSpec") not in (None, detail["spec"]) else "",
            "log": found["log"],
            "log_after": found["log"][0]["cursor"] if found["log"] else "",
            "deliveries": found["deliveries"],
            "delivery_statuses": DELIVERY_STATUSES,
            "shown_statuses": statuses,
            "plot": plot(found["series"], f"Sends per minute and mean latency over the last {hours} h"),
            "hours": hours,
            "plot_hours": PLOT_HOURS,
            "stream": f"/integrations/{quote(integration_id, safe='')}/log",
        }
    )
    return _with_flash_cleared(request, await page("integration.html", context))


def _plot_hours(raw: str | None) -> int:
    return int(raw) if raw and raw.isdigit() and int(raw) in PLOT_HOURS else DEFAULT_PLOT_HOURS


def _delivery_statuses(raw: str | None) -> list[str]:
    return [raw] if raw in DELIVERY_STATUSES else ["pending", "failed", "dead"]


def _integration_figures(runtime: Runtime, integration_id: str, statuses: list[str], hours: int) -> dict[str, Any]:
    """The log, the deliveries with their attempts, and the plot's series: one call on the store's threads."""
    store = runtime.reconciler.store.sync
    now = time.time()
    log, _ = store.log_page(integration_id, LogFilter(LOG_KINDS), limit=LOG_LENGTH)
    deliveries, _ = store.delivery_page(integration_id, statuses, limit=DELIVERY_PAGE)
    attempts = store.delivery_attempts([d["id"] for d in deliveries])
    for delivery in deliveries:
        delivery["attemptRows"] = attempts.get(delivery["id"], [])
    series = store.attempt_series(integration_id, now - hours * 3600, now, 60.0 if hours <= 6 else 300.0)
    return {"log": log, "deliveries": deliveries, "series": series}


def _yaml(spec: dict[str, Any] | None) -> str:
    """The spec as YAML, without the fields left unset (null): what a file would say."""
    if spec is None:
        return ""
    return yaml.safe_dump(_set_fields(spec), sort_keys=False, allow_unicode=True, default_flow_style=False)


def _set_fields(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _set_fields(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_set_fields(v) for v in value]
    return value


async def log_stream(request: Request) -> Response:
    """The integration's log as the API serves it (`follow=true`: the same Server-Sent Events
    stream); `after` is the cursor the page was rendered at, so no entry is missed or repeated."""
    runtime = runtime_of(request)
    viewer = sessions_of(request).viewer(request)
    if not _may_read(runtime, viewer):
        return await _sign_in_page(request, after=_here(request))
    after = request.query_params.get("after")
    if after and "last-event-id" not in request.headers:
        scope = dict(request.scope)
        scope["headers"] = [*request.scope["headers"], (b"last-event-id", after.encode("latin-1", "replace"))]
        request = Request(scope, request.receive)
    return await read_log(request)


# --- actions ------------------------------------------------------------------------------------


async def action_test(request: Request) -> Response:
    """Send a test event through the integration's sink (the test route's work)."""
    return await _act(request, lambda form: run_test(request, {"message": form.get("message") or None}), "Test")


async def action_suspend(request: Request) -> Response:
    """Suspend the integration, with a reason (the deactivate route's work)."""
    return await _act(request, lambda form: set_override(request, _actor(form), suspend=True), "Suspend")


async def action_resume(request: Request) -> Response:
    """Resume the integration, with a reason (the activate route's work)."""
    return await _act(request, lambda form: set_override(request, _actor(form), suspend=False), "Resume")


async def action_replay(request: Request) -> Response:
    """Replay one delivery, or every failed or dead one since a time (the replay route's work)."""

    def body(form: dict[str, str]) -> dict[str, Any]:
        found: dict[str, Any] = {"actor": "admin (status page)"}
        if form.get("deliveryId"):
            found["deliveryId"] = form["deliveryId"]
        else:
            found["since"] = form.get("since") or ""
        return found

    return await _act(request, lambda form: run_replay(request, body(form)), "Replay")


def _actor(form: dict[str, str]) -> dict[str, Any]:
    return {"reason": form.get("reason", ""), "actor": "admin (status page)"}


async def _act(request: Request, work: Any, what: str) -> Response:
    """An action of an admin with a genuine form: the work, then back to the integration's page."""
    sessions = sessions_of(request)
    viewer = sessions.viewer(request)
    if not viewer.admin:
        return await _sign_in_page(request, after=f"/integrations/{quote(request.path_params['id'], safe='')}")
    form = await _form(request)
    if isinstance(form, Response):
        return form
    if not _same_origin(request) or not sessions.csrf_ok(viewer, form.get(CSRF_FIELD)):
        return await _refused(request, viewer)
    answer: Response = await work(form)
    body = json.loads(bytes(answer.body)) if answer.body else {}
    ok = answer.status_code < 300
    text = f"{what}: " + (_success(what, body) if ok else str(body.get("detail", body.get("title", "refused"))))
    back = f"/integrations/{quote(request.path_params['id'], safe='')}"
    if answer.status_code == 404:
        back = "/"
    response = RedirectResponse(back, status_code=303)
    _set_flash(response, request, ok, text)
    return secured(response)


def _success(what: str, body: dict[str, Any]) -> str:
    if what == "Test":
        if body.get("ok"):
            return f"delivered (HTTP {body.get('status')}, {body.get('latencyMs')} ms)"
        return f"failed: {body.get('error') or ('HTTP ' + str(body.get('status')))}"
    if what == "Replay":
        count = body.get("replayed", 0)
        return f"{count} {'delivery' if count == 1 else 'deliveries'} queued again"
    return f"done; the status is now {body.get('status')}"


async def _refused(request: Request, viewer: Viewer) -> Response:
    context = _common(request, viewer, "Refused")
    context["reason"] = "The form is out of date or was not sent from this page. Reload the page and try again."
    return await page("refused.html", context, 403)


def _same_origin(request: Request) -> bool:
    """A browser's Origin, when it sends one, must be this page's (a second line behind the token)."""
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"


async def _form(request: Request) -> dict[str, str] | Response:
    """A small urlencoded form, one value per name; or the answer that refuses the body."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return secured(Response("send the form as application/x-www-form-urlencoded", 415, media_type="text/plain"))
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            return secured(Response(f"forms are limited to {MAX_FORM_BYTES} bytes", 413, media_type="text/plain"))
    try:
        parsed = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:
        return secured(Response(f"forms have at most {MAX_FORM_FIELDS} fields", 400, media_type="text/plain"))
    return {name: values[0].replace("\x00", "") for name, values in parsed.items()}


# --- flash messages -----------------------------------------------------------------------------


def _set_flash(response: Response, request: Request, ok: bool, text: str) -> None:
    value = base64.urlsafe_b64encode(json.dumps({"ok": ok, "text": text[:600]}).encode()).decode()
    response.set_cookie(
        FLASH_COOKIE, value, max_age=60, path="/", httponly=True, samesite="strict", secure=_https(request)
    )


def _read_flash(request: Request) -> dict[str, Any] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        found = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except ValueError:
        return None
    return found if isinstance(found, dict) and isinstance(found.get("text"), str) else None


def _with_flash_cleared(request: Request, response: Response) -> Response:
    if request.cookies.get(FLASH_COOKIE):
        response.delete_cookie(FLASH_COOKIE, path="/", httponly=True, samesite="strict", secure=_https(request))
    return response


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


# --- signing in and out -------------------------------------------------------------------------


async def sign_in_form(request: Request) -> Response:
    """The sign-in form (the page of anyone who may not read yet)."""
    return await _sign_in_page(request, status=200, after=_local(request.query_params.get("next")))


async def sign_in(request: Request) -> Response:
    """Check the admin secret of the form; on success a session cookie, never the secret, and back."""
    form = await _form(request)
    if isinstance(form, Response):
        return form
    after = _local(form.get("next"))
    sessions = sessions_of(request)
    if not _same_origin(request) or not sessions.secret_matches(form.get("secret", "")):
        return await _sign_in_page(request, error="That is not the admin secret.", after=after)
    response = RedirectResponse(after, status_code=303)
    response.set_cookie(
        COOKIE,
        sessions.issue(),
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )
    return secured(response)


async def sign_out(request: Request) -> Response:
    """End the session: its token is revoked, the cookie cleared."""
    sessions = sessions_of(request)
    viewer = sessions.viewer(request)
    form = await _form(request)
    if isinstance(form, Response):
        return form
    if viewer.by_cookie and not sessions.csrf_ok(viewer, form.get(CSRF_FIELD)):
        return await _refused(request, viewer)
    sessions.revoke(request.cookies.get(COOKIE))
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=_https(request))
    return secured(response)


def _local(target: str | None) -> str:
    """Where to go after signing in: a path of this daemon only (never `//elsewhere` or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


# --- assets -------------------------------------------------------------------------------------


async def static(request: Request) -> Response:
    """The page's stylesheet and script, served by the daemon (no CDN: these networks have no internet)."""
    found = static_response(request.path_params["name"])
    return found or secured(Response("no such file", 404, media_type="text/plain"))
