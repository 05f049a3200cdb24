"""Real HTTP peers on loopback for delivery tests: a webhook target and an OAuth2 server.

A Peer runs an aiohttp server in its own thread (so both sync and async tests can use it),
records every request, and answers by a script the test sets.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float
    finished_at: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Script = Callable[[Seen], Reply]


class Peer:
    """A webhook target on 127.0.0.1; `script(seen)` decides each reply (default: 200 ok)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: Script = lambda _seen: Reply()
        self.tokens: dict[str, float] = {}  # issued access token -> expiry (epoch seconds)
        self.token_requests: list[dict[str, str]] = []
        self.token_lifetime = 3600
        self.client = ("client-id", "client-secret")
        self.refresh_token = "refresh-1"
        self.rotate_refresh = False
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._started.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/token", self._token)
        app.router.add_route("*", "/{tail:.*}", self._any)

        async def start() -> None:
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._started.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def close(self) -> None:
        if self._loop is None:
            return

        async def stop() -> None:
            assert self._runner is not None
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _any(self, request: web.Request) -> web.Response:
        seen = Seen(
            request.method, request.path, dict(request.query), dict(request.headers), await request.read(), time.time()
        )
        with self._lock:
            self.seen.append(seen)
        reply = self.script(seen)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        seen.finished_at = time.time()
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)

    async def _token(self, request: web.Request) -> web.Response:
        """OAuth2 token endpoint (RFC 6749): client credentials and refresh token grants."""
        form = {k: str(v) for k, v in (await request.post()).items()}
        with self._lock:
            self.token_requests.append(form)
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(header[6:]).decode().partition(":")
        if (client_id, client_secret) != self.client:
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = form.get("grant_type")
        body: dict[str, Any] = {}
        if grant == "refresh_token":
            if form.get("refresh_token") != self.refresh_token:
                return web.json_response({"error": "invalid_grant"}, status=400)
            if self.rotate_refresh:
                self.refresh_token = f"refresh-{secrets.token_hex(4)}"
                body["refresh_token"] = self.refresh_token
        elif grant != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = secrets.token_hex(8)
        self.tokens[token] = time.time() + self.token_lifetime
        body.update({"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime})
        return web.json_response(body)

    def bearer_valid(self, seen: Seen) -> bool:
        header = seen.headers.get("Authorization", "")
        expiry = self.tokens.get(header.removeprefix("Bearer "))
        return header.startswith("Bearer ") and expiry is not None and time.time() < expiry

    def requests(self, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if path is None or s.path == path]


# --- loopback in disguise ------------------------------------------------------------------------


def fullwidth(text: str) -> str:
    """127.0.0.1 in fullwidth digits and full stops: ASCII shifted to the fullwidth forms block."""
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


def circled(text: str) -> str:
    """`①②⑦.⓪.⓪.①`: digits as circled numbers (NFKC folds them back)."""
    return "".join("\u24ea" if c == "0" else chr(0x2460 + int(c) - 1) if c.isdigit() else c for c in text)


def ideographic(text: str) -> str:
    """`127。0。0。1`: ideographic full stops, which IDNA reads as dots."""
    return text.replace(".", "\u3002")


# 127.0.0.1 as yarl (and so aiohttp) reads each of these
DISGUISED_LOOPBACK = [ideographic("127.0.0.1"), fullwidth("127.0.0.1"), circled("127.0.0.1")]
