"""The daemon's API served by uvicorn on loopback over an in-process pipeline, for API tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import uvicorn

from reconciler.api.app import create_app
from reconciler.api.common import Runtime
from reconciler.daemon import _Server, bind
from tests.pipeline import Pipeline

SECRET = "admin-secret-for-the-api-tests-0123"


@contextlib.asynccontextmanager
async def serve(pipeline: Pipeline, *, metrics_need_admin: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client of the pipeline's API, served on a free loopback port."""
    sock = bind("127.0.0.1:0")
    runtime = Runtime(
        pipeline.reconciler,
        SECRET,
        pipeline.intake,
        pipeline.engine,
        metrics_need_admin=metrics_need_admin,
        stop=pipeline.stop,
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
