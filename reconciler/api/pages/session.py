"""Who is looking at the status page, and whether an action form is genuine.

An admin signs in once with the admin secret; the answer is a session cookie (HttpOnly,
SameSite=Strict, Secure over HTTPS) that holds a signed token, never the secret. A token is
`issued.nonce.signature`, signed with a key derived from the admin secret: it is valid on
every replica that shares the secret, and a new secret signs everyone out. Signing out
revokes the token's nonce in this process and clears the cookie.

Scripts and probes keep sending the secret in `x-admin-secret` or `Authorization: Bearer`,
as the API takes it. Action forms carry a CSRF token derived from the session's nonce; a
request authenticated by a header needs none (a browser never adds that header for another site).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request

from reconciler.api.auth import is_admin

COOKIE = "reconciler_session"
SESSION_SECONDS = 12 * 3600  # a working day: the page is kept open, not signed into forever
CSRF_FIELD = "csrf"


@dataclass(frozen=True)
class Viewer:
    """Who sent a request: an admin (by the session cookie or a header) or anyone."""

    admin: bool
    by_cookie: bool = False
    nonce: str | None = None  # the session's, for its CSRF token


ANONYMOUS = Viewer(admin=False)


class Sessions:
    """Issues and checks session tokens and CSRF tokens for one admin secret."""

    def __init__(self, admin_secret: str) -> None:
        self._secret = admin_secret
        # derived, so a token's signature says nothing usable about the secret itself
        self._key = hmac.new(admin_secret.encode(), b"reconciler status page sessions", hashlib.sha256).digest()
        self._revoked: dict[str, float] = {}  # nonce -> when its token would expire anyway

    def issue(self, now: float | None = None) -> str:
        """A new session token."""
        issued = int(time.time() if now is None else now)
        nonce = secrets.token_urlsafe(18)
        return f"{issued}.{nonce}.{self._sign(f'{issued}.{nonce}')}"

    def nonce_of(self, token: str | None, now: float | None = None) -> str | None:
        """The nonce of a valid, unexpired, not revoked token; None for anything else."""
        if not token or token.count(".") != 2:
            return None
        issued, nonce, signature = token.split(".")
        if not hmac.compare_digest(signature, self._sign(f"{issued}.{nonce}")):
            return None
        now = time.time() if now is None else now
        if not issued.isdigit() or not 0 <= now - int(issued) < SESSION_SECONDS or nonce in self._revoked:
            return None
        return nonce

    def revoke(self, token: str | None, now: float | None = None) -> None:
        """Sign a token out (the ones that expired are forgotten meanwhile)."""
        nonce = self.nonce_of(token, now)
        now = time.time() if now is None else now
        self._revoked = {n: until for n, until in self._revoked.items() if until > now}
        if nonce is not None and token is not None:
            self._revoked[nonce] = int(token.split(".")[0]) + SESSION_SECONDS

    def csrf_token(self, nonce: str) -> str:
        """The token an action form of this session carries."""
        return self._sign(f"csrf.{nonce}")

    def csrf_ok(self, viewer: Viewer, presented: str | None) -> bool:
        """Whether an action may go ahead: always for a header's admin, for a cookie's with its token."""
        if not viewer.admin:
            return False
        if not viewer.by_cookie:
            return True
        return (
            bool(presented)
            and viewer.nonce is not None
            and hmac.compare_digest(presented or "", self.csrf_token(viewer.nonce))
        )

    def viewer(self, request: Request) -> Viewer:
        """Who sent the request: the header first (as the API reads it), then the cookie."""
        if is_admin(request, self._secret):
            return Viewer(admin=True)
        nonce = self.nonce_of(request.cookies.get(COOKIE))
        return Viewer(admin=True, by_cookie=True, nonce=nonce) if nonce else ANONYMOUS

    def secret_matches(self, presented: str) -> bool:
        """Whether a sign-in form gave the admin secret (compared in constant time)."""
        return hmac.compare_digest(presented.encode(), self._secret.encode())

    def _sign(self, text: str) -> str:
        digest = hmac.new(self._key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
