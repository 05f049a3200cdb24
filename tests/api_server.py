"""The daemon's API served by uvicorn on loopback over an in-process pipeline, for API tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
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
# --metrics-auth`), the API's document, the file format's schemas, and inbound receipt (the
# path secret and the signature are the sender's credentials). Every other route the app serves is an admin route.
OPEN_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/openapi.json"),
    ("GET", "/schemas/{name}"),
    ("GET", "/schemas/events/{name}"),
    ("POST", "/api/integrations/webhook/receive/{secret}"),
    ("POST", "/api/source/webhook"),
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


class ThreadedApi:
    """create_app on an in-process pipeline, served by uvicorn on loopback in a thread of its own,
    for tests that drive it from synchronous code (one app for many requests, as property tests need)."""

    def __init__(self, tmp: Path, files: dict[str, str], environ: dict[str, str], admin_secret: str = SECRET) -> None:
        self.tmp, self.files, self.environ, self.admin_secret = tmp, files, environ, admin_secret
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        if not self.started.wait(30) or self.error is not None:
            raise AssertionError(f"the app did not start: {self.error!r}")
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the test thread
            self.error = exc
            self.started.set()

    async def _serve(self) -> None:
        self.stop = asyncio.Event()
        async with Pipeline(self.tmp, self.files, self.environ) as pipe:
            self.pipe = pipe
            app = create_app(Runtime(pipe.reconciler, self.admin_secret, pipe.intake, pipe.engine))
            sock = bind("127.0.0.1:0")
            self.port = sock.getsockname()[1]
            server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=True, lifespan="off"))
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started:  # polled; the test thread waits for `started` with a deadline
                if serving.done():
                    serving.result()  # why it failed, if it did
                    raise AssertionError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
            self.started.set()
            await self.stop.wait()
            server.should_exit = True
            await serving

    def close(self) -> None:
        self.client.close()
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)
