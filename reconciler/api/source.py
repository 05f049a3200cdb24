"""Push webhooks of the git source: `POST /api/source/webhook`.

A forge (GitHub, GitLab, Gitea) tells the daemon that a branch moved; a push to the followed
ref makes the source fetch now instead of at its next poll. The request is verified with the
schemes inbound receipt uses: GitHub's `X-Hub-Signature-256` (HMAC-SHA256 of the body),
Gitea's `X-Gitea-Signature` (the same MAC, bare hex) and GitLab's `X-Gitlab-Token` (the shared
secret itself, compared in constant time).

What a webhook can make the daemon do is fetch sooner: the commit it names is not trusted or
even read; the daemon fetches the ref and follows whatever the remote says its head is, by the
same rules as a poll. Pushes arriving during a fetch make one more fetch, not one each.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reconciler.api.common import problem, runtime_of
from reconciler.api.inbound import read_capped
from reconciler.api.verify import Refusal, VerificationFailed, make_verifier

log = logging.getLogger("reconciler.source")

WEBHOOK_PATH = "/api/source/webhook"
MAX_PUSH_BYTES = 4 * 1024 * 1024  # a push of many commits lists them all; forges cap theirs near here
PUSH_EVENTS = {"github": "push", "gitea": "push", "gitlab": "Push Hook"}


def forge_of(request: Request) -> str | None:
    """Which forge sent the request, by its headers (Gitea sends GitHub's too: asked first)."""
    headers = request.headers
    if "x-gitea-event" in headers or "x-gitea-signature" in headers:
        return "gitea"
    if "x-gitlab-event" in headers or "x-gitlab-token" in headers:
        return "gitlab"
    if "x-github-event" in headers or "x-hub-signature-256" in headers:
        return "github"
    return None


def verify_push(forge: str, request: Request, body: bytes, secret: str) -> None:
    """Raise VerificationFailed unless the request carries the forge's proof of the shared secret."""
    if forge == "gitlab":
        token = request.headers.get("x-gitlab-token")
        if not token:
            raise VerificationFailed(Refusal.MISSING_HEADER, "the X-Gitlab-Token header is missing")
        if not hmac.compare_digest(token.encode(), secret.encode()):
            raise VerificationFailed(Refusal.BAD_SIGNATURE, "the X-Gitlab-Token header is not the webhook's secret")
        return
    if forge == "gitea":
        make_verifier("hmac-sha256", secret, 0.0, "x-gitea-signature").verify(request.headers, body, time.time())
        return
    make_verifier("github", secret, 0.0).verify(request.headers, body, time.time())


def event_of(forge: str, request: Request) -> str:
    name = {"github": "x-github-event", "gitea": "x-gitea-event", "gitlab": "x-gitlab-event"}[forge]
    return request.headers.get(name, "")


async def webhook(request: Request) -> Response:
    """A push webhook: 202 and a fetch when it moves the followed ref; 200 and nothing otherwise."""
    runtime = runtime_of(request)
    source, secret = runtime.source, runtime.source_webhook_secret
    if source is None or not secret:
        return problem(
            404,
            "Not found",
            "push webhooks are off: start the daemon with --source and --source-webhook-secret",
        )
    body = await read_capped(request, MAX_PUSH_BYTES)
    if body is None:
        return problem(413, "Payload too large", f"a push webhook's body is at most {MAX_PUSH_BYTES} bytes")
    forge = forge_of(request)
    if forge is None:
        return problem(
            401,
            "Unauthorized",
            "not a GitHub, GitLab or Gitea webhook: "
            "X-Hub-Signature-256, X-Gitlab-Token or X-Gitea-Signature is missing",
            Refusal.MISSING_HEADER.value,
        )
    try:
        verify_push(forge, request, body, secret)
    except VerificationFailed as exc:
        log.warning(
            "push webhook refused",
            extra={"fields": {"forge": forge, "refusal": exc.refusal.value, "client": _client(request)}},
        )
        return problem(401, "Unauthorized", exc.detail, exc.refusal.value)
    event = event_of(forge, request)
    if event == "ping":
        return JSONResponse({"fetch": False, "reason": "ping answered"})
    if event and event != PUSH_EVENTS[forge]:
        return JSONResponse({"fetch": False, "reason": f"{event} events are not pushes"})
    pushed = _pushed_ref(body)
    if pushed is None or not source.spec.matches(pushed):
        return JSONResponse(
            {"fetch": False, "reason": f"a push to {pushed or 'no ref'}; this daemon follows {source.spec.ref}"}
        )
    source.request_fetch()
    log.info("push webhook: fetching", extra={"fields": {"forge": forge, "ref": pushed}})
    return JSONResponse({"fetch": True, "ref": pushed}, status_code=202)


def _pushed_ref(body: bytes) -> str | None:
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return None
    ref = payload.get("ref") if isinstance(payload, dict) else None
    return ref if isinstance(ref, str) else None


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None
