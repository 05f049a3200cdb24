"""Property-based tests of the two routes that take events from outside, over real HTTP on
loopback against the app on the real pipeline and SQLite store: whatever the body (deep
nesting, lone surrogates, huge numbers, NUL, odd types, bytes that are not JSON) and whatever
the headers (content types, a Content-Length that does not match, signature headers holding
junk, bytes that are not ASCII), the answer is 2xx or 4xx, never 5xx, and the daemon still
answers /healthz afterwards.

Requests are written to a socket by hand, so a header can hold any byte and a Content-Length
can lie. Example counts are bounded so the suite stays quick; a failure prints the smallest
request hypothesis found, and such a request is kept below as an explicit @example.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.api_server import SECRET, ThreadedApi
from tests.pipeline import integration, partner_receiver

EXAMPLES = 200
TRIGGER = "/api/integrations/webhooks/trigger"
RECEIVE = "/api/integrations/webhook/receive/"
PLAIN_PATH = "in_" + uuid.uuid4().hex + uuid.uuid4().hex  # receipts admitted by the path secret alone
SIGNED_PATH = "in_" + uuid.uuid4().hex + uuid.uuid4().hex  # receipts that must carry an HMAC signature
STANDARD_PATH = "in_" + uuid.uuid4().hex + uuid.uuid4().hex  # receipts signed as Standard Webhooks
HMAC_KEY = uuid.uuid4().hex
WHSEC_KEY = uuid.uuid4().bytes + uuid.uuid4().bytes
SOCKET_TIMEOUT = 20.0  # generous: the machine may be loaded; a request never waits this long otherwise
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _signed_receiver(iid: str, path_variable: str, scheme: str, key_variable: str) -> str:
    return integration(f"""
        id: {iid}
        name: {iid}
        type: webhook
        receive:
          secret: ${{env:{path_variable}}}
          event: custom.partner.signed
          verify:
            scheme: {scheme}
            secret: ${{env:{key_variable}}}
        """)


def _hook() -> str:
    """A sink subscribed to every event the trigger takes, with a filter that reads the data:
    routing evaluates it on whatever data an example holds. Its endpoint refuses connections."""
    return integration("""
        id: hook
        name: Hook
        type: webhook
        config:
          endpoint: http://127.0.0.1:9/hook
          allowPrivateNetwork: true
        retry: {schedule: [1s], maxAttempts: 1}
        webhooks:
          - events: ["user.*", "custom.*"]
            filter: 'data.name == "x" || data.tags.exists(t, t == "x")'
            template: {text: "{{ data.name }} {{ data.tags | join(',') }}"}
        """)


FILES = {
    "hook.yaml": _hook(),
    "partner.yaml": partner_receiver(),
    "signed.yaml": _signed_receiver("signed", "SIGNED_PATH", "hmac-sha256", "SIGNED_KEY"),
    "standard.yaml": _signed_receiver("standard", "STANDARD_PATH", "standard-webhooks", "STANDARD_KEY"),
}
ENVIRON = {
    "PARTNER_PATH": PLAIN_PATH,
    "SIGNED_PATH": SIGNED_PATH,
    "SIGNED_KEY": HMAC_KEY,
    "STANDARD_PATH": STANDARD_PATH,
    "STANDARD_KEY": "whsec_" + base64.b64encode(WHSEC_KEY).decode(),
}


class Errors(logging.Handler):
    """The records logged at ERROR or above while the app serves: an exception no handler took."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def taken(self) -> list[str]:
        seen, self.records = self.records, []
        return [f"{r.name}: {r.getMessage()} {r.exc_info[1]!r}" if r.exc_info else r.getMessage() for r in seen]


ERRORS = Errors()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedApi]:
    logging.getLogger().addHandler(ERRORS)
    try:
        running = ThreadedApi(tmp_path_factory.mktemp("fuzz-http"), FILES, ENVIRON)
        yield running
        running.close()
    finally:
        logging.getLogger().removeHandler(ERRORS)


# --- one request, written by hand ------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A request as bytes on the wire. `length`: "exact", "short" (declares fewer bytes than
    sent: the rest reads as a second request), "long" (declares more, then the client stops
    sending: the server sees the end of the stream), or "none" (no Content-Length at all)."""

    path: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    length: str = "exact"


def send(port: int, request: Raw) -> list[int]:
    """The status codes of every answer to `request` on one connection (none if the server
    closed it without answering, which only a request cut short may see)."""
    declared = {"exact": len(request.body), "short": len(request.body) // 2, "long": len(request.body) + 10}
    lines = [b"POST " + request.path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in request.headers]
    if request.length in declared:
        lines.append(b"Content-Length: " + str(declared[request.length]).encode())
    wire = b"\r\n".join(lines) + b"\r\n\r\n" + request.body
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as connection:
        connection.sendall(wire)
        if request.length in ("long", "none"):
            connection.shutdown(socket.SHUT_WR)  # nothing more is coming
        received = b""
        try:
            while chunk := connection.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # the server may close on the rest of a request it refused; what it answered counts
    return [int(code) for code in re.findall(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3}) ", received)]


def assert_never_5xx(api: ThreadedApi, request: Raw) -> None:
    """2xx or 4xx, and no exception that only a 500 handler took (logged as an error)."""
    ERRORS.taken()
    statuses = send(api.port, request)
    health = api.client.get("/healthz")  # answered after the request's handling is over
    assert health.status_code == 200, health.text
    assert ERRORS.taken() == [], request
    assert all(status < 500 for status in statuses), (statuses, request)
    assert all(200 <= status < 300 or 400 <= status < 500 for status in statuses), (statuses, request)
    if request.length in ("exact", "short"):
        assert statuses, f"no answer to a complete request: {request}"


# --- bodies ---------------------------------------------------------------------------------------

ANY_CHARACTER = st.characters(codec=None, categories=None)  # lone surrogates and NUL included
texts = st.one_of(
    st.text(ANY_CHARACTER, max_size=12),
    st.sampled_from(["", "\x00", "\ud800", "a\udfffb", "\ud83d\ude00", "x" * 300, "\u202e", "\ufeff"]),
)
numbers = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, texts),
    lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(texts, children, max_size=5)),
    max_leaves=25,
)
EVENT_NAMES = ["user.login", "user.registered", "custom.fuzz", "grade.published", "file.received", "nope", ""]
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "event": st.one_of(st.sampled_from(EVENT_NAMES), json_values),
        "type": st.one_of(st.sampled_from(EVENT_NAMES), json_values),
        "data": st.one_of(
            json_values,
            st.fixed_dictionaries({"name": texts, "tags": st.lists(texts, max_size=400)}),
            st.fixed_dictionaries({"userId": numbers, "email": texts, "name": texts}),
        ),
        "timestamp": st.one_of(texts, numbers, st.sampled_from(["2024-02-29T10:00:00Z", "9999-12-31T23:59:59Z"])),
        "id": json_values,
    },
)


def _json_text(value: object, ascii_only: bool) -> bytes:
    # a lone surrogate goes out as the escape \ud800 (ascii_only) or as the bytes UTF-8 forbids
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _huge_number(digits: int, sign: str, exponent: str) -> bytes:
    return f'{{"event":"custom.fuzz","data":{{"n":{sign}1{"0" * digits}{exponent}}}}}'.encode()


def _nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return (opener * depth + "1" + closer * depth).encode()


bodies = st.one_of(
    st.builds(_json_text, envelopes, st.booleans()),
    st.builds(_json_text, json_values, st.booleans()),
    st.builds(_huge_number, st.integers(0, 20_000), st.sampled_from(["", "-"]), st.sampled_from(["", "e99999", ".5"])),
    st.builds(_nested, st.integers(1, 3000), st.sampled_from(["[", '{"a":'])),
    st.binary(max_size=300),
    st.sampled_from(
        [b"", b"null", b"[]", b"{}", b"NaN", b"\x00", b"\xef\xbb\xbf{}", b"a=1&b=%FF", b"\xff\xfe{\x00}\x00"]
    ),
)

# --- headers --------------------------------------------------------------------------------------

CONTENT_TYPES = [
    b"application/json",
    b"application/json; charset=utf-16",
    b"application/json; charset=nonsense",
    b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=x",
    b"text/plain",
    b"application/problem+json",
    b"",
    b"\xff\xfe",
]
SIGNATURE_HEADERS = [
    b"webhook-signature",
    b"webhook-id",
    b"webhook-timestamp",
    b"x-signature",
    b"x-hub-signature-256",
    b"stripe-signature",
    b"x-slack-signature",
    b"x-slack-request-timestamp",
    b"x-admin-secret",
    b"authorization",
    b"content-encoding",
    b"transfer-encoding",
    b"expect",
]
JUNK_VALUES = [b"v1,", b"v1,!!!", b"sha256=zz", b"t=,v1=", b"99999999999999999999", b"-1", b"v0=", b"Bearer", b"gzip"]
header_values = st.one_of(
    st.sampled_from(JUNK_VALUES),
    st.text(ANY_CHARACTER, max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
).map(lambda value: value.replace(b"\r", b"").replace(b"\n", b""))
header_names = st.one_of(st.sampled_from(SIGNATURE_HEADERS), st.binary(min_size=1, max_size=12))
junk_headers = st.lists(st.tuples(header_names, header_values), max_size=4).map(
    lambda pairs: tuple((n.replace(b"\r", b"").replace(b"\n", b"") or b"x", v) for n, v in pairs)
)
content_types = st.one_of(st.none(), st.sampled_from(CONTENT_TYPES), header_values)
lengths = st.sampled_from(["exact", "exact", "exact", "short", "long", "none"])


def _with_content_type(kind: bytes | None, headers: tuple[tuple[bytes, bytes], ...]) -> tuple[tuple[bytes, bytes], ...]:
    return headers if kind is None else ((b"content-type", kind), *headers)


# --- signatures -----------------------------------------------------------------------------------


def hmac_signed(body: bytes) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"x-signature", hmac.new(HMAC_KEY.encode(), body, hashlib.sha256).hexdigest().encode()),)


def standard_signed(body: bytes) -> tuple[tuple[bytes, bytes], ...]:
    message_id, stamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    mac = hmac.new(WHSEC_KEY, f"{message_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    signature = b"v1," + base64.b64encode(mac)
    return (
        (b"webhook-id", message_id.encode()),
        (b"webhook-timestamp", stamp.encode()),
        (b"webhook-signature", signature),
    )


# --- the properties -------------------------------------------------------------------------------


@SETTINGS
@given(body=bodies, content_type=content_types, extra=junk_headers, length=lengths, admin=st.sampled_from(["x", "b"]))
# found by this test: a client that stops sending before its body is complete was an unhandled
# exception (a traceback in the log, and a 500 attempted), for any client to cause at will
@example(body=b"", content_type=None, extra=(), length="long", admin="x")
def test_trigger_answers_2xx_or_4xx_whatever_the_request(
    api: ThreadedApi,
    body: bytes,
    content_type: bytes | None,
    extra: tuple[tuple[bytes, bytes], ...],
    length: str,
    admin: str,
) -> None:
    credential = (
        (b"x-admin-secret", SECRET.encode()) if admin == "x" else (b"authorization", b"Bearer " + SECRET.encode())
    )
    headers = (credential, *_with_content_type(content_type, extra))
    assert_never_5xx(api, Raw(TRIGGER, headers, body, length))


@SETTINGS
@given(
    body=bodies,
    content_type=content_types,
    extra=junk_headers,
    length=lengths,
    target=st.sampled_from(["plain", "signed", "signed-valid", "standard", "standard-valid", "unknown"]),
)
@example(body=b"{}", content_type=None, extra=(), length="long", target="plain")  # as for the trigger
def test_receive_answers_2xx_or_4xx_whatever_the_request(
    api: ThreadedApi,
    body: bytes,
    content_type: bytes | None,
    extra: tuple[tuple[bytes, bytes], ...],
    length: str,
    target: str,
) -> None:
    paths = {"plain": PLAIN_PATH, "signed": SIGNED_PATH, "standard": STANDARD_PATH, "unknown": "in_" + "0" * 64}
    path = paths.get(target.removesuffix("-valid"), PLAIN_PATH)
    headers = _with_content_type(content_type, extra)
    if target == "signed-valid":
        headers = (*headers, *hmac_signed(body))
    elif target == "standard-valid":
        headers = (*headers, *standard_signed(body))
    assert_never_5xx(api, Raw(RECEIVE + path, headers, body, length))


def test_valid_requests_are_accepted(api: ThreadedApi) -> None:
    """The properties above would hold for a server that refuses everything: these requests,
    built the way the properties build theirs, must be accepted."""
    envelope = json.dumps({"event": "custom.fuzz", "data": {"name": "x", "tags": ["a"] * 400}}).encode()
    json_type = ((b"content-type", b"application/json"),)
    trigger = Raw(TRIGGER, ((b"x-admin-secret", SECRET.encode()), *json_type), envelope)
    assert send(api.port, trigger) == [202]
    payload = b'{"roster": [1, 2, 3]}'
    assert send(api.port, Raw(RECEIVE + PLAIN_PATH, json_type, payload)) == [202]
    assert send(api.port, Raw(RECEIVE + SIGNED_PATH, (*json_type, *hmac_signed(payload)), payload)) == [202]
    assert send(api.port, Raw(RECEIVE + STANDARD_PATH, (*json_type, *standard_signed(payload)), payload)) == [202]
    assert send(api.port, Raw(RECEIVE + SIGNED_PATH, json_type, payload)) == [401]  # the signature is required
