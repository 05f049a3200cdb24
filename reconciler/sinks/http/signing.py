"""Standard Webhooks signatures on outbound requests.

`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed with the base64
part of a `whsec_` secret. During a rotation the secret reference may hold several secrets
separated by spaces; each signs, and the receiver accepts any.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

PREFIX = "whsec_"


class SigningError(ValueError):
    """A signingSecret that cannot sign: empty, or not base64 after its optional `whsec_` prefix."""


def decode_secrets(value: str) -> list[bytes]:
    keys = []
    for part in value.split():
        encoded = part[len(PREFIX) :] if part.startswith(PREFIX) else part
        try:
            keys.append(base64.b64decode(encoded, validate=True))
        except ValueError:
            raise SigningError("signingSecret is not a whsec_ secret (base64 after the prefix)") from None
    if not keys:
        raise SigningError("signingSecret is empty")
    return keys


def signature_headers(keys: list[bytes], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    signed = f"{message_id}.{timestamp}.".encode() + body
    signatures = " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in keys
    )
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "webhook-signature": signatures}
