"""Routing: which integrations an event goes to.

Built from the applied integrations and rebuilt when they change; filters are compiled once
per applied generation. An event reaches an integration at most once: its subscriptions are
alternatives, and the first that matches (patterns and filter) decides the template.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.events.filters import CompiledFilter, FilterError, compile_filter
from reconciler.events.patterns import matches
from reconciler.registry import AppliedIntegration

log = logging.getLogger("reconciler.routing")


@dataclass(frozen=True)
class _Subscription:
    integration_id: str
    index: int
    patterns: tuple[str, ...]
    filter: CompiledFilter | None


@dataclass(frozen=True)
class Match:
    """An event's match: the integration, and the subscription that decides its template."""

    integration_id: str
    subscription: int


class Router:
    """The subscriptions of the applied integrations, filters compiled: which integrations an event goes to."""

    def __init__(self, applied: Mapping[str, AppliedIntegration]) -> None:
        self._subscriptions: list[_Subscription] = []
        for integration_id in sorted(applied):
            spec = applied[integration_id].spec
            if not spec.active:
                continue  # declared, but not delivering: nothing is queued for it
            for index, subscription in enumerate(spec.webhooks):
                compiled = compile_filter(subscription.filter) if subscription.filter else None
                self._subscriptions.append(_Subscription(integration_id, index, tuple(subscription.events), compiled))

    def route(self, envelope: dict[str, Any]) -> list[Match]:
        event = envelope["event"]
        found: dict[str, Match] = {}
        for subscription in self._subscriptions:
            if subscription.integration_id in found:
                continue
            if not any(matches(p, event) for p in subscription.patterns):
                continue
            if subscription.filter is not None and not self._passes(subscription, envelope):
                continue
            found[subscription.integration_id] = Match(subscription.integration_id, subscription.index)
        return list(found.values())

    @staticmethod
    def _passes(subscription: _Subscription, envelope: dict[str, Any]) -> bool:
        assert subscription.filter is not None
        try:
            return subscription.filter.evaluate(envelope)
        except FilterError as exc:
            log.warning(
                "filter failed; the event does not match",
                extra={
                    "fields": {
                        "integration": subscription.integration_id,
                        "subscription": subscription.index,
                        "error": str(exc),
                    }
                },
            )
            return False
