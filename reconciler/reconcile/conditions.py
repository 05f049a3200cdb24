"""Status as typed conditions, in the Kubernetes style Flux and Argo CD users know.

An integration carries up to four conditions (one never applied has no Degraded). A
condition's `lastTransitionTime` moves only when its status flips, so "since when" is always
answerable. Every reason is a constant here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from reconciler.events.envelope import now_timestamp


class ConditionType(StrEnum):
    """The condition types of an integration's status."""

    READY = "Ready"  # applied and delivering
    SYNCED = "Synced"  # the running version is the one declared in git
    SUSPENDED = "Suspended"  # an operator suspended it at runtime (drift from git)
    DEGRADED = "Degraded"  # something stands between its events and their target now (delivery/health.py)


class Status(StrEnum):
    """A condition's status, as Kubernetes spells it."""

    TRUE = "True"
    FALSE = "False"


class Reason:
    """Every condition reason: one constant each, with a one-line comment on what it means."""

    APPLIED = "Applied"  # the declared version is applied
    UP_TO_DATE = "UpToDate"  # the running version matches the file
    INACTIVE = "Inactive"  # declared with active: false
    VALIDATION_FAILED = "ValidationFailed"  # the file's version does not validate; the last good one runs
    NEVER_APPLIED = "NeverApplied"  # no version of this integration has validated yet
    SECRET_MISSING = "SecretMissing"  # a secret reference does not resolve
    SUSPENDED_BY_OPERATOR = "SuspendedByOperator"  # suspended through the API or CLI
    NOT_SUSPENDED = "NotSuspended"  # no runtime override
    REMOVING = "Removing"  # its file is gone; in-flight deliveries are finishing
    HEALTHY = "Healthy"  # no delivery trouble
    # Degraded's reasons, measured by the health monitor (reconciler/delivery/health.py)
    CIRCUIT_OPEN = "CircuitOpen"  # the endpoint's circuit breaker is open
    PAUSED = "Paused"  # the endpoint asked to wait with Retry-After
    DEAD_LETTERS = "DeadLetters"  # deliveries ran out of attempts in the window
    DELIVERIES_FAILING = "DeliveriesFailing"  # the latest send and most sends in the window failed
    SYNC_FAILING = "SyncFailing"  # the latest scheduled sync fetch failed
    FILE_REFUSED = "FileRefused"  # its file no longer validates; an older version runs
    OWN_STORE = "OwnStore"  # a database integration's URL (resolved) is the daemon's own store


_ORDER = tuple(t.value for t in ConditionType)


def set_condition(
    conditions: list[dict[str, Any]],
    type_: ConditionType,
    status: Status,
    reason: str,
    message: str,
    generation: int,
) -> list[dict[str, Any]]:
    """A new list with the condition set; the transition time is kept when the status holds."""
    previous = next((c for c in conditions if c.get("type") == type_), None)
    since = previous["lastTransitionTime"] if previous and previous.get("status") == status else now_timestamp()
    updated = {
        "type": type_.value,
        "status": status.value,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    }
    by_type = {c.get("type"): c for c in conditions}
    by_type[type_.value] = updated
    return [by_type[t] for t in _ORDER if t in by_type]


def condition(conditions: list[dict[str, Any]], type_: ConditionType) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def same_state(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Equal but for transition times: a pass that changes nothing writes nothing."""

    def strip(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted((c["type"], c["status"], c["reason"], c["message"], c["observedGeneration"]) for c in items)

    return strip(a) == strip(b)
