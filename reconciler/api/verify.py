"""Signature checks of inbound webhooks, one function per scheme, each to its published format.

- standard-webhooks: `webhook-signature: v1,<base64>` (a space-separated list) over
  `{webhook-id}.{webhook-timestamp}.{body}`; timestamp `webhook-timestamp`.
- github: `X-Hub-Signature-256: sha256=<hex>` over the body; no timestamp.
- stripe: `Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>...]` over `{t}.{body}`; timestamp `t`.
- slack: `X-Slack-Signature: v0=<hex>` over `v0:{X-Slack-Request-Timestamp}:{body}`; timestamp
  `X-Slack-Request-Timestamp`.
- hmac-sha256: `X-Signature` (or the configured header): `<hex>` or `sha256=<hex>` over the
  body; no timestamp.

Every MAC is HMAC-SHA256 and is compared in constant time. The signature is checked before the
timestamp, so only a sender holding the key learns how far its clock is off. Messages never
quote a presented signature or a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Scheme(StrEnum):
    """The signature schemes of `receive.verify.scheme`, each to its sender's published format."""

    STANDARD_WEBHOOKS = "standard-webhooks"
    GITHUB = "github"
    STRIPE = "stripe"
    SLACK = "slack"
    HMAC_SHA256 = "hmac-sha256"


class Refusal(StrEnum):
    """Why a receipt is refused; each is the problem type of a 401 answer."""

    MISSING_HEADER = "missing-signature-header"  # a header the scheme needs is absent
    MALFORMED_HEADER = "malformed-signature-header"  # present, but not in the scheme's format
    BAD_SIGNATURE = "bad-signature"  # no presented signature matches the body
    STALE = "stale-timestamp"  # signed longer ago than the tolerance
    FUTURE = "future-timestamp"  # signed further ahead than the tolerance


class VerificationFailed(Exception):
    """A receipt whose signature or timestamp does not verify: why (the refusal) and a detail safe to answer."""

    def __init__(self, refusal: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.refusal = refusal
        self.detail = detail


class UnusableSecret(ValueError):
    """The configured signing secret cannot be used by its scheme (a whsec_ that is not base64)."""


@dataclass(frozen=True)
class Verifier:
    """One integration's verification: its scheme, keys (several during a rotation) and tolerance."""

    scheme: Scheme
    keys: tuple[bytes, ...]
    tolerance_s: float
    header: str  # the signature header (lowercase)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        """Raise VerificationFailed unless the request is signed with one of the keys in time.

        `headers` must look names up case-insensitively (Starlette's Headers) or hold lowercase names.
        """
        CHECKS[self.scheme](self, headers, body, now)


WHSEC_PREFIX = "whsec_"
DEFAULT_HMAC_HEADER = "x-signature"
SCHEME_HEADERS = {
    Scheme.STANDARD_WEBHOOKS: "webhook-signature",
    Scheme.GITHUB: "x-hub-signature-256",
    Scheme.STRIPE: "stripe-signature",
    Scheme.SLACK: "x-slack-signature",
}


def make_verifier(scheme: str, secret: str, tolerance_s: float, header: str | None = None) -> Verifier:
    """The verifier of a scheme and its resolved secret; raise UnusableSecret if the secret is unusable.

    standard-webhooks secrets are `whsec_<base64>`; several separated by spaces are all accepted
    (a rotation). The other schemes key HMAC with the secret's text as it is (Stripe's `whsec_`
    secrets included, as Stripe does)."""
    kind = Scheme(scheme)
    if kind is Scheme.STANDARD_WEBHOOKS:
        keys = tuple(_decode_whsec(part) for part in secret.split())
    else:
        keys = (secret.encode(),) if secret else ()
    if not keys or not all(keys):
        raise UnusableSecret(f"the {kind} signing secret is empty")
    name = (header or DEFAULT_HMAC_HEADER) if kind is Scheme.HMAC_SHA256 else SCHEME_HEADERS[kind]
    return Verifier(kind, keys, tolerance_s, name.lower())


def _decode_whsec(text: str) -> bytes:
    encoded = text.removeprefix(WHSEC_PREFIX)
    try:
        # padding added as the official library does: an unpadded secret is still the secret
        key = base64.b64decode(encoded + "==", validate=False)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise UnusableSecret("the standard-webhooks signing secret is not whsec_ followed by base64")
    return key


def _mac(key: bytes, content: bytes) -> bytes:
    return hmac.new(key, content, hashlib.sha256).digest()


def _required(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise VerificationFailed(Refusal.MISSING_HEADER, f"the {name} header is missing")
    return value.strip()


def _matches(expected: list[bytes], presented: list[bytes]) -> bool:
    """Whether any presented MAC equals any expected one; every pair is compared in constant time."""
    found = False
    for mine in expected:
        for theirs in presented:
            found |= hmac.compare_digest(mine, theirs)
    return found


def _hex(value: str, header: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise VerificationFailed(Refusal.MALFORMED_HEADER, f"the {header} signature is not hexadecimal") from None


def _check_time(stamp: str, header: str, tolerance_s: float, now: float) -> None:
    try:
        seconds = float(stamp)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise VerificationFailed(Refusal.MALFORMED_HEADER, f"the {header} timestamp is not a number of seconds")
    if seconds < now - tolerance_s:
        raise VerificationFailed(
            Refusal.STALE,
            f"the {header} timestamp is {round(now - seconds)} s old, more than the "
            f"{round(tolerance_s)} s tolerated; a replayed or long-delayed request is refused",
        )
    if seconds > now + tolerance_s:
        raise VerificationFailed(
            Refusal.FUTURE,
            f"the {header} timestamp is {round(seconds - now)} s in the future, more than the "
            f"{round(tolerance_s)} s tolerated; check the sender's clock",
        )


def _no_match(header: str) -> VerificationFailed:
    return VerificationFailed(
        Refusal.BAD_SIGNATURE,
        f"the {header} signature does not match the body: the body was changed, or it was signed with another secret",
    )


# --- the schemes ----------------------------------------------------------------------------


def _standard_webhooks(verifier: Verifier, headers: Mapping[str, str], body: bytes, now: float) -> None:
    message_id = _required(headers, "webhook-id")
    stamp = _required(headers, "webhook-timestamp")
    signatures = _required(headers, "webhook-signature")
    presented = []
    for item in signatures.split():
        version, _, encoded = item.partition(",")
        if version != "v1":
            continue  # other versions (v1a: asymmetric) are not ours to check
        try:
            presented.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not presented:
        raise VerificationFailed(
            Refusal.MALFORMED_HEADER, "the webhook-signature header holds no v1,<base64> signature"
        )
    content = f"{message_id}.{stamp}.".encode() + body
    if not _matches([_mac(key, content) for key in verifier.keys], presented):
        raise _no_match("webhook-signature")
    _check_time(stamp, "webhook-timestamp", verifier.tolerance_s, now)


def _github(verifier: Verifier, headers: Mapping[str, str], body: bytes, now: float) -> None:
    value = _required(headers, verifier.header)
    algorithm, _, digest = value.partition("=")
    if algorithm != "sha256" or not digest:
        raise VerificationFailed(Refusal.MALFORMED_HEADER, "the X-Hub-Signature-256 header is not sha256=<hex>")
    if not _matches([_mac(key, body) for key in verifier.keys], [_hex(digest, "X-Hub-Signature-256")]):
        raise _no_match("X-Hub-Signature-256")


def _stripe(verifier: Verifier, headers: Mapping[str, str], body: bytes, now: float) -> None:
    value = _required(headers, verifier.header)
    stamps, presented = [], []
    for item in value.split(","):
        name, _, part = item.strip().partition("=")
        if name == "t":
            stamps.append(part)
        elif name == "v1":
            presented.append(_hex(part, "Stripe-Signature"))
    if len(stamps) != 1 or not presented:
        raise VerificationFailed(
            Refusal.MALFORMED_HEADER, "the Stripe-Signature header must hold t=<timestamp> and v1=<hex signature>"
        )
    content = f"{stamps[0]}.".encode() + body
    if not _matches([_mac(key, content) for key in verifier.keys], presented):
        raise _no_match("Stripe-Signature")
    _check_time(stamps[0], "Stripe-Signature", verifier.tolerance_s, now)


def _slack(verifier: Verifier, headers: Mapping[str, str], body: bytes, now: float) -> None:
    stamp = _required(headers, "x-slack-request-timestamp")
    value = _required(headers, verifier.header)
    version, _, digest = value.partition("=")
    if version != "v0" or not digest:
        raise VerificationFailed(Refusal.MALFORMED_HEADER, "the X-Slack-Signature header is not v0=<hex>")
    content = f"v0:{stamp}:".encode() + body
    if not _matches([_mac(key, content) for key in verifier.keys], [_hex(digest, "X-Slack-Signature")]):
        raise _no_match("X-Slack-Signature")
    _check_time(stamp, "X-Slack-Request-Timestamp", verifier.tolerance_s, now)


def _hmac_sha256(verifier: Verifier, headers: Mapping[str, str], body: bytes, now: float) -> None:
    value = _required(headers, verifier.header)
    digest = value[len("sha256=") :] if value.lower().startswith("sha256=") else value
    if not _matches([_mac(key, body) for key in verifier.keys], [_hex(digest, verifier.header)]):
        raise _no_match(verifier.header)


CHECKS = {
    Scheme.STANDARD_WEBHOOKS: _standard_webhooks,
    Scheme.GITHUB: _github,
    Scheme.STRIPE: _stripe,
    Scheme.SLACK: _slack,
    Scheme.HMAC_SHA256: _hmac_sha256,
}
