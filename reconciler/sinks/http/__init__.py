"""The HTTP sink (`api` and `webhook` integrations) and what only outbound HTTP needs:
authentication, Standard Webhooks signing, Retry-After parsing."""

from __future__ import annotations

from reconciler.sinks.http.sink import HttpSink

__all__ = ["HttpSink"]
