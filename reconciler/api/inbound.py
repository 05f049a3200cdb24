"""Inbound webhooks: `POST /api/integrations/webhook/receive/{secret}`.

The path secret selects a `type: webhook` integration with a `receive:` block; the request is
verified by the integration's scheme (reconciler.api.verify), its JSON payload is emitted as
the configured event through intake, and the answer (202 with the event id) comes once the
event and its deliveries are stored. A sender's message id makes a repeat an acknowledgement
(200, `duplicate: true`, the original event id), never a second event.

Secrets stay out of every answer and log line: the path secret is looked up by its SHA-256
and compared in constant time, an unknown one gets a 404 that says nothing more, and the
access log (when turned on) shows the path with the secret segment replaced.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reconciler.api.common import problem, runtime_of, store_unavailable
from reconciler.api.verify import Scheme, UnusableSecret, VerificationFailed, Verifier, make_verifier
from reconciler.events import jsontext
from reconciler.events.envelope import EventRejected
from reconciler.intake.committer import IntakeStopped
from reconciler.manifests.durations import parse_duration
from reconciler.manifests.models import WebhookIntegration
from reconciler.manifests.secrets import MIN_PATH_SECRET_CHARS
from reconciler.registry import AppliedIntegration, SnapshotSource, substitute
from reconciler.store import StoreUnavailable

log = logging.getLogger("reconciler.inbound")

RECEIVE_PATH = "/api/integrations/webhook/receive/{secret}"
MAX_RECEIPT_BYTES = 512 * 1024  # an event's data is at most 256 KiB; room for whitespace and form encoding
RETRY_AFTER_SECONDS = 60  # asked of senders while an integration is paused
MAX_MESSAGE_ID_CHARS = 128  # longer sender ids are hashed into the dedup key
SOURCE_PREFIX = "inbound:"  # events.source of a receipt: inbound:<integration id>


@dataclass(frozen=True)
class Endpoint:
    """One integration's inbound address: what the index maps a path secret to."""

    applied: AppliedIntegration
    secret: bytes
    event: str
    verifier: Verifier | None  # None: no verify block, the path secret alone admits
    unusable: str | None = None  # why the signing secret cannot be used (logged, not shown)

    @property
    def id(self) -> str:
        """The integration's id."""
        return self.applied.id


class InboundIndex:
    """Path secret -> endpoint, rebuilt when the reconciler applies a change.

    Keyed by the SHA-256 of the resolved secret, so a lookup never compares secrets character
    by character; the hit is then confirmed with a constant-time comparison."""

    def __init__(self, reconciler: SnapshotSource) -> None:
        self.reconciler = reconciler
        self._by_digest: dict[bytes, Endpoint] = {}
        self._built_from: object = None  # the snapshot's applied mapping the index was built from
        self._warned: set[tuple[str, int, str]] = set()

    def lookup(self, presented: str) -> Endpoint | None:
        """The endpoint a presented path secret selects, or None; rebuilt first if the snapshot changed."""
        applied = self.reconciler.snapshot.applied
        if self._built_from is not applied:
            self._rebuild(applied)
        raw = presented.encode()
        endpoint = self._by_digest.get(hashlib.sha256(raw).digest())
        if endpoint is None or not hmac.compare_digest(endpoint.secret, raw):
            return None
        return endpoint

    def _rebuild(self, applied_now: Mapping[str, AppliedIntegration]) -> None:
        claims: dict[bytes, list[Endpoint]] = {}
        for applied in applied_now.values():
            endpoint = self._endpoint(applied)
            if endpoint is not None:
                claims.setdefault(hashlib.sha256(endpoint.secret).digest(), []).append(endpoint)
        index = {}
        for digest, endpoints in claims.items():
            if len(endpoints) == 1:
                index[digest] = endpoints[0]
                continue
            # A secret that selects two integrations selects neither: a receipt must not land
            # on the wrong one. Validation refuses equal references; this is equal values.
            for endpoint in endpoints:
                self._warn_once(
                    endpoint.applied,
                    "duplicate",
                    "inbound receipt disabled: its path secret has the same value as another integration's",
                    {"others": sorted(e.id for e in endpoints if e is not endpoint)},
                )
        self._by_digest = index
        self._built_from = applied_now

    def _endpoint(self, applied: AppliedIntegration) -> Endpoint | None:
        spec = applied.spec
        if not isinstance(spec, WebhookIntegration) or spec.receive is None:
            return None
        if applied.resolved is None or applied.removing:
            return None  # secrets unresolved (its Ready condition says which), or its file is gone
        receive = spec.receive
        secret = substitute(receive.secret, applied.resolved).strip()
        if len(secret) < MIN_PATH_SECRET_CHARS:
            self._warn_once(
                applied,
                "short",
                f"inbound receipt disabled: the path secret is shorter than {MIN_PATH_SECRET_CHARS} characters",
                {"fix": "set it to a long random value, such as the output of `openssl rand -hex 24`"},
            )
            return None
        verifier, unusable = None, None
        if receive.verify is not None:
            signing = substitute(receive.verify.secret, applied.resolved).strip()
            try:
                verifier = make_verifier(
                    receive.verify.scheme,
                    signing,
                    parse_duration(receive.verify.tolerance),
                    receive.verify.header,
                )
            except UnusableSecret as exc:
                unusable = str(exc)
        return Endpoint(applied, secret.encode(), receive.event, verifier, unusable)

    def _warn_once(self, applied: AppliedIntegration, what: str, message: str, fields: dict[str, Any]) -> None:
        key = (applied.id, applied.generation, what)
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, extra={"fields": {"integration": applied.id, **fields}})


async def receive(request: Request) -> Response:
    """An inbound webhook: verified by its integration's scheme, then emitted as the configured event.

    Open (not admin-authenticated): the path secret and the signature are the sender's credentials."""
    endpoint = inbound_index(request).lookup(request.path_params["secret"])
    if endpoint is None:
        log.info("inbound receipt refused: unknown path secret", extra={"fields": _client(request)})
        return problem(404, "Not found", "there is no inbound webhook at this address", "not-found")
    body = await read_capped(request, MAX_RECEIPT_BYTES)
    if body is None:
        _refused(request, endpoint, "too-large", 413)
        return problem(
            413,
            "Payload too large",
            f"inbound bodies are limited to {MAX_RECEIPT_BYTES} bytes; send a reference (a URL) to large content",
            "payload-too-large",
        )
    refused = _admit(request, endpoint, body)
    if refused is not None:
        return refused
    try:
        payload = parse_payload(body, request.headers.get("content-type", ""))
    except jsontext.UnfitJson as exc:
        _refused(request, endpoint, "unfit-json", 400)
        return problem(400, "Bad request", f"the body cannot be taken: {exc}", "bad-body")
    except ValueError as exc:
        _refused(request, endpoint, "not-json", 400)
        return problem(400, "Bad request", f"the body is not JSON: {exc}", "bad-body")
    handshake = _handshake(endpoint, request, payload)
    if handshake is not None:
        return handshake
    return await _emit(request, endpoint, payload, body)


def inbound_index(request: Request) -> InboundIndex:
    """The index of the app serving the request (create_app puts it in the app's state)."""
    index: InboundIndex = request.app.state.inbound_index
    return index


# --- the steps of a receipt -----------------------------------------------------------------------


def _admit(request: Request, endpoint: Endpoint, body: bytes) -> Response | None:
    """None when the endpoint can take the receipt: its signing secret is usable, the signature
    verifies and the integration is delivering; else the refusal."""
    if endpoint.unusable is not None:
        log.error(
            "inbound receipt refused: the signing secret cannot be used",
            extra={"fields": {"integration": endpoint.id, "reason": endpoint.unusable}},
        )
        return problem(
            503,
            "Misconfigured",
            "this inbound webhook cannot verify requests; its operators are told why",
            "misconfigured",
        )
    if endpoint.verifier is not None:
        try:
            endpoint.verifier.verify(request.headers, body, time.time())
        except VerificationFailed as failed:
            _refused(request, endpoint, failed.refusal.value, 401)
            response = problem(401, "Signature refused", failed.detail, failed.refusal.value)
            response.headers["WWW-Authenticate"] = f'Signature scheme="{endpoint.verifier.scheme}"'
            return response
    if not endpoint.applied.delivering:
        why = "suspended" if endpoint.applied.suspended else "inactive"
        _refused(request, endpoint, why, 503)
        response = problem(
            503,
            "Paused",
            "this inbound webhook is not taking receipts at the moment; send the request again later",
            "paused",
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return None


async def _emit(request: Request, endpoint: Endpoint, payload: Any, body: bytes) -> Response:
    """Emit the payload as the endpoint's event (once per sender message) and answer the sender."""
    if not isinstance(payload, dict):
        _refused(request, endpoint, "not-an-object", 422)
        return problem(
            422,
            "Event refused",
            "the payload must be a JSON object: it is emitted as the event's data",
            "event-refused",
            errors=[{"pointer": "/data", "message": "data must be a JSON object"}],
        )
    sender_id = message_id(endpoint.verifier.scheme if endpoint.verifier else None, request, payload, body)
    intake = runtime_of(request).intake
    assert intake is not None
    try:
        accepted = await intake.emit(
            endpoint.event,
            payload,
            source=SOURCE_PREFIX + endpoint.id,
            dedup_key=dedup_key(endpoint.id, sender_id),
        )
    except EventRejected as exc:
        _refused(request, endpoint, "event-refused", 422)
        return problem(
            422,
            "Event refused",
            "the payload does not match the event type; see errors",
            "event-refused",
            errors=exc.reasons,
        )
    except IntakeStopped as exc:
        response = problem(503, "Shutting down", str(exc), "shutting-down")
        response.headers["Retry-After"] = "5"
        return response
    except StoreUnavailable as exc:
        # the sender retries (every platform does on a 503); the store's address is for our log only
        _refused(request, endpoint, "store-unavailable", 503)
        log.warning("inbound receipt not stored: the store is unavailable", extra={"fields": {"reason": exc.reason}})
        return store_unavailable(exc, "the receipt could not be stored at the moment; send the request again later")
    duplicate = accepted.duplicate_of is not None
    log.info(
        "inbound receipt" + (" repeated: acknowledged without a second event" if duplicate else ""),
        extra={
            "fields": {
                "integration": endpoint.id,
                "event": endpoint.event,
                "eventId": accepted.id,
                "messageId": _bounded(sender_id),
                "duplicate": duplicate,
                "bytes": len(body),
                **_client(request),
            }
        },
    )
    answer = {"id": accepted.id, "event": endpoint.event, "duplicate": duplicate}
    if duplicate:
        return JSONResponse(answer, status_code=200)
    answer.update(timestamp=accepted.timestamp, deliveries=accepted.deliveries)
    return JSONResponse(answer, status_code=202)


# --- request pieces -----------------------------------------------------------------------------


async def read_capped(request: Request, cap: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed `cap` bytes (no more is read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


FORM = "application/x-www-form-urlencoded"


def parse_payload(body: bytes, content_type: str) -> Any:
    """The JSON payload; a form-encoded body (Slack's slash commands and interactivity) becomes an
    object of its fields, with a JSON `payload` field decoded. Raise ValueError when neither."""
    if not body.strip():
        raise ValueError("the body is empty")
    if content_type.partition(";")[0].strip().lower() == FORM:
        fields: dict[str, Any] = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        inner = fields.get("payload")
        if isinstance(inner, str) and inner.lstrip().startswith(("{", "[")):
            fields["payload"] = jsontext.loads(inner, nul=False)
        return fields
    try:
        # nesting capped and lone surrogates refused (UnfitJson is a ValueError); NUL characters
        # are the intake's to refuse, naming the field
        return jsontext.loads(body, nul=False)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno}, column {exc.colno}") from None


def message_id(scheme: Scheme | None, request: Request, payload: Any, body: bytes) -> str:
    """The sender's id of a message, the key that makes a repeat a duplicate.

    standard-webhooks: `webhook-id` (signed); github: `X-GitHub-Delivery` (kept on redelivery);
    stripe: the event's `id`; slack: the Events API's `event_id`. Otherwise, and for
    hmac-sha256 and unverified receipts, the SHA-256 of the body: identical bodies are one message.
    """
    headers = request.headers
    found: Any = None
    if scheme is Scheme.STANDARD_WEBHOOKS:
        found = headers.get("webhook-id")
    elif scheme is Scheme.GITHUB:
        found = headers.get("x-github-delivery")
    elif scheme is Scheme.STRIPE and isinstance(payload, dict):
        found = payload.get("id")
    elif scheme is Scheme.SLACK and isinstance(payload, dict):
        found = payload.get("event_id")
    if isinstance(found, str) and found.strip():
        return found.strip()
    return "sha256:" + hashlib.sha256(body).hexdigest()


_PRINTABLE_ID = re.compile(r"^[\x21-\x7e]+$")


def _bounded(sender_id: str) -> str:
    if len(sender_id) <= MAX_MESSAGE_ID_CHARS and _PRINTABLE_ID.match(sender_id):
        return sender_id
    return "sha256:" + hashlib.sha256(sender_id.encode()).hexdigest()


def dedup_key(integration_id: str, sender_id: str) -> str:
    """Unique per integration and sender message (the events table holds it, unique)."""
    return f"receive:{integration_id}:{_bounded(sender_id)}"


def _handshake(endpoint: Endpoint, request: Request, payload: Any) -> Response | None:
    """Set-up requests a platform sends to a new URL, answered and not emitted: Slack's
    url_verification (echo the challenge) and GitHub's ping."""
    scheme = endpoint.verifier.scheme if endpoint.verifier else None
    if scheme is Scheme.SLACK and isinstance(payload, dict) and payload.get("type") == "url_verification":
        log.info("inbound slack url_verification answered", extra={"fields": {"integration": endpoint.id}})
        return JSONResponse({"challenge": payload.get("challenge")})
    if scheme is Scheme.GITHUB and request.headers.get("x-github-event") == "ping":
        log.info("inbound github ping answered", extra={"fields": {"integration": endpoint.id}})
        return JSONResponse({"ok": True, "ping": True})
    return None


def _client(request: Request) -> dict[str, Any]:
    return {"client": request.client.host} if request.client else {}


def _refused(request: Request, endpoint: Endpoint, reason: str, status: int) -> None:
    log.warning(
        "inbound receipt refused",
        extra={"fields": {"integration": endpoint.id, "reason": reason, "status": status, **_client(request)}},
    )


# --- the access log -------------------------------------------------------------------------------

_SECRET_SEGMENT = re.compile(r"(/api/integrations/webhook/receive/)[^/?#\s]*")


def redact_receive_path(text: str) -> str:
    """The text with the path secret of any receipt URL in it replaced by ***."""
    return _SECRET_SEGMENT.sub(r"\1***", text)


class RedactReceiveSecret(logging.Filter):
    """uvicorn's access log prints each request's path; this keeps the path secret out of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record's message and arguments; never drop it."""
        if isinstance(record.args, tuple):
            record.args = tuple(redact_receive_path(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_receive_path(record.msg)
        return True


def install_access_log_redaction() -> None:
    """Idempotent: the daemon turns uvicorn's access log off, but an operator may turn it on."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactReceiveSecret) for f in access.filters):
        access.addFilter(RedactReceiveSecret())
