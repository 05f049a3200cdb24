"""Outbound authentication: api_key, bearer, basic, and OAuth2 with cached, early-renewed tokens.

OAuth2 supports the client-credentials and refresh-token grants. A token is fetched once per
integration generation and reused until shortly before it expires (a tenth of its lifetime,
at most a minute, early), so a token never expires in flight; a 401 from the target drops it
and the request is tried once more with a fresh one. Tokens live in memory only and are
never logged; `expiries()` tells when they run out, never what they are.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from reconciler.manifests.models import ApiKeyAuth, BasicAuth, BearerAuth, OAuth2Auth
from reconciler.registry import Resolved, substitute
from reconciler.sinks.ssrf import blocked_cause

if TYPE_CHECKING:
    import aiohttp

RENEW_FRACTION = 0.1
RENEW_MAX_SECONDS = 60.0
DEFAULT_TOKEN_LIFETIME_SECONDS = 3600.0  # when the token endpoint does not say
TOKEN_ERROR_EXCERPT_CHARS = 200


class AuthError(RuntimeError):
    """Credentials could not be obtained (the token endpoint refused, say); never holds a secret."""


@dataclass
class Token:
    """An OAuth2 access token and when it runs out; renewed a little before it does."""

    access_token: str
    expires_at: float
    lifetime: float

    def fresh(self, now: float) -> bool:
        margin = min(RENEW_MAX_SECONDS, self.lifetime * RENEW_FRACTION)
        return now < self.expires_at - margin


def add_query(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = (parts.query + "&" if parts.query else "") + urlencode({name: value})
    return urlunsplit(parts._replace(query=query))


class Authenticator:
    """Adds credentials to requests; holds the OAuth2 token cache."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, int], Token] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        # rotated refresh tokens by integration: the configured one may be revoked once rotated
        self._refresh: dict[str, str] = {}

    async def apply(
        self,
        key: tuple[str, int],
        auth: Any,
        resolved: Resolved | None,
        url: str,
        headers: dict[str, str],
        session: aiohttp.ClientSession,
        check_host: Callable[[str], None] | None = None,
    ) -> str:
        """Set auth headers in place; return the URL (api_key may add a query parameter).
        `check_host(url)` vets the token endpoint as the target is vetted (SSRF)."""
        if isinstance(auth, ApiKeyAuth):
            value = substitute(auth.key, resolved)
            if auth.query:
                return add_query(url, auth.query, value)
            headers[auth.header or "X-API-Key"] = value
        elif isinstance(auth, BearerAuth):
            headers["Authorization"] = f"Bearer {substitute(auth.token, resolved)}"
        elif isinstance(auth, BasicAuth):
            pair = f"{substitute(auth.username, resolved)}:{substitute(auth.password, resolved)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif isinstance(auth, OAuth2Auth):
            token = await self.token(key, auth, resolved, session, check_host)
            headers["Authorization"] = f"Bearer {token.access_token}"
        return url

    def invalidate(self, key: tuple[str, int]) -> None:
        self._tokens.pop(key, None)

    def expiries(self) -> dict[str, float]:
        """Integration id -> when its current token expires (epoch seconds); never the tokens."""
        return {key[0]: token.expires_at for key, token in self._tokens.items()}

    async def token(
        self,
        key: tuple[str, int],
        auth: OAuth2Auth,
        resolved: Resolved | None,
        session: aiohttp.ClientSession,
        check_host: Callable[[str], None] | None = None,
    ) -> Token:
        current = self._tokens.get(key)
        if current is not None and current.fresh(time.time()):
            return current
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # one fetch at a time per integration, however many requests wait
            current = self._tokens.get(key)
            if current is not None and current.fresh(time.time()):
                return current
            token = await self._fetch(key[0], auth, resolved, session, check_host)
            self._tokens[key] = token
            return token

    async def _fetch(
        self,
        integration_id: str,
        auth: OAuth2Auth,
        resolved: Resolved | None,
        session: aiohttp.ClientSession,
        check_host: Callable[[str], None] | None = None,
    ) -> Token:
        import json

        import aiohttp

        form: dict[str, str] = {"grant_type": auth.grantType}
        if auth.grantType == "refresh_token":
            form["refresh_token"] = self._refresh.get(integration_id) or substitute(auth.refreshToken or "", resolved)
        if auth.scope:
            form["scope"] = auth.scope if isinstance(auth.scope, str) else " ".join(auth.scope)
        if auth.audience:
            form["audience"] = auth.audience
        client_id = substitute(auth.clientId, resolved)
        client_secret = substitute(auth.clientSecret, resolved) if auth.clientSecret else ""
        headers = {"Accept": "application/json"}
        if auth.clientAuthMethod == "client_secret_post" or not client_secret:
            form["client_id"] = client_id
            if client_secret:
                form["client_secret"] = client_secret
        else:
            pair = f"{client_id}:{client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        url = substitute(auth.tokenUrl, resolved)
        if check_host is not None:
            check_host(url)
        try:
            # no redirects: a 307 would carry the client secret to wherever it points
            async with session.post(
                url, data=form, headers=headers, timeout=aiohttp.ClientTimeout(total=30), allow_redirects=False
            ) as r:
                text = await r.text(errors="replace")
            if r.status != 200:
                raise AuthError(f"token endpoint answered {r.status}: {_oauth_error(text)}")
            body = json.loads(text)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            blocked = blocked_cause(exc)  # the session's connector refused the address: say why
            if blocked is not None:
                raise AuthError(f"token endpoint refused: {blocked}") from None
            raise AuthError(f"token endpoint failed: {type(exc).__name__}") from None
        access = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(access, str) or not access:
            raise AuthError("token endpoint answered without an access_token")
        try:
            lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME_SECONDS)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME_SECONDS
        rotated = body.get("refresh_token") if isinstance(body.get("refresh_token"), str) else None
        if rotated:
            self._refresh[integration_id] = rotated  # outlives this token, a 401 and a new generation
        return Token(access, time.time() + lifetime, lifetime)


def _oauth_error(text: str) -> str:
    """The OAuth2 error code and description (RFC 6749 5.2), not the raw body."""
    import json

    try:
        body = json.loads(text)
    except ValueError:
        return text[:TOKEN_ERROR_EXCERPT_CHARS]
    if isinstance(body, dict) and "error" in body:
        description = body.get("error_description")
        return str(body["error"]) + (f" ({description})" if description else "")
    return text[:TOKEN_ERROR_EXCERPT_CHARS]
