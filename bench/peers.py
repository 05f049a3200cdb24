"""Processes the pipeline benchmarks measure against, each on its own loopback port.

python bench/peers.py sink PORT       # a webhook target that counts and timestamps arrivals
python bench/peers.py bare202 PORT    # a bare Starlette endpoint that only answers 202
"""

from __future__ import annotations

import json
import sys
import time


def sink(port: int) -> None:
    from aiohttp import web

    arrivals: dict[str, float] = {}
    count = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal count
        body = await request.read()
        now = time.time()
        count += 1
        try:
            parsed = json.loads(body)
            for envelope in parsed if isinstance(parsed, list) else [parsed]:
                arrivals.setdefault(envelope["id"], now)
        except (ValueError, KeyError, TypeError):
            pass
        return web.Response(text="ok")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"requests": count, "arrivals": arrivals})

    async def reset(request: web.Request) -> web.Response:
        nonlocal count
        count = 0
        arrivals.clear()
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/hook", hook)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def bare202(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def accept(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"id": "evt_x", "deliveries": 1}, status_code=202)

    app = Starlette(routes=[Route("/api/integrations/webhooks/trigger", accept, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    {"sink": sink, "bare202": bare202}[sys.argv[1]](int(sys.argv[2]))
