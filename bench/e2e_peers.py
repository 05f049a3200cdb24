"""The systems the end-to-end benchmark compares the daemon with, built the way their users
build them. Each takes events on `POST /api/integrations/webhooks/trigger` (answering 202 with
an `id`) and posts the envelope to the sink at SINK_URL.

python bench/e2e_peers.py forwarder PORT        # posts before answering; stores nothing
python bench/e2e_peers.py celery-web PORT       # Starlette calling .delay (Redis broker)
celery -A bench.e2e_peers:celery_app worker ... # the Celery worker, posting with requests
python bench/e2e_peers.py procrastinate-web PORT
python bench/e2e_peers.py procrastinate-worker CONCURRENCY
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import uuid
from typing import Any

SINK_URL = os.environ.get("SINK_URL", "http://127.0.0.1:9/hook")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
PG_CONNINFO = os.environ.get("PG_CONNINFO", "")


def envelope(body: dict[str, Any]) -> dict[str, Any]:
    """The envelope each peer forwards: the guide's, with an id the sink records arrivals by."""
    return {
        "id": "evt_" + uuid.uuid4().hex,
        "event": body.get("event"),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
        "data": body.get("data"),
    }


def serve(app: Any, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- (c) the bare forwarder: the ceiling of one process, storing nothing ---------------------------


def forwarder(port: int) -> None:
    import aiohttp
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    session: aiohttp.ClientSession | None = None

    async def trigger(request: Request) -> JSONResponse:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        sent = envelope(await request.json())
        async with session.post(SINK_URL, json=sent) as response:
            await response.read()
        return JSONResponse({"id": sent["id"], "deliveries": 1}, status_code=202)

    serve(Starlette(routes=[Route("/api/integrations/webhooks/trigger", trigger, methods=["POST"])]), port)


# --- (a) Celery 5 with the Redis broker ---------------------------------------------------------------


def _celery() -> Any:
    from celery import Celery

    app = Celery("bench", broker=REDIS_URL)
    app.conf.update(
        task_acks_late=True,  # acknowledged to the broker after the post: a crashed worker's task is redone
        worker_prefetch_multiplier=4,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


celery_app = _celery() if "celery" in " ".join(sys.argv) else None

if celery_app is not None:
    import requests

    _http = requests.Session()

    @celery_app.task(name="forward")
    def forward(sent: dict[str, Any]) -> None:
        _http.post(SINK_URL, data=json.dumps(sent), headers={"content-type": "application/json"}, timeout=10)


def celery_web(port: int) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def trigger_sync(body: dict[str, Any]) -> str:
        sent = envelope(body)
        forward.delay(sent)
        return str(sent["id"])

    async def trigger(request: Request) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        event_id = await run_in_threadpool(trigger_sync, await request.json())  # .delay blocks on Redis
        return JSONResponse({"id": event_id, "deliveries": 1}, status_code=202)

    serve(Starlette(routes=[Route("/api/integrations/webhooks/trigger", trigger, methods=["POST"])]), port)


# --- (b) procrastinate: a PostgreSQL-backed queue, an aiohttp worker ------------------------------------


def _procrastinate() -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=PG_CONNINFO))
    session_holder: list[Any] = []

    @app.task(name="forward", queue="bench")
    async def forward_async(sent: dict[str, Any]) -> None:
        import aiohttp

        if not session_holder:
            session_holder.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)))
        async with session_holder[0].post(SINK_URL, json=sent) as response:
            await response.read()

    return app


def procrastinate_web(port: int) -> None:
    import contextlib

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    app = _procrastinate()
    task = app.tasks["forward"]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> Any:
        async with app.open_async():
            yield

    async def trigger(request: Request) -> JSONResponse:
        sent = envelope(await request.json())
        await task.defer_async(sent=sent)  # committed to PostgreSQL before the 202
        return JSONResponse({"id": sent["id"], "deliveries": 1}, status_code=202)

    routes = [Route("/api/integrations/webhooks/trigger", trigger, methods=["POST"])]
    serve(Starlette(routes=routes, lifespan=lifespan), port)


def procrastinate_worker(concurrency: int) -> None:
    import asyncio

    app = _procrastinate()

    async def work() -> None:
        async with app.open_async():
            await app.run_worker_async(queues=["bench"], concurrency=concurrency, install_signal_handlers=True)

    asyncio.run(work())


def procrastinate_schema() -> None:
    import asyncio

    app = _procrastinate()

    async def apply() -> None:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    asyncio.run(apply())


if __name__ == "__main__":
    what, argument = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "0"
    {
        "forwarder": forwarder,
        "celery-web": celery_web,
        "procrastinate-web": procrastinate_web,
        "procrastinate-worker": procrastinate_worker,
        "procrastinate-schema": lambda _n: procrastinate_schema(),
    }[what](int(argument))
