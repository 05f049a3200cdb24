"""The integration guide's JSON bodies in the file format's terms: every field to its place.

The guide's write routes take an integration as its API wrote one: the authentication inside
`config` (`config.auth: {type, apiKey, headerName}`), the target as `baseUrl` or `url`, how
often to sync as `config.syncFrequency`, the event list as `webhooks: [names]`, and `retry`,
`rateLimit` and `timeout` (milliseconds) beside `config`. A body already in the file format
passes through as it is. What the file format has no place for is listed by its JSON pointer
(`Unmapped`), never dropped without a word.

The result is a merge patch (see `manifests.edit`): only the fields the body sends.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.manifests.diagnostics import pointer_of
from reconciler.manifests.durations import format_duration
from reconciler.manifests.edit import AddedSubscription, EventList
from reconciler.manifests.fields import chat_template_for
from reconciler.manifests.models import (
    MAX_RETRY_INTERVAL_SECONDS,
    DatabaseConfig,
    FileConfig,
    HttpConfig,
    IntegrationBase,
    Strict,
    Subscription,
)
from reconciler.manifests.secrets import has_reference

CONFIG_MODELS: dict[str, type[Strict]] = {
    "api": HttpConfig,
    "webhook": HttpConfig,
    "database": DatabaseConfig,
    "file": FileConfig,
}
TOP_LEVEL_FIELDS = frozenset(IntegrationBase.model_fields) | {"type", "config", "receive"}
SUBSCRIPTION_FIELDS = frozenset(Subscription.model_fields)
MAX_DURATION_MS = MAX_RETRY_INTERVAL_SECONDS * 1000  # the longest duration anything in the format takes
DEFAULT_RETRY_INTERVALS = 5  # a backoff without maxAttempts: this many intervals, then the last repeats
MAX_SCHEDULE_INTERVALS = 100  # the file format's limit on retry.schedule

# The guide's names for authentication types and their fields, and where each goes in authConfig.
AUTH_TYPES = {
    "api_key": "api_key",
    "apikey": "api_key",
    "api-key": "api_key",
    "bearer": "bearer",
    "token": "bearer",
    "basic": "basic",
    "oauth2": "oauth2",
    "oauth": "oauth2",
    "none": "none",
}
AUTH_FIELDS = {
    "api_key": {"apiKey": "key", "key": "key", "headerName": "header", "header": "header", "queryParam": "query"},
    "bearer": {"token": "token", "accessToken": "token", "bearerToken": "token"},
    "basic": {"username": "username", "user": "username", "password": "password"},
    "oauth2": {
        "grantType": "grantType",
        "tokenUrl": "tokenUrl",
        "tokenEndpoint": "tokenUrl",
        "clientId": "clientId",
        "clientSecret": "clientSecret",
        "refreshToken": "refreshToken",
        "scope": "scope",
        "scopes": "scope",
        "audience": "audience",
        "clientAuthMethod": "clientAuthMethod",
    },
    "none": {},
}
# rateLimit: the guide's spellings of a request budget, as requests per this many seconds.
RATE_PER = {"perSecond": 1, "requestsPerSecond": 1, "perMinute": 60, "requestsPerMinute": 60, "perHour": 3600}
RATE_WINDOW_MS = ("windowMs", "window", "period", "interval", "per")
RATE_REQUESTS = ("requests", "maxRequests", "limit")
RATE_CONCURRENCY = ("concurrency", "maxConcurrent", "maxConcurrency")


@dataclass(frozen=True)
class Unmapped:
    """A field of the body with no place in the file format; it is not in the file."""

    pointer: str
    hint: str

    def as_dict(self) -> dict[str, str]:
        return {
            "code": "not-mapped",
            "pointer": self.pointer,
            "message": f"{self.pointer} has no place in the file format; it is not in the yaml",
            "hint": self.hint,
        }


@dataclass
class Translation:
    """A body in the file format: a merge patch, and what had no place in it."""

    changes: dict[str, Any] = field(default_factory=dict)
    unmapped: list[Unmapped] = field(default_factory=list)
    # where the guide's spelling put each value (`config.auth` for authType, ...)
    spelled: dict[tuple[str, ...], tuple[str | int, ...]] = field(default_factory=dict, repr=False)

    def skip(self, loc: tuple[str | int, ...], hint: str) -> None:
        self.unmapped.append(Unmapped(pointer_of(loc), hint))

    def place(self, path: tuple[str, ...], value: Any, guide: tuple[str | int, ...] | None = None) -> None:
        """Put `value` at `path` of the changes. `guide`: where the body spelled it the guide's
        way. A field given twice with different values keeps the file format's spelling (else
        the first), and the other is reported, not lost."""
        holder = self.changes
        for part in path[:-1]:
            holder = holder.setdefault(part, {})
            if not isinstance(holder, dict):
                self.skip(guide or path, f"{pointer_of(path[:-1])} is not a mapping in this body")
                return
        key = path[-1]
        if key in holder and holder[key] != value:
            earlier = self.spelled.get(path)
            if guide is not None or earlier is None:
                self.skip(guide or path, f"{pointer_of(earlier or path)} is given too; that value is used")
                return
            self.skip(earlier, f"{pointer_of(path)} is given too; that value is used")
        holder[key] = value
        if guide is not None:
            self.spelled[path] = guide
        else:
            self.spelled.pop(path, None)


def translate_integration(body: Mapping[str, Any], current: Mapping[str, Any] | None = None) -> Translation:
    """The body of `POST /api/integrations` or `PUT /api/integrations/{id}` as a merge patch of
    the document `current` (the one declared now, None for a new one)."""
    current = current or {}
    out = Translation()
    kind = body.get("type") if isinstance(body.get("type"), str) else current.get("type")
    for key, value in body.items():
        if key == "webhooks":
            out.changes["webhooks"] = _webhooks(value, out)
        elif key == "retry":
            out.changes["retry"] = _retry(value, out) if isinstance(value, Mapping) else value
        elif key == "rateLimit":
            _config_field(out, kind, "rateLimit", _rate_limit(value, ("rateLimit",), out), ("rateLimit",))
        elif key == "timeout":
            _config_field(out, kind, "timeout", _duration(value), ("timeout",))
        elif key == "config" and isinstance(value, Mapping):
            _config(value, kind, current, out)
        elif key in TOP_LEVEL_FIELDS:
            out.place((key,), value)
        else:
            out.skip((key,), _closest(key, TOP_LEVEL_FIELDS, "integration"))
    _replace_when_changed(out, current, "type", "config")
    _replace_when_changed(out, current, "authType", "authConfig")
    _chat_template(out, kind, current)
    return out


def _replace_when_changed(out: Translation, current: Mapping[str, Any], selector: str, block: str) -> None:
    """A new `type` (`authType`) makes a new `config` (`authConfig`): the old block's fields
    belong to the old choice, so the block is replaced rather than merged."""
    changed = out.changes.get(selector) not in (None, current.get(selector))
    old = current.get(block)
    new = out.changes.get(block)
    if changed and isinstance(old, Mapping) and isinstance(new, Mapping):
        out.changes[block] = {**dict.fromkeys(old), **new}


def translate_subscription(body: Mapping[str, Any], current: Mapping[str, Any] | None = None) -> Translation:
    """The body of `POST /api/integrations/{id}/webhooks` (one subscription) as a merge patch."""
    out = Translation()
    subscription = _subscription(body, (), out, endpoint=_endpoint_of(current or {}))
    if subscription:
        out.changes["webhooks"] = AddedSubscription(subscription)
    return out


def duration_of_ms(milliseconds: float) -> str:
    """The guide's milliseconds as a file-format duration: 30000 -> 30s."""
    return format_duration(round(milliseconds) / 1000)


def _duration(value: Any) -> Any:
    """A duration in the guide's milliseconds becomes one with a unit; anything else stays, for
    validation to name (a string, or a number no duration can be: the file says it as sent)."""
    if _is_number(value) and 0 < value <= MAX_DURATION_MS:
        return duration_of_ms(value)
    return value


def _config_field(out: Translation, kind: Any, name: str, value: Any, loc: tuple[str, ...]) -> None:
    model = CONFIG_MODELS.get(kind) if isinstance(kind, str) else None
    if model is not None and name not in model.model_fields:
        out.skip(loc, f"type {kind} has no config.{name}")
        return
    out.place(("config", name), value, loc)


def _config(config: Mapping[str, Any], kind: Any, current: Mapping[str, Any], out: Translation) -> None:
    model = CONFIG_MODELS.get(kind) if isinstance(kind, str) else None
    http = model is HttpConfig
    if not isinstance(out.changes.setdefault("config", {}), dict):
        out.skip(("config",), "config is given twice")
        return
    for key, value in config.items():
        loc = ("config", key)
        if key == "auth" and isinstance(value, Mapping):
            _auth(value, out)
        elif key == "syncFrequency":
            out.place(("syncFrequency",), value, loc)
        elif key in ("baseUrl", "url") and http:
            endpoint = _endpoint_from_base(value, current) if key == "baseUrl" else value
            out.place(("config", "endpoint"), endpoint, loc)
        elif key == "endpoints":
            out.skip(loc, "the file format sends every event to one URL: write the full URL in config.endpoint")
        elif key == "timeout":
            out.place(loc, _duration(value))
        elif key == "rateLimit":
            out.place(loc, _rate_limit(value, loc, out))
        elif model is None or key in model.model_fields:
            out.place(loc, value)
        else:
            out.skip(loc, _closest(key, model.model_fields, f"config of type {kind}"))


def _endpoint_from_base(base: Any, current: Mapping[str, Any]) -> Any:
    """`baseUrl` is the target, unless the file's endpoint is already a path under it."""
    endpoint = _endpoint_of(current)
    if isinstance(base, str) and isinstance(endpoint, str) and endpoint.startswith(base.rstrip("/") + "/"):
        return endpoint
    return base


def _endpoint_of(document: Mapping[str, Any]) -> Any:
    config = document.get("config")
    return config.get("endpoint") if isinstance(config, Mapping) else None


def _auth(auth: Mapping[str, Any], out: Translation) -> None:
    """`config.auth: {type, apiKey, headerName, ...}` -> authType and authConfig."""
    raw_type = auth.get("type")
    auth_type = AUTH_TYPES.get(raw_type.lower()) if isinstance(raw_type, str) else None
    if auth_type is None:
        out.skip(("config", "auth", "type"), "authentication types: " + ", ".join(sorted(set(AUTH_TYPES.values()))))
        return
    out.place(("authType",), auth_type, ("config", "auth", "type"))
    names = AUTH_FIELDS[auth_type]
    mapped = {}
    for key, value in auth.items():
        if key == "type":
            continue
        if key in names:
            mapped[names[key]] = value
        else:
            out.skip(("config", "auth", key), _closest(key, names, f"authType {auth_type}"))
    out.place(("authConfig",), mapped or None, ("config", "auth"))


def _chat_template(out: Translation, kind: Any, current: Mapping[str, Any]) -> None:
    """A Slack, Teams or Discord incoming-webhook URL gets that service's template: each
    answers 400 to a raw event envelope."""
    config = out.changes.get("config")
    if kind not in ("webhook", "api") or not isinstance(config, dict):
        return
    endpoint = config.get("endpoint")
    current_config = current.get("config")
    has_template = isinstance(current_config, Mapping) and current_config.get("template") is not None
    if "template" in config or has_template or not isinstance(endpoint, str) or has_reference(endpoint):
        return
    template = chat_template_for(endpoint)
    if template is not None:
        config["template"] = template


def _webhooks(value: Any, out: Translation) -> Any:
    """The guide's event list, or a list of subscriptions in the file format (or a mix)."""
    if not isinstance(value, list):
        return value
    if all(isinstance(item, str) for item in value):
        return EventList(tuple(value))
    subscriptions = []
    for index, item in enumerate(value):
        if isinstance(item, str):
            subscriptions.append({"events": [item]})
        elif isinstance(item, Mapping):
            subscription = _subscription(item, ("webhooks", index), out)
            if subscription:
                subscriptions.append(subscription)
        else:
            subscriptions.append(item)  # validation names what is wrong with it
    return subscriptions


def _subscription(
    item: Mapping[str, Any], loc: tuple[str | int, ...], out: Translation, endpoint: Any = None
) -> dict[str, Any]:
    """One subscription: `events` (or the guide's single `event`), `filter`, `template`."""
    subscription: dict[str, Any] = {}
    for key, value in item.items():
        if key in ("events", "event"):
            events = [value] if isinstance(value, str) else value
            subscription["events"] = [*subscription.get("events", []), *events] if isinstance(events, list) else events
        elif key in SUBSCRIPTION_FIELDS:
            subscription[key] = value
        elif key == "url" and value == endpoint:
            continue  # the guide repeats the integration's URL; it is already the target
        elif key == "url":
            out.skip((*loc, key), "a subscription delivers to the integration's config.endpoint; change that instead")
        else:
            out.skip((*loc, key), _closest(key, SUBSCRIPTION_FIELDS, "subscription"))
    return subscription


def _retry(retry: Mapping[str, Any], out: Translation) -> dict[str, Any]:
    """`maxAttempts` and `schedule` as they are; the guide's retries, delays and backoff as a schedule."""
    mapped: dict[str, Any] = {}
    readers: dict[str, Callable[[Any], None]] = {
        "maxAttempts": lambda v: mapped.setdefault("maxAttempts", v),
        "attempts": lambda v: mapped.setdefault("maxAttempts", v),
        "maxRetries": lambda v: mapped.setdefault("maxAttempts", v + 1 if _is_number(v) else v),
        "retries": lambda v: mapped.setdefault("maxAttempts", v + 1 if _is_number(v) else v),
        "schedule": lambda v: mapped.setdefault("schedule", _durations(v)),
        "delays": lambda v: mapped.setdefault("schedule", ["0s", *_durations(v)] if isinstance(v, list) else v),
        "intervals": lambda v: mapped.setdefault("schedule", ["0s", *_durations(v)] if isinstance(v, list) else v),
    }
    backoff_keys = ("backoff", "initialDelay", "delay", "retryDelay", "backoffMs", "multiplier", "factor", "maxDelay")
    for key, value in retry.items():
        if key in readers:
            readers[key](value)
        elif key not in backoff_keys:
            out.skip(("retry", key), _closest(key, [*readers, *backoff_keys], "retry"))
    schedule = _backoff_schedule(retry, mapped.get("maxAttempts"), out)
    if schedule is not None:
        mapped.setdefault("schedule", schedule)
    return mapped


def _backoff_schedule(retry: Mapping[str, Any], attempts: Any, out: Translation) -> list[str] | None:
    """`backoff: exponential|fixed|linear` from a first delay (ms): the intervals of the schedule."""
    first: Any = next((retry[k] for k in ("initialDelay", "delay", "retryDelay", "backoffMs") if k in retry), None)
    if not _is_number(first) or first < 0:
        for key in ("backoff", "multiplier", "factor", "maxDelay"):
            if key in retry:
                out.skip(("retry", key), "give the first delay in milliseconds (initialDelay), or retry.schedule")
        return None
    strategy = str(retry.get("backoff", "exponential" if "multiplier" in retry or "factor" in retry else "fixed"))
    factor = retry.get("multiplier", retry.get("factor", 2))
    cap = retry.get("maxDelay")
    count = attempts - 1 if _is_number(attempts) and attempts > 1 else DEFAULT_RETRY_INTERVALS
    intervals: list[float] = []
    for n in range(min(count, MAX_SCHEDULE_INTERVALS - 1)):
        delay = _nth_delay(strategy, _as_float(first), factor, n)
        delay = min(delay, _as_float(cap)) if _is_number(cap) else delay
        if not delay <= MAX_DURATION_MS:
            out.skip(("retry", "backoff"), f"intervals stop at {format_duration(MAX_DURATION_MS / 1000)}, the longest")
            break  # the last interval repeats
        intervals.append(delay)
        if strategy not in ("exponential", "linear"):
            break  # a fixed delay: the last interval repeats
    return ["0s", *(duration_of_ms(d) for d in intervals)]


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond floating point
        return math.inf


def _nth_delay(strategy: str, first: float, factor: Any, n: int) -> float:
    """The delay (ms) before retry n+1; infinity when it outgrows floating point."""
    try:
        if strategy == "exponential" and _is_number(factor):
            return first * float(factor) ** n
        return first * (n + 1) if strategy == "linear" else first
    except OverflowError:
        return math.inf


def _durations(values: Any) -> Any:
    return [_duration(v) for v in values] if isinstance(values, list) else values


def _rate_limit(value: Any, loc: tuple[str, ...], out: Translation) -> Any:
    """`perSecond` and `concurrency`, from the guide's requests per minute, per window, ..."""
    if not isinstance(value, Mapping):
        return value
    mapped: dict[str, Any] = {}
    window: Any = next((value[k] for k in RATE_WINDOW_MS if k in value), None)
    requests: Any = next((value[k] for k in RATE_REQUESTS if k in value), None)
    for key, item in value.items():
        if key in RATE_PER and _is_number(item):
            mapped.setdefault("perSecond", _per_second(item, RATE_PER[key]))
        elif key in RATE_CONCURRENCY:
            mapped.setdefault("concurrency", item)
        elif key in RATE_REQUESTS and _is_number(item) and _is_number(window) and window > 0:
            mapped.setdefault("perSecond", _per_second(item, window / 1000))
        elif key in RATE_WINDOW_MS and _is_number(requests):
            continue
        else:
            out.skip((*loc, key), "rateLimit takes perSecond (requests per second) and concurrency (in flight)")
    return mapped


def _per_second(requests: float, seconds: float) -> float | int:
    try:
        rate = _as_float(requests) / _as_float(seconds)
    except (OverflowError, ZeroDivisionError):
        return math.inf
    if not math.isfinite(rate):
        return rate  # validation refuses it, naming the field
    return int(rate) if rate == int(rate) else round(rate, 6)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _closest(key: str, known: Any, where: str) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.7)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"the {where} fields are in docs/file-format.md"
