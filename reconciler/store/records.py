"""The outbox's records: what intake commits, what a claim hands out, what delivery reports.

Plain frozen dataclasses that every stage may import (the store sits below them all).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NewEvent:
    """An event as the intake commits it (its data serialised once)."""

    id: str
    event: str
    timestamp: str
    data: dict[str, Any]
    source: str
    dedup_key: str | None = None
    data_json: str | None = None  # the data serialized once by the intake, stored as is


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event already stored under the dedup key (or id) of one being committed: what a
    repeat is answered with, and what its body is compared to."""

    id: str
    event: str
    timestamp: str
    data: Any
    deliveries: int  # its deliveries still kept


@dataclass(frozen=True)
class NewDelivery:
    """A delivery as the intake commits it: the event, the integration, the subscription, when due."""

    id: str
    event_id: str
    integration_id: str
    subscription: int
    next_attempt_at: float
    # set when the accepting process takes the delivery at once (no claim query): see Intake
    lease_owner: str | None = None
    lease_expires_at: float | None = None


@dataclass
class DueDelivery:
    """A claimed delivery with its envelope, as a lane sends it."""

    id: str
    event_id: str
    integration_id: str
    subscription: int
    attempts: int
    batch_id: str | None
    created_at: float
    parsed: dict[str, Any] | None = None  # the envelope, when it came as a dict
    body: bytes | None = None  # the envelope as compact JSON, when it came as text

    @property
    def envelope(self) -> dict[str, Any]:
        """`{"id", "event", "timestamp", "data"}`, parsed from the body only when something
        needs the fields (a template, a record sink): a plain send posts the body as it is."""
        if self.parsed is None:
            self.parsed = json.loads(self.body) if self.body else {}
        return self.parsed

    @envelope.setter
    def envelope(self, value: dict[str, Any]) -> None:
        self.parsed = value


def storable(text: str | None) -> str | None:
    """Text the store can hold: PostgreSQL text cannot hold NUL, and a partner's answer can."""
    return text.replace("\x00", "\ufffd") if text and "\x00" in text else text


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One try, as the log shows it: of a delivery, or of a test send (`test:<event>`), a sync
    (`sync:<integration>`) or a source listing (`source:<integration>`). Text from outside
    (the response excerpt, the error) is made storable on construction, whoever builds it."""

    delivery_id: str
    integration_id: str
    at: float
    attempt: int
    trigger: str  # scheduled | test | sync | replay ...
    outcome: str  # delivered | failed | dead | gone | takeover (a dead replica's lease cleared)
    batch_id: str | None = None
    status_code: int | None = None
    latency_ms: float | None = None
    response_excerpt: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "response_excerpt", storable(self.response_excerpt))
        object.__setattr__(self, "error", storable(self.error))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one delivery: its new state, and the attempt row (None: not tried,
    as when an open circuit breaker, a suspension, a removal or a shutdown gives it back)."""

    delivery_id: str
    status: str  # delivered | failed | dead | pending
    attempts: int
    next_attempt_at: float
    error: str | None = None
    attempt: Attempt | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "error", storable(self.error))


@dataclass(frozen=True, slots=True, kw_only=True)
class LastAttempt:
    """The latest attempt of one kind (a send, a sync fetch) of an integration in a window."""

    outcome: str  # delivered | failed | dead | gone | skipped
    at: float
    status_code: int | None
    error: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RecentOutcomes:
    """What an integration's attempts measured in a window: sends (scheduled and replayed) by
    outcome, the latest send and the latest sync fetch, dead letters not replayed; what the
    Degraded condition is made of."""

    sends: dict[str, int]
    last_send: LastAttempt | None
    last_sync: LastAttempt | None
    dead_letters: int = 0  # deliveries that went dead in the window and have not been replayed

    @property
    def failed_share(self) -> float:
        tried = sum(self.sends.values())
        return 0.0 if not tried else 1 - self.sends.get("delivered", 0) / tried
