"""Inbound receipt benchmark: signed Standard Webhooks requests verified and stored by a real
daemon, beside a bare Starlette endpoint that only answers 200, with the same clients.

python bench/inbound.py bare200 PORT    # the peer: uvicorn + Starlette, one route, 200
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import ADMIN, free_port, process  # noqa: E402 - after sys.path is set

PATH_SECRET = "bench-inbound-path-secret-0123456789"
SIGNING_KEY = b"bench-inbound-signing-key-32byte"
RECEIVER = """\
apiVersion: cms.integrations/v1
kind: Integration
id: partner
name: Bench partner
type: webhook
receive:
  secret: ${env:BENCH_INBOUND_SECRET}
  verify:
    scheme: standard-webhooks
    secret: ${env:BENCH_SIGNING_SECRET}
  event: custom.partner.changed
"""


def signed_requests(count: int) -> list[tuple[bytes, dict[str, str]]]:
    """`count` distinct receipts, signed (as a partner would) before the clock starts."""
    stamp = str(int(time.time()))
    requests = []
    for i in range(count):
        message_id = f"msg_{i:08d}_{os.urandom(4).hex()}"
        body = json.dumps({"partnerId": "acme-college", "seq": i, "students": [{"studentId": f"IT{i:07d}"}]}).encode()
        mac = hmac.new(SIGNING_KEY, f"{message_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": stamp,
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        }
        requests.append((body, headers))
    return requests


async def _post_all(url: str, requests: list[tuple[bytes, dict[str, str]]], concurrency: int, want: int) -> float:
    """Receipts per second: `concurrency` clients sharing the requests; a warm-up first."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(share: list[tuple[bytes, dict[str, str]]]) -> None:
            for body, headers in share:
                async with session.post(url, data=body, headers=headers) as response:
                    if response.status != want:
                        raise SystemExit(f"{url} answered {response.status}: {await response.text()}")
                    await response.read()

        warm = min(200, len(requests) // 10)
        head, rest = requests[:warm], requests[warm:]
        await asyncio.gather(*(client(head[i::concurrency]) for i in range(concurrency)))
        start = time.perf_counter()
        await asyncio.gather(*(client(rest[i::concurrency]) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
    return len(rest) / elapsed


def bench_inbound(args: argparse.Namespace) -> list[dict[str, object]]:
    """Inbound receipts per second over HTTP (verified and stored) vs a bare Starlette 200."""
    requests = signed_requests(args.events)
    daemon_port, bare_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="bench-inbound-") as tmp:
        work = Path(tmp)
        (work / "integrations.d").mkdir()
        (work / "integrations.d" / "partner.yaml").write_text(RECEIVER)
        env = {
            "ADMIN_SECRET": ADMIN,
            "PYTHONPATH": str(ROOT),
            "BENCH_INBOUND_SECRET": PATH_SECRET,
            "BENCH_SIGNING_SECRET": "whsec_" + base64.b64encode(SIGNING_KEY).decode(),
        }
        with process(
            [sys.executable, "-m", "reconciler", "run", "--listen", f"127.0.0.1:{daemon_port}", "--log-format", "json"],
            daemon_port,
            cwd=work,
            env=env,
        ):
            time.sleep(1.0)  # the first reconcile pass
            url = f"http://127.0.0.1:{daemon_port}/api/integrations/webhook/receive/{PATH_SECRET}"
            ours = asyncio.run(_post_all(url, requests, args.concurrency, 202))
        stored = _stored_receipts(work / "state" / "reconciler.db")
        if stored != len(requests):
            raise SystemExit(f"the daemon answered 202 {len(requests)} times but stored {stored} receipts")
    with process([sys.executable, str(HERE / "inbound.py"), "bare200", str(bare_port)], bare_port):
        url = f"http://127.0.0.1:{bare_port}/api/integrations/webhook/receive/{PATH_SECRET}"
        bare = asyncio.run(_post_all(url, requests, args.concurrency, 200))
    row = {
        "receipts": args.events,
        "concurrency": args.concurrency,
        "verified_stored_per_s": round(ours),
        "bare_starlette_per_s": round(bare),
        "ratio": round(ours / bare, 2),
    }
    print(
        f"inbound: {row['verified_stored_per_s']} receipts/s over HTTP (Standard Webhooks signature verified, "
        f"event committed before the 202) vs bare Starlette 200: {row['bare_starlette_per_s']}/s; "
        f"ratio {row['ratio']}",
        flush=True,
    )
    return [row]


def _stored_receipts(database: Path) -> int:
    import sqlite3

    with sqlite3.connect(database) as connection:
        row = connection.execute("SELECT count(*) FROM events WHERE source = 'inbound:partner'").fetchone()
    return int(row[0])


def bare200(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def accept(request: Request) -> Response:
        await request.body()
        return Response(status_code=200)

    app = Starlette(routes=[Route("/api/integrations/webhook/receive/{secret}", accept, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    {"bare200": bare200}[sys.argv[1]](int(sys.argv[2]))
