"""Inbound webhooks at POST /api/integrations/webhook/receive/{secret}, over real HTTP.

Every scheme is signed here to its published format (the standard-webhooks one with the
official library), and sent to the daemon's app served by uvicorn on loopback, on the real
pipeline and SQLite store: valid, tampered, wrong secret, missing header, stale, future and
replayed requests; then the path secret, size, body and state rules; then the bundled
inbound-partner.yaml end to end through a `reconciler run` process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import standardwebhooks

from reconciler.api.inbound import RedactReceiveSecret, redact_receive_path
from reconciler.store import schema as t
from tests.api_server import ThreadedApi
from tests.conftest import ROOT
from tests.peers import Peer
from tests.pipeline import integration

ADMIN = "inbound-tests-admin-secret"
PATH = "/api/integrations/webhook/receive/"


def secret() -> str:
    return "in_" + uuid.uuid4().hex + uuid.uuid4().hex[:8]


def whsec() -> str:
    return "whsec_" + base64.b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode()


# --- the senders: each scheme's published format ------------------------------------------------


@dataclass
class Sender:
    scheme: str
    path_secret: str
    signing_secret: str
    sign: Callable[[str, bytes, int, str], dict[str, str]]  # (key, body, timestamp, message id) -> headers
    signature_header: str
    timestamped: bool

    @property
    def integration(self) -> str:
        return f"in-{self.scheme}"

    def body(self, message_id: str, **extra: Any) -> bytes:
        return json.dumps({"id": message_id, "type": "roster.changed", "marker": uuid.uuid4().hex, **extra}).encode()

    def headers(self, body: bytes, *, at: float | None = None, key: str | None = None, message_id: str = "") -> dict:
        stamp = int(time.time() if at is None else at)
        return {"content-type": "application/json", **self.sign(key or self.signing_secret, body, stamp, message_id)}


def _hex(key: str, content: bytes) -> str:
    return hmac.new(key.encode(), content, hashlib.sha256).hexdigest()


def sign_standard(key: str, body: bytes, stamp: int, message_id: str) -> dict[str, str]:
    signature = standardwebhooks.Webhook(key).sign(message_id, datetime.fromtimestamp(stamp, UTC), body.decode())
    return {"webhook-id": message_id, "webhook-timestamp": str(stamp), "webhook-signature": signature}


def sign_github(key: str, body: bytes, stamp: int, message_id: str) -> dict[str, str]:
    return {
        "X-Hub-Signature-256": "sha256=" + _hex(key, body),
        "X-GitHub-Delivery": message_id,
        "X-GitHub-Event": "push",
    }


def sign_stripe(key: str, body: bytes, stamp: int, message_id: str) -> dict[str, str]:
    return {"Stripe-Signature": f"t={stamp},v1={_hex(key, f'{stamp}.'.encode() + body)}"}


def sign_slack(key: str, body: bytes, stamp: int, message_id: str) -> dict[str, str]:
    return {
        "X-Slack-Request-Timestamp": str(stamp),
        "X-Slack-Signature": "v0=" + _hex(key, f"v0:{stamp}:".encode() + body),
    }


def sign_hmac(key: str, body: bytes, stamp: int, message_id: str) -> dict[str, str]:
    return {"X-Signature": _hex(key, body)}


SENDERS = {
    "standard-webhooks": Sender("standard-webhooks", secret(), whsec(), sign_standard, "webhook-signature", True),
    "github": Sender("github", secret(), secret(), sign_github, "X-Hub-Signature-256", False),
    "stripe": Sender("stripe", secret(), "whsec_" + uuid.uuid4().hex, sign_stripe, "Stripe-Signature", True),
    "slack": Sender("slack", secret(), uuid.uuid4().hex, sign_slack, "X-Slack-Signature", True),
    "hmac-sha256": Sender("hmac-sha256", secret(), secret(), sign_hmac, "X-Signature", False),
}
SCHEMES = list(SENDERS)
TIMESTAMPED = [name for name, s in SENDERS.items() if s.timestamped]
OLD_WHSEC = whsec()  # standard-webhooks is configured with two secrets, as during a rotation
EXTRA = {name: secret() for name in ("unverified", "paused", "inactive", "custom-header", "typed", "twin", "broken")}
SHORT_SECRET = "short-secret"
CUSTOM_SIGNING = secret()


def env_name(name: str, what: str) -> str:
    return f"IN_{name.upper().replace('-', '_')}_{what}"


def receiver(iid: str, name: str, event: str, verify: str = "", active: bool = True) -> str:
    return integration(
        f"id: {iid}\nname: Inbound {name}\ntype: webhook\nactive: {'true' if active else 'false'}\n"
        f"receive:\n  secret: ${{env:{env_name(name, 'PATH')}}}\n  event: {event}\n{verify}"
    )


def verify_block(scheme: str, name: str, extra: str = "") -> str:
    lines = f"  verify:\n    scheme: {scheme}\n    secret: ${{env:{env_name(name, 'SIGNING')}}}\n"
    return lines + "".join(f"    {line}\n" for line in extra.splitlines() if line)


def config() -> tuple[dict[str, str], dict[str, str]]:
    files: dict[str, str] = {}
    environ: dict[str, str] = {}
    for name, sender in SENDERS.items():
        files[f"{sender.integration}.yaml"] = receiver(
            sender.integration, name, f"custom.inbound.{name.replace('-', '_')}", verify_block(name, name)
        )
        environ[env_name(name, "PATH")] = sender.path_secret
        environ[env_name(name, "SIGNING")] = sender.signing_secret
    environ[env_name("standard-webhooks", "SIGNING")] = f"{OLD_WHSEC} {SENDERS['standard-webhooks'].signing_secret}"
    hmac_verify = verify_block("hmac-sha256", "hmac-sha256")
    files["in-unverified.yaml"] = receiver("in-unverified", "unverified", "custom.inbound.plain")
    files["in-paused.yaml"] = receiver("in-paused", "paused", "custom.inbound.paused", hmac_verify)
    files["in-inactive.yaml"] = receiver("in-inactive", "inactive", "custom.inbound.off", hmac_verify, active=False)
    files["in-custom-header.yaml"] = receiver(
        "in-custom-header",
        "custom-header",
        "custom.inbound.custom",
        verify_block("hmac-sha256", "custom-header", "header: X-Partner-Signature"),
    )
    files["in-typed.yaml"] = receiver("in-typed", "typed", "partner.roster.updated")
    files["event-types.yaml"] = (ROOT / "integrations.d" / "event-types.yaml").read_text()
    # two references with the same value: neither integration may take receipts
    files["in-twin.yaml"] = receiver("in-twin", "twin", "custom.inbound.twin")
    files["in-twin-2.yaml"] = receiver("in-twin-2", "twin2", "custom.inbound.twin")
    # a short path secret never applies (tests/test_reconcile.py): its path is just unknown here
    files["in-broken.yaml"] = receiver(
        "in-broken", "broken", "custom.inbound.broken", verify_block("standard-webhooks", "broken")
    )
    for name, value in EXTRA.items():
        environ[env_name(name, "PATH")] = value
    environ[env_name("twin2", "PATH")] = EXTRA["twin"]
    environ[env_name("paused", "SIGNING")] = SENDERS["hmac-sha256"].signing_secret
    environ[env_name("inactive", "SIGNING")] = SENDERS["hmac-sha256"].signing_secret
    environ[env_name("custom-header", "SIGNING")] = CUSTOM_SIGNING
    environ[env_name("broken", "SIGNING")] = "whsec_!!not-base64!!"
    return files, environ


FILES, ENVIRON = config()
ALL_SECRETS = [value for value in ENVIRON.values() for value in value.split()]


# --- the daemon's app on loopback, on the real pipeline -----------------------------------------


class Server(ThreadedApi):
    """The app on the in-process pipeline with every receiver above, in a thread of its own."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, FILES, ENVIRON, ADMIN)

    def post(self, path_secret: str, body: bytes | Iterator[bytes], headers: dict[str, str]) -> httpx.Response:
        response = self.client.post(PATH + path_secret, content=body, headers=headers)
        exposed = response.text + json.dumps(dict(response.headers))
        leaked = [s for s in ALL_SECRETS if s in exposed]
        assert not leaked, "a secret appears in the response"
        return response

    def events(self, integration_id: str) -> list[dict[str, Any]]:
        with self.pipe.store.engine.connect() as connection:
            rows = connection.execute(
                sa.select(t.events).where(t.events.c.source == f"inbound:{integration_id}")
            ).mappings()
            return [dict(row) for row in rows]

    def with_marker(self, integration_id: str, body: bytes) -> list[dict[str, Any]]:
        marker = json.loads(body)["marker"]
        return [e for e in self.events(integration_id) if e["data"].get("marker") == marker]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("inbound"))
    yield running
    running.close()


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json"
    return str(response.json()["type"]).rsplit("/", 1)[-1]


# --- each scheme ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_signed_receipt_is_stored_and_emitted_as_the_configured_event(server, scheme):
    sender = SENDERS[scheme]
    message_id = f"msg_{uuid.uuid4().hex}"
    body = sender.body(message_id)
    response = server.post(sender.path_secret, body, sender.headers(body, message_id=message_id))
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["id"].startswith("evt_") and answer["duplicate"] is False
    assert answer["event"] == f"custom.inbound.{scheme.replace('-', '_')}"
    [stored] = server.with_marker(sender.integration, body)
    assert stored["id"] == answer["id"]
    assert stored["event"] == answer["event"]
    assert stored["data"] == json.loads(body)  # the verified payload is the event's data


@pytest.mark.parametrize("scheme", SCHEMES)
def test_tampered_body_is_refused(server, scheme):
    sender = SENDERS[scheme]
    message_id = f"msg_{uuid.uuid4().hex}"
    body = sender.body(message_id)
    tampered = body.replace(b'"roster.changed"', b'"roster.deleted"')
    response = server.post(sender.path_secret, tampered, sender.headers(body, message_id=message_id))
    assert response.status_code == 401
    assert problem_type(response) == "bad-signature"
    assert "does not match the body" in response.json()["detail"]
    assert server.with_marker(sender.integration, body) == []


@pytest.mark.parametrize("scheme", SCHEMES)
def test_signature_made_with_another_secret_is_refused(server, scheme):
    sender = SENDERS[scheme]
    message_id = f"msg_{uuid.uuid4().hex}"
    body = sender.body(message_id)
    other = whsec() if scheme == "standard-webhooks" else secret()
    response = server.post(sender.path_secret, body, sender.headers(body, key=other, message_id=message_id))
    assert response.status_code == 401
    assert problem_type(response) == "bad-signature"
    assert response.headers["www-authenticate"] == f'Signature scheme="{scheme}"'


@pytest.mark.parametrize("scheme", SCHEMES)
def test_missing_signature_header_is_refused(server, scheme):
    sender = SENDERS[scheme]
    message_id = f"msg_{uuid.uuid4().hex}"
    body = sender.body(message_id)
    headers = {k: v for k, v in sender.headers(body, message_id=message_id).items() if k != sender.signature_header}
    response = server.post(sender.path_secret, body, headers)
    assert response.status_code == 401
    assert problem_type(response) == "missing-signature-header"
    assert response.json()["detail"] == f"the {sender.signature_header.lower()} header is missing"


@pytest.mark.parametrize("scheme", TIMESTAMPED)
def test_stale_timestamp_is_refused(server, scheme):
    sender = SENDERS[scheme]
    message_id = f"msg_{uuid.uuid4().hex}"
    body = sender.body(message_id)
    response = server.post(sender.path_secret, body, sender.headers(body, at=time.time() - 400, message_id=message_id))
    assert response.status_code == 401
    assert problem_type(response) == "stale-timestamp"
    assert "300 s tolerated" in response.json()["detail"]


@pytest.mark.parametrize("scheme", TIMESTAMPED)
def test_future_timestamp_is_refused(server, scheme):
    sender = SENDERS[scheme]
    message_id = f"msg_{uuid.uuid4().hex}"
    body = sender.body(message_id)
    response = server.post(sender.path_secret, body, sender.headers(body, at=time.time() + 400, message_id=message_id))
    assert response.status_code == 401
    assert problem_type(response) == "future-timestamp"
    assert "in the future" in response.json()["detail"]


@pytest.mark.parametrize("scheme", TIMESTAMPED)
def test_clock_skew_within_the_tolerance_is_accepted(server, scheme):
    sender = SENDERS[scheme]
    for skew in (-200, 200):
        message_id = f"msg_{uuid.uuid4().hex}"
        body = sender.body(message_id)
        headers = sender.headers(body, at=time.time() + skew, message_id=message_id)
        assert server.post(sender.path_secret, body, headers).status_code == 202


@pytest.mark.parametrize("scheme", SCHEMES)
def test_replayed_message_is_acknowledged_without_a_second_event(server, scheme):
    sender = SENDERS[scheme]
    message_id = f"msg_{uuid.uuid4().hex}"
    body = sender.body(message_id)
    headers = sender.headers(body, message_id=message_id)
    first = server.post(sender.path_secret, body, headers)
    again = server.post(sender.path_secret, body, headers)
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json() == {"id": first.json()["id"], "event": first.json()["event"], "duplicate": True}
    assert len(server.with_marker(sender.integration, body)) == 1


def test_standard_webhooks_redelivery_with_a_fresh_signature_is_a_duplicate(server):
    """A sender's retry signs again with a new timestamp; its webhook-id makes it the same message."""
    sender = SENDERS["standard-webhooks"]
    message_id = f"msg_{uuid.uuid4().hex}"
    body = sender.body(message_id)
    first = server.post(sender.path_secret, body, sender.headers(body, at=time.time() - 30, message_id=message_id))
    retry = server.post(sender.path_secret, body, sender.headers(body, message_id=message_id))
    assert (first.status_code, retry.status_code) == (202, 200)
    assert retry.json()["id"] == first.json()["id"]


def test_standard_webhooks_accepts_either_secret_during_a_rotation(server):
    sender = SENDERS["standard-webhooks"]
    message_id = f"msg_{uuid.uuid4().hex}"
    body = sender.body(message_id)
    response = server.post(sender.path_secret, body, sender.headers(body, key=OLD_WHSEC, message_id=message_id))
    assert response.status_code == 202


def test_standard_webhooks_accepts_a_list_with_one_matching_signature(server):
    sender = SENDERS["standard-webhooks"]
    message_id = f"msg_{uuid.uuid4().hex}"
    body = sender.body(message_id)
    headers = sender.headers(body, message_id=message_id)
    stranger = sign_standard(whsec(), body, int(headers["webhook-timestamp"]), message_id)["webhook-signature"]
    headers["webhook-signature"] = f"v1a,bm90IG91cnM= {stranger} {headers['webhook-signature']}"
    assert server.post(sender.path_secret, body, headers).status_code == 202


def test_hmac_sha256_accepts_a_sha256_prefix_and_a_configured_header(server):
    sender = SENDERS["hmac-sha256"]
    body = sender.body("a")
    prefixed = {"X-Signature": "sha256=" + _hex(sender.signing_secret, body)}
    assert server.post(sender.path_secret, body, prefixed).status_code == 202
    body = sender.body("b")
    custom = {"X-Partner-Signature": _hex(CUSTOM_SIGNING, body)}
    assert server.post(EXTRA["custom-header"], body, custom).status_code == 202
    default_header = {"X-Signature": _hex(CUSTOM_SIGNING, body)}
    missing = server.post(EXTRA["custom-header"], body, default_header)
    assert missing.status_code == 401
    assert missing.json()["detail"] == "the x-partner-signature header is missing"


def test_malformed_signature_header_is_refused(server):
    sender = SENDERS["stripe"]
    body = sender.body("evt_malformed")
    response = server.post(sender.path_secret, body, {"Stripe-Signature": "v1=abc"})
    assert response.status_code == 401
    assert problem_type(response) == "malformed-signature-header"


def test_github_ping_is_answered_and_not_emitted(server):
    sender = SENDERS["github"]
    delivery = str(uuid.uuid4())
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1, "marker": uuid.uuid4().hex}).encode()
    headers = {**sender.headers(body, message_id=delivery), "X-GitHub-Event": "ping"}
    response = server.post(sender.path_secret, body, headers)
    assert response.status_code == 200 and response.json()["ping"] is True
    assert server.with_marker(sender.integration, body) == []


def test_slack_url_verification_echoes_the_challenge(server):
    sender = SENDERS["slack"]
    challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    body = json.dumps({"type": "url_verification", "challenge": challenge, "token": "x"}).encode()
    response = server.post(sender.path_secret, body, sender.headers(body))
    assert response.status_code == 200
    assert response.json() == {"challenge": challenge}


def test_slack_form_encoded_body_becomes_an_object_of_its_fields(server):
    sender = SENDERS["slack"]
    marker = uuid.uuid4().hex
    body = f"command=%2Froster&text=IT2024001&marker={marker}&payload=%7B%22a%22%3A1%7D".encode()
    headers = {**sender.headers(body), "content-type": "application/x-www-form-urlencoded"}
    response = server.post(sender.path_secret, body, headers)
    assert response.status_code == 202, response.text
    [stored] = [e for e in server.events(sender.integration) if e["data"].get("marker") == marker]
    assert stored["data"] == {"command": "/roster", "text": "IT2024001", "marker": marker, "payload": {"a": 1}}


# --- the path secret, the body, the integration's state --------------------------------------


def test_unknown_path_secret_answers_404_and_reveals_nothing(server):
    answers = [
        server.post(path, b"{}", {"content-type": "application/json"})
        for path in (secret(), "x", EXTRA["twin"], SHORT_SECRET, SENDERS["github"].path_secret[:-1])
    ]
    assert {a.status_code for a in answers} == {404}
    assert len({a.text for a in answers}) == 1  # unknown, duplicated and too short look the same
    assert answers[0].json()["detail"] == "there is no inbound webhook at this address"


def test_receipt_needs_post(server):
    response = server.client.get(PATH + SENDERS["github"].path_secret)
    assert response.status_code == 405
    assert problem_type(response) == "about:blank"


def test_oversized_body_is_refused_with_413(server):
    sender = SENDERS["hmac-sha256"]
    big = b'{"pad": "' + b"x" * (600 * 1024) + b'"}'
    response = server.post(sender.path_secret, big, sender.headers(big))
    assert response.status_code == 413
    assert problem_type(response) == "payload-too-large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap applies while reading
        for _ in range(40):
            yield b"x" * (16 * 1024)

    streamed = server.post(sender.path_secret, chunks(), {"X-Signature": "00"})
    assert streamed.status_code == 413


def test_body_that_is_not_json_is_refused_with_400(server):
    body = b"<xml>roster</xml>"
    response = server.post(SENDERS["hmac-sha256"].path_secret, body, SENDERS["hmac-sha256"].headers(body))
    assert response.status_code == 400
    assert problem_type(response) == "bad-body"
    assert response.json()["detail"].startswith("the body is not JSON: Expecting value at line 1, column 1")


def test_payload_that_is_not_an_object_is_refused_with_422(server):
    body = b'[{"studentId": "IT2024001"}]'
    response = server.post(SENDERS["hmac-sha256"].path_secret, body, SENDERS["hmac-sha256"].headers(body))
    assert response.status_code == 422
    assert response.json()["errors"] == [{"pointer": "/data", "message": "data must be a JSON object"}]


def test_payload_is_checked_against_its_event_type(server):
    body = json.dumps({"partnerId": "acme-college", "students": [{"status": "enrolled"}]}).encode()
    response = server.post(EXTRA["typed"], body, {"content-type": "application/json"})
    assert response.status_code == 422
    assert problem_type(response) == "event-refused"
    assert response.json()["errors"] == [
        {"pointer": "/data/students/0", "message": "'studentId' is a required property"}
    ]
    good = json.dumps({"partnerId": "acme-college", "students": [{"studentId": "IT2024001"}]}).encode()
    assert server.post(EXTRA["typed"], good, {"content-type": "application/json"}).status_code == 202


def test_receive_without_verify_is_admitted_by_the_path_secret(server):
    body = json.dumps({"marker": uuid.uuid4().hex}).encode()
    first = server.post(EXTRA["unverified"], body, {"content-type": "application/json"})
    again = server.post(EXTRA["unverified"], body, {"content-type": "application/json"})
    assert (first.status_code, again.status_code) == (202, 200)  # identical bodies are one message


def test_suspended_integration_answers_503_until_resumed(server):
    sender = SENDERS["hmac-sha256"]
    admin = {"x-admin-secret": ADMIN}
    body = sender.body("paused")
    assert server.client.post("/api/integrations/in-paused/deactivate", json={"reason": "t"}, headers=admin).is_success
    try:
        paused = server.post(EXTRA["paused"], body, sender.headers(body))
        assert paused.status_code == 503
        assert paused.headers["retry-after"] == "60"
        assert problem_type(paused) == "paused"
        assert server.with_marker("in-paused", body) == []
        unsigned = server.post(EXTRA["paused"], body, {})
        assert unsigned.status_code == 401  # only a sender holding the key learns about the pause
    finally:
        assert server.client.post("/api/integrations/in-paused/activate", json={}, headers=admin).is_success
    assert server.post(EXTRA["paused"], body, sender.headers(body)).status_code == 202


def test_integration_declared_inactive_answers_503(server):
    sender = SENDERS["hmac-sha256"]
    body = sender.body("inactive")
    response = server.post(EXTRA["inactive"], body, sender.headers(body))
    assert response.status_code == 503
    assert problem_type(response) == "paused"


def test_unusable_signing_secret_answers_503_and_tells_the_log(server, caplog):
    caplog.set_level(logging.INFO, logger="reconciler.inbound")
    body = SENDERS["standard-webhooks"].body("msg_broken")
    response = server.post(EXTRA["broken"], body, sign_standard(whsec(), body, int(time.time()), "msg_broken"))
    assert response.status_code == 503
    assert problem_type(response) == "misconfigured"
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "reconciler.inbound"]
    assert record.fields == {  # type: ignore[attr-defined]
        "integration": "in-broken",
        "reason": "the standard-webhooks signing secret is not whsec_ followed by base64",
    }
    assert server.events("in-broken") == []


def test_access_log_shows_the_receipt_path_without_its_secret(server, caplog):
    sender = SENDERS["github"]
    caplog.set_level(logging.INFO)
    body = sender.body(str(uuid.uuid4()))
    server.post(sender.path_secret, body, sender.headers(body, message_id=str(uuid.uuid4())))
    server.post(sender.path_secret, body, {})
    deadline = time.monotonic() + 20
    while not [r for r in caplog.records if r.name == "uvicorn.access"] and time.monotonic() < deadline:
        time.sleep(0.02)
    access = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any(f"POST {PATH}*** HTTP/1.1" in line for line in access), access
    daemon_side = [r for r in caplog.records if r.name != "httpx"]  # httpx: this test's own client
    everything = "\n".join(r.getMessage() + json.dumps(getattr(r, "fields", {})) for r in daemon_side)
    assert "inbound receipt" in everything
    assert not [s for s in ALL_SECRETS if s in everything]
    signature = sender.headers(body)["X-Hub-Signature-256"].removeprefix("sha256=")
    assert signature not in everything


def test_redaction_covers_query_strings_and_log_arguments():
    assert redact_receive_path(f"{PATH}abc?x=1") == f"{PATH}***?x=1"
    arguments = ("1.2.3.4", "POST", PATH + "s")
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s"', arguments, None)
    RedactReceiveSecret().filter(record)
    assert record.getMessage() == f'1.2.3.4 - "POST {PATH}***"'


# --- the bundled inbound-partner.yaml, end to end -----------------------------------------------


def test_bundled_partner_webhook_end_to_end(tmp_path):
    from tests.test_daemon import Daemon

    peer = Peer()
    try:
        config = tmp_path / "integrations.d"
        config.mkdir()
        for name in ("inbound-partner.yaml", "event-types.yaml"):
            shutil.copy(ROOT / "integrations.d" / name, config / name)
        (config / "roster-sink.yaml").write_text(
            integration(f"""
                name: Roster sink
                type: webhook
                config:
                  endpoint: {peer.url}/roster
                  allowPrivateNetwork: true
                webhooks:
                  - events: [partner.roster.updated]
                """)
        )
        path_secret, signing = secret(), whsec()
        env = {"ADMIN_SECRET": ADMIN, "PARTNER_INBOUND_SECRET": path_secret, "PARTNER_SIGNING_SECRET": signing}
        daemon = Daemon(tmp_path, env=env)
        try:
            daemon.wait_ready()
            payload = {"partnerId": "acme-college", "students": [{"studentId": "IT2024001", "status": "enrolled"}]}
            body = json.dumps(payload).encode()
            message_id = f"msg_{uuid.uuid4().hex}"
            headers = {"content-type": "application/json", **sign_standard(signing, body, int(time.time()), message_id)}
            answer = httpx.post(f"{daemon.url}{PATH}{path_secret}", content=body, headers=headers, timeout=10)
            assert answer.status_code == 202, answer.text
            assert answer.json()["deliveries"] == 1
            deadline = time.monotonic() + 20
            while not peer.requests("/roster"):
                assert time.monotonic() < deadline, "the receipt was not delivered"
                time.sleep(0.05)
            [delivered] = peer.requests("/roster")
            envelope = delivered.json()
            assert envelope["id"] == answer.json()["id"]
            assert envelope["event"] == "partner.roster.updated"
            assert envelope["data"] == payload
            replay = httpx.post(f"{daemon.url}{PATH}{path_secret}", content=body, headers=headers, timeout=10)
            assert replay.status_code == 200 and replay.json()["duplicate"] is True
        finally:
            code, log = daemon.stop()
        assert code == 0
        assert '"message": "inbound receipt"' in log
        assert path_secret not in log and signing not in log and headers["webhook-signature"][3:] not in log
    finally:
        peer.close()
