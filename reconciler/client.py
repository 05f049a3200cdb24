"""A client of the daemon's trigger route for Python code (sync and async), as the course
system's own code would use it; `reconciler trigger` uses it too.

    from reconciler.client import Client

    with Client("http://127.0.0.1:8080", admin_secret) as client:
        accepted = client.trigger("user.registered", {"userId": 7, "email": "ada@example.edu"})

`trigger` sends an `Idempotency-Key` (one of its own per call unless given), so it can retry
safely: a connection that drops after the daemon stored the event, a 503 while the store fails
over, a 429 or a 502/504 from a proxy are tried again with exponential backoff and full
jitter, a `Retry-After` honoured, up to `retries` times; the daemon answers a repeat with the
event it stored first. Any other 4xx is not retried: it raises `TriggerRefused` (with the
problem document's `errors` or `conflicts`) or `AuthError`.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

TRIGGER_PATH = "/api/integrations/webhooks/trigger"
RETRIED_STATUSES = frozenset({429, 502, 503, 504})
DEFAULT_RETRIES = 5
DEFAULT_TIMEOUT_SECONDS = 10.0
BACKOFF_BASE_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 10.0
RETRY_AFTER_MAX_SECONDS = 60.0  # a longer wait is the caller's decision, not a library's


class ClientError(Exception):
    """The daemon could not be asked, or refused; `status` is its HTTP status when it answered."""

    def __init__(self, message: str, status: int | None = None, problem: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problem = problem or {}


class AuthError(ClientError):
    """401: the admin secret is missing or wrong."""


class TriggerRefused(ClientError):
    """A 4xx for the event itself: `errors` (each with a JSON pointer) for an event that does not
    match its type, `conflicts` for an idempotency key used before with another body."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.problem.get("errors") or [])

    @property
    def conflicts(self) -> list[str]:
        return list(self.problem.get("conflicts") or [])


class Unavailable(ClientError):
    """Still unavailable after every retry: the last answer's status, or the network error."""


@dataclass(frozen=True)
class Accepted:
    """The daemon's 202: the event is stored with its deliveries. `duplicate`: this was a repeat,
    answered with the event first stored under the key."""

    id: str
    event: str
    timestamp: str
    deliveries: int
    duplicate: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait: full-jitter exponential backoff, or the Retry-After asked for."""

    retries: int = DEFAULT_RETRIES
    base: float = BACKOFF_BASE_SECONDS
    cap: float = BACKOFF_MAX_SECONDS

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before try number `attempt + 1` (attempt counts from 1)."""
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_MAX_SECONDS)
        return random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))


def trigger_body(
    event: str, data: dict[str, Any], timestamp: str | None = None, event_id: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"event": event, "data": data}
    if timestamp is not None:
        body["timestamp"] = timestamp
    if event_id is not None:
        body["id"] = event_id
    return body


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header's wait: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def outcome(response: httpx.Response) -> Accepted | float | None:
    """An answer read: the Accepted of a 202, the wait before a retry (0.0 when none was asked
    for; None when the answer must not be retried: the caller raises `refusal(response)`)."""
    if response.status_code == 202:
        body = response.json()
        return Accepted(
            body["id"],
            body["event"],
            body.get("timestamp", ""),
            body.get("deliveries", 0),
            bool(body.get("duplicate")),
            body,
        )
    if response.status_code in RETRIED_STATUSES:
        return retry_after_seconds(response.headers.get("retry-after")) or 0.0
    return None


def refusal(response: httpx.Response) -> ClientError:
    """The error of an answer that is not retried (or the last one, once retries run out)."""
    problem: dict[str, Any] = {}
    if "json" in response.headers.get("content-type", ""):
        try:
            parsed = response.json()
            problem = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            problem = {}
    detail = problem.get("detail") or response.reason_phrase or "no detail"
    status = response.status_code
    if status == 401:
        return AuthError(f"the daemon refused the admin secret: {detail}", status, problem)
    if status in RETRIED_STATUSES:
        return Unavailable(f"the daemon is unavailable ({status}): {detail}", status, problem)
    if 400 <= status < 500:
        return TriggerRefused(f"the event was refused ({status}): {detail}", status, problem)
    return ClientError(f"the daemon answered {status}: {detail}", status, problem)


class _Base:
    def __init__(
        self,
        url: str,
        admin_secret: str,
        *,
        retries: int = DEFAULT_RETRIES,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = {"x-admin-secret": admin_secret}
        self.timeout = timeout
        self.policy = policy or RetryPolicy(retries=retries)

    def _request(
        self, event: str, data: dict[str, Any], idempotency_key: str | None, timestamp: str | None, event_id: str | None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        # one key for every try of this call: the daemon stores the event once, whichever try it saw
        key = idempotency_key or event_id or str(uuid.uuid4())
        return trigger_body(event, data, timestamp, event_id), {**self.headers, "idempotency-key": key}

    def _after(self, attempt: int, tried: httpx.Response | httpx.TransportError) -> Accepted | float:
        """After try number `attempt`: its Accepted, or the seconds to wait before the next try;
        raises when there is no next try (a refusal, or retries run out)."""
        if isinstance(tried, httpx.TransportError):
            if attempt > self.policy.retries:
                raise Unavailable(f"cannot reach {self.url}: {tried}") from tried
            return self.policy.delay(attempt, None)
        found = outcome(tried)
        if isinstance(found, Accepted):
            return found
        if found is None or attempt > self.policy.retries:
            raise refusal(tried)
        return self.policy.delay(attempt, found or None)


class Client(_Base):
    """The synchronous client (one connection pool; use it as a context manager, or `close()`)."""

    def __init__(self, url: str, admin_secret: str, **options: Any) -> None:
        super().__init__(url, admin_secret, **options)
        self._http = httpx.Client(base_url=self.url, timeout=self.timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def trigger(
        self,
        event: str,
        data: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        timestamp: str | None = None,
        event_id: str | None = None,
    ) -> Accepted:
        """Store an event through the daemon, retrying what can be retried; see the module's doc."""
        body, headers = self._request(event, data, idempotency_key, timestamp, event_id)
        for attempt in itertools.count(1):
            tried: httpx.Response | httpx.TransportError
            try:
                tried = self._http.post(TRIGGER_PATH, json=body, headers=headers)
            except httpx.TransportError as exc:
                tried = exc
            step = self._after(attempt, tried)
            if isinstance(step, Accepted):
                return step
            time.sleep(step)
        raise AssertionError("unreachable: itertools.count() never ends")


class AsyncClient(_Base):
    """The asynchronous client, with the same semantics as `Client`."""

    def __init__(self, url: str, admin_secret: str, **options: Any) -> None:
        super().__init__(url, admin_secret, **options)
        self._http = httpx.AsyncClient(base_url=self.url, timeout=self.timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def trigger(
        self,
        event: str,
        data: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        timestamp: str | None = None,
        event_id: str | None = None,
    ) -> Accepted:
        """Store an event through the daemon, retrying what can be retried; see the module's doc."""
        body, headers = self._request(event, data, idempotency_key, timestamp, event_id)
        for attempt in itertools.count(1):
            tried: httpx.Response | httpx.TransportError
            try:
                tried = await self._http.post(TRIGGER_PATH, json=body, headers=headers)
            except httpx.TransportError as exc:
                tried = exc
            step = self._after(attempt, tried)
            if isinstance(step, Accepted):
                return step
            await asyncio.sleep(step)
        raise AssertionError("unreachable: itertools.count() never ends")
