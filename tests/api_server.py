"""The daemon's API served by uvicorn on loopback over an in-process pipeline, for API tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from reconciler.api.app import create_app
from reconciler.api.common import Runtime
from reconciler.daemon import _Server, bind
from reconciler.delivery.health import HealthMonitor
from tests.pipeline import Pipeline

SECRET = "admin-secret-for-the-api-tests-0123"

# The routes that answer without the admin secret: the probes, /metrics (unless `run
# --metrics-auth`), the API's document, and inbound receipt (the path secret and the signature
# are the sender's credentials). Every other route the app serves is an admin route.
OPEN_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/openapi.json"),
    ("POST", "/api/integrations/webhook/receive/{secret}"),
}


def bare_app() -> Starlette:
    """The app, to look at its routes: building it reads nothing of the runtime, so there is none."""
    return create_app(Runtime(cast(Any, None), SECRET))


def app_routes() -> list[tuple[str, str]]:
    """(method, path template) of every API route the app serves, HEAD aside, in the app's order:
    the tests that cover every route take them from here, so a route added to the app is covered.
    The status page's HTML routes are not API (they are `include_in_schema=False`, out of the
    OpenAPI document): page_routes() has them, and tests/test_pages.py covers them."""
    return _routes(api=True)


def page_routes() -> list[tuple[str, str]]:
    """(method, path template) of every route of the status page."""
    return _routes(api=False)


def _routes(api: bool) -> list[tuple[str, str]]:
    app = bare_app()
    assert all(isinstance(route, Route) and route.methods for route in app.routes), "a route no test would see"
    return [
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route) and route.include_in_schema == api
        for method in sorted(route.methods or ())
        if method != "HEAD"
    ]


def admin_routes() -> list[tuple[str, str]]:
    """The routes behind the admin secret: all but OPEN_ROUTES."""
    return [route for route in app_routes() if route not in OPEN_ROUTES]


@contextlib.asynccontextmanager
async def serve(
    pipeline: Pipeline, *, metrics_need_admin: bool = False, public_status: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client of the pipeline's API, served on a free loopback port."""
    sock = bind("127.0.0.1:0")
    runtime = Runtime(
        pipeline.reconciler,
        SECRET,
        pipeline.intake,
        pipeline.engine,
        metrics_need_admin=metrics_need_admin,
        public_status=public_status,
        stop=pipeline.stop,
        health=HealthMonitor(pipeline.reconciler, pipeline.engine, pipeline.daemon_store),
    )
    server = _Server(uvicorn.Config(create_app(runtime), log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = sock.getsockname()[1]
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"x-admin-secret": SECRET}, timeout=20
        ) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=20)
