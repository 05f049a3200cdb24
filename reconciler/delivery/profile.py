"""How one applied version of an integration is delivered, worked out once per version.

The retry policy, the circuit breaker's endpoint key, the timeout, pacing, batching and
templates all follow from the spec alone, so they are computed when a version is first
delivered and dropped when that version is no longer applied (a new generation, a removal).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from reconciler.delivery.retry import RetryPolicy
from reconciler.events.templates import CompiledTemplate, TemplateProblem, compile_template, render_context
from reconciler.manifests.durations import parse_duration
from reconciler.manifests.models import HttpConfig
from reconciler.registry import AppliedIntegration

DEFAULT_CONCURRENCY = 16  # requests in flight per integration without rateLimit.concurrency
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # one, not one per body


class DeliveryProfile:
    """The delivery settings of one applied version (`id`, `generation`) of an integration."""

    def __init__(self, integration: AppliedIntegration) -> None:
        spec = integration.spec
        config = spec.config
        http = config if isinstance(config, HttpConfig) else None
        limit = http.rateLimit if http is not None else None
        self.id = integration.id
        self.generation = integration.generation
        self.spec = spec
        self.policy = RetryPolicy.from_spec(
            spec.retry.schedule if spec.retry else None, spec.retry.maxAttempts if spec.retry else None
        )
        self.timeout_seconds = parse_duration(config.timeout)
        self.batch_size = config.batchSize
        self.batch_delay_ms = config.batchDelay
        self.per_second = limit.perSecond if limit is not None else None
        self.concurrency = (limit.concurrency if limit is not None else None) or DEFAULT_CONCURRENCY
        endpoint = http.endpoint if http is not None else None
        self.breaker_key = _endpoint_key(endpoint, integration.id)
        self.pause_key = _pause_key(endpoint, integration.id)
        self._default_template = http.template if http is not None else None
        self._templates: dict[int, CompiledTemplate | None] = {}

    @property
    def batching(self) -> bool:
        return self.batch_size > 1

    @property
    def takes_handoff(self) -> bool:
        """Whether new deliveries may go straight to a lane from the intake's commit: not when
        they are paced, batched or synced on a schedule (the claim query meters those)."""
        return self.per_second is None and not self.batching and self.spec.syncFrequency <= 0

    def template(self, subscription: int) -> CompiledTemplate | None:
        """The subscription's template, else the integration's, compiled on first use."""
        if subscription not in self._templates:
            source = None
            if 0 <= subscription < len(self.spec.webhooks):
                source = self.spec.webhooks[subscription].template
            if source is None:
                source = self._default_template
            self._templates[subscription] = compile_template(source) if source is not None else None
        return self._templates[subscription]

    def render(
        self, envelopes: list[dict[str, Any]], subscription: int, batch_id: str | None
    ) -> tuple[bytes, str | None]:
        """The request body for these envelopes: the subscription's template, else the envelope
        (a list of them when the integration batches); or why the template failed."""
        try:
            template = self.template(subscription)
            if template is None:
                payload: Any = envelopes if self.batching else envelopes[0]
            else:
                context = render_context(envelopes, {"id": self.id, "name": self.spec.name}, batch_id)
                payload = template.render(context)
            return _ENCODER.encode(payload).encode(), None
        except (TemplateProblem, TypeError, ValueError) as exc:
            return b"", f"the template failed: {getattr(exc, 'message', exc)}"


class Profiles:
    """One `DeliveryProfile` per applied version, kept while that version is applied."""

    def __init__(self) -> None:
        self._by_version: dict[tuple[str, int], DeliveryProfile] = {}

    def of(self, integration: AppliedIntegration) -> DeliveryProfile:
        key = (integration.id, integration.generation)
        profile = self._by_version.get(key)
        if profile is None:
            profile = self._by_version[key] = DeliveryProfile(integration)
        return profile

    def keep_only(self, applied: Mapping[str, AppliedIntegration]) -> None:
        """Drop the profiles of versions that are no longer applied."""
        current = {(a.id, a.generation) for a in applied.values()}
        self._by_version = {k: v for k, v in self._by_version.items() if k in current}


def _pause_key(endpoint: str | None, integration_id: str) -> str:
    """What a Retry-After pause holds: the endpoint's scheme, host, port and path (not its
    query). A partner's 429 on one path says nothing about its other paths; integrations that
    post to the same URL wait together. Credentials in the URL are left out: the key is shared
    through the store."""
    if not endpoint or "${" in endpoint:
        return integration_id
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{_host(parts.netloc)}{parts.path}" if parts.netloc else integration_id


def _endpoint_key(endpoint: str | None, integration_id: str) -> str:
    """The circuit breaker's key: scheme and host of the endpoint, shared by every integration
    that posts there; an endpoint hidden behind a secret reference keys by the integration."""
    if not endpoint or "${" in endpoint:
        return integration_id
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{_host(parts.netloc)}" if parts.netloc else integration_id


def _host(netloc: str) -> str:
    """Host and port, without any user and password before them."""
    return netloc.rpartition("@")[2]
