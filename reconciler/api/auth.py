"""Admin authentication: the `x-admin-secret` header (or `Authorization: Bearer`).

The secret comes from ADMIN_SECRET, or is generated at first start into the state directory
with mode 0600; its path is printed, never its value. A secret in a query string is ignored.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from starlette.requests import Request

ADMIN_SECRET_ENV = "ADMIN_SECRET"
SECRET_FILE_NAME = "admin-secret"
MIN_SECRET_CHARS = 16


class AdminSecretError(RuntimeError):
    """The admin secret cannot be used (ADMIN_SECRET too short); the daemon does not start."""


def load_admin_secret(state_dir: Path, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(secret, where it came from) — the second is safe to print."""
    env = os.environ if environ is None else environ
    value = env.get(ADMIN_SECRET_ENV, "")
    if value:
        if len(value) < MIN_SECRET_CHARS:
            raise AdminSecretError(
                f"{ADMIN_SECRET_ENV} is shorter than {MIN_SECRET_CHARS} characters; use a long random value"
            )
        return value, f"the {ADMIN_SECRET_ENV} environment variable"
    path = state_dir / SECRET_FILE_NAME
    if path.exists():
        stored = path.read_text(encoding="utf-8").strip()
        if len(stored) >= MIN_SECRET_CHARS:
            return stored, str(path)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # 0700 like the store's
    generated = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(generated + "\n")
    os.chmod(path, 0o600)
    return generated, f"{path} (generated)"


def presented_secret(request: Request) -> str | None:
    """The secret a request presents in a header, if any (never one in the query string)."""
    header = request.headers.get("x-admin-secret")
    if header:
        return header
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def is_admin(request: Request, secret: str) -> bool:
    """Whether the request presents the admin secret (compared in constant time)."""
    presented = presented_secret(request)
    return presented is not None and hmac.compare_digest(presented.encode(), secret.encode())
