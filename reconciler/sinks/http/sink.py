"""The HTTP sink of `api` and `webhook` integrations, on aiohttp.

One request per delivery (or per batch): the integration's method, headers, timeout and
auth, a Standard Webhooks signature when `signingSecret` is set, connections reused across
requests. The attempt keeps the status, latency and the start of the response, never the
request's headers or credentials.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp

from reconciler import __version__
from reconciler.manifests.durations import parse_duration
from reconciler.manifests.models import HttpConfig, OAuth2Auth
from reconciler.registry import AppliedIntegration, scrub, substitute
from reconciler.sinks import Sink, SinkResult, config_of, ssrf
from reconciler.sinks.http.auth import Authenticator, AuthError
from reconciler.sinks.http.retry_after import MAX_RETRY_AFTER_SECONDS, parse_retry_after
from reconciler.sinks.http.signing import SigningError, decode_secrets, signature_headers
from reconciler.sinks.ssrf import BlockedAddress

RESPONSE_EXCERPT_BYTES = 1024
USER_AGENT = f"cms-integrations-reconciler/{__version__}"
CONNECTIONS_PER_HOST = 32
CONNECTIONS_TOTAL = 256


class HttpSink(Sink):
    """Requests to the endpoints of `api` and `webhook` integrations; a Sink with `send`.

    Connections are pooled across requests, in two pools (see `session`); what every request
    of one applied generation shares (URL, headers, signing keys) is worked out once."""

    def __init__(self, *, max_retry_after: float = MAX_RETRY_AFTER_SECONDS) -> None:
        self.max_retry_after = max_retry_after  # the longest pause a Retry-After can ask for
        self.auth = Authenticator()
        self._public: aiohttp.ClientSession | None = None
        self._private: aiohttp.ClientSession | None = None
        self._cache: dict[tuple[str, int, int], _Prepared] = {}

    def session(self, allow_private: bool) -> aiohttp.ClientSession:
        """Two pools: one whose every connection must reach a public address (the SSRF guard of
        reconciler/sinks/ssrf.py, IP literals included), one without that rule."""
        if allow_private:
            if self._private is None:
                self._private = _session(True)
            return self._private
        if self._public is None:
            self._public = _session(False)
        return self._public

    async def close(self) -> None:
        for session in (self._public, self._private):
            if session is not None:
                await session.close()

    async def send(
        self,
        integration: AppliedIntegration,
        body: bytes,
        message_id: str,
        *,
        method: str | None = None,
        url: str | None = None,
        read_limit: int = RESPONSE_EXCERPT_BYTES,
    ) -> SinkResult:
        """Deliver one body; an OAuth2 401 refreshes the token and tries once more. The
        response is read up to `read_limit` bytes (the excerpt; a sync reads its result)."""
        config = config_of(integration, HttpConfig)
        result = await self._send_once(integration, config, body, message_id, method, url, read_limit)
        if result.status == 401 and isinstance(integration.spec.authConfig, OAuth2Auth):
            self.auth.invalidate(_key(integration))
            result = await self._send_once(integration, config, body, message_id, method, url, read_limit)
        return result

    async def _send_once(
        self,
        integration: AppliedIntegration,
        config: HttpConfig,
        body: bytes,
        message_id: str,
        method: str | None,
        url: str | None,
        read_limit: int,
    ) -> SinkResult:
        started = time.perf_counter()
        prepared = self._prepared(integration, config)
        target = substitute(url, integration.resolved) if url else prepared.url
        auth = integration.spec.authConfig
        # copied only when this request adds to them (auth, signatures)
        headers = dict(prepared.headers) if auth is not None or prepared.signing_keys else prepared.headers
        session = self.session(config.allowPrivateNetwork)
        if prepared.signing_problem:
            return SinkResult.failure(prepared.signing_problem, started, endpoint_failure=False)
        try:
            # before credentials are fetched or added: the host as aiohttp will read it
            if not config.allowPrivateNetwork:
                ssrf.check_url(target)
            check = None if config.allowPrivateNetwork else ssrf.check_url
            if auth is not None:
                target = await self.auth.apply(
                    _key(integration), auth, integration.resolved, target, headers, session, check
                )
            if prepared.signing_keys:
                headers.update(signature_headers(prepared.signing_keys, message_id, int(time.time()), body))
            async with session.request(
                method or config.method,
                target,
                data=body,
                headers=headers,
                timeout=prepared.timeout,
                allow_redirects=False,
            ) as response:
                excerpt = await _read_up_to(response.content, read_limit)
                latency = (time.perf_counter() - started) * 1000
                # an endpoint may echo the request (a debugging proxy, an error page): what it
                # was sent with, secrets and credentials added by auth, is kept out of the log
                sent = (*prepared.secrets, *_credentials(headers, prepared.headers))
                return SinkResult(
                    ok=200 <= response.status < 300,
                    status=response.status,
                    latency_ms=latency,
                    excerpt=scrub(excerpt.decode("utf-8", errors="replace"), sent),
                    error=None if 200 <= response.status < 300 else f"HTTP {response.status}",
                    retry_after=parse_retry_after(response.headers.get("Retry-After"), cap=self.max_retry_after)
                    if response.status in (429, 503)
                    else None,
                    endpoint_failure=response.status >= 500 or response.status == 429,
                )
        except (BlockedAddress, AuthError, SigningError) as exc:
            return SinkResult.failure(str(exc), started, endpoint_failure=False)
        except TimeoutError:
            return SinkResult.failure(f"timed out after {config.timeout}", started)
        except aiohttp.ClientError as exc:
            # refused by the connector: our config's doing, not the endpoint's failure
            blocked = ssrf.blocked_cause(exc) is not None
            return SinkResult.failure(_client_error(exc), started, endpoint_failure=not blocked)

    def _prepared(self, integration: AppliedIntegration, config: HttpConfig) -> _Prepared:
        """What every request of one applied generation shares, worked out once."""
        key = (integration.id, integration.generation, id(integration.resolved))
        prepared = self._cache.get(key)
        if prepared is None:
            resolved = integration.resolved
            headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
            headers.update({name: substitute(value, resolved) for name, value in config.headers.items()})
            keys: list[bytes] = []
            problem = None
            try:
                keys = decode_secrets(substitute(config.signingSecret, resolved)) if config.signingSecret else []
            except SigningError as exc:
                problem = str(exc)
            values = resolved.values.values() if resolved is not None else ()
            prepared = _Prepared(
                substitute(config.endpoint or "", resolved),
                headers,
                keys,
                aiohttp.ClientTimeout(total=parse_duration(config.timeout)),
                problem,
                # longest first, so that no part of a longer one is left when a shorter one is in it
                tuple(sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)),
            )
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = prepared
        return prepared


@dataclass(frozen=True)
class _Prepared:
    """What every request of one applied generation shares (see HttpSink._prepared)."""

    url: str
    headers: dict[str, str]
    signing_keys: list[bytes]
    timeout: aiohttp.ClientTimeout
    signing_problem: str | None = None  # a signingSecret that is not a whsec_ secret
    secrets: tuple[str, ...] = ()  # the resolved secret values, kept out of excerpts


def _key(integration: AppliedIntegration) -> tuple[str, int]:
    return (integration.id, integration.generation)


def _session(allow_private: bool) -> aiohttp.ClientSession:
    return ssrf.session(allow_private, limit=CONNECTIONS_TOTAL, limit_per_host=CONNECTIONS_PER_HOST, ttl_dns_cache=60)


def _credentials(headers: dict[str, str], prepared: dict[str, str]) -> list[str]:
    """The values auth and signing added to a request's headers, and the token in each
    (`Bearer TOKEN`, `Basic BASE64`): an OAuth2 access token is in no resolved secret."""
    found = []
    for name, value in headers.items():
        if prepared.get(name) != value:
            found.append(value)
            token = value.partition(" ")[2]
            if token and len(token) >= 4:
                found.append(token)
    return found


def _client_error(exc: aiohttp.ClientError) -> str:
    """What went wrong, without the URL: it may hold a secret (a token in the query, a webhook
    URL that is itself the credential)."""
    blocked = ssrf.blocked_cause(exc)
    if blocked is not None:
        return str(blocked)
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__}: {exc.status} {exc.message}"[:300]
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{type(exc).__name__}: cannot connect to {exc.host}:{exc.port} ({exc.strerror})"[:300]
    return type(exc).__name__


async def _read_up_to(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to `limit` bytes of the body (`read(n)` returns only what has arrived so far)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if stream.at_eof():
            break  # all of it arrived: no second read to learn that
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
