"""Inbound receipt (`receive:` of `type: webhook`): the secret URL a partner posts to, and
how its requests are verified.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from reconciler.events.patterns import EVENT_NAME
from reconciler.manifests.models.common import (
    HEADER_NAME,
    Credential,
    Duration,
    Strict,
    bounded_duration,
    check_credential,
)

MAX_TOLERANCE_SECONDS = 3600.0


class VerifyConfig(Strict):
    """How an inbound request proves it comes from the partner."""

    scheme: Literal["standard-webhooks", "github", "stripe", "slack", "hmac-sha256"]
    secret: Credential
    tolerance: Duration = "5m"
    header: str | None = Field(
        None, pattern=HEADER_NAME, description="hmac-sha256 only: the signature header (default X-Signature)"
    )

    _check_secret = field_validator("secret", mode="before")(check_credential)

    @field_validator("tolerance")
    @classmethod
    def _tolerance(cls, value: str) -> str:
        return bounded_duration(value, "tolerance", 1, MAX_TOLERANCE_SECONDS)


class Receive(Strict):
    """Inbound receipt at POST /api/integrations/webhook/receive/{secret}."""

    secret: Credential
    verify: VerifyConfig | None = None
    event: str = Field(pattern=EVENT_NAME.pattern, description="event type emitted for each receipt")

    _check_secret = field_validator("secret", mode="before")(check_credential)
