"""Checks of single field values, shared by the models and the semantic checks.

Each check raises `FieldProblem` (a ValueError, so pydantic reports it at the field's
location) with a message and a hint at the fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from reconciler.manifests import secrets
from reconciler.manifests.addresses import address_of, is_local_name, non_public_host, url_host


class FieldProblem(ValueError):
    """A bad field value, with a hint at the fix."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def problems_at(title: str, problems: Sequence[tuple[tuple[str | int, ...], FieldProblem]]) -> None:
    """Raise the problems found by a model-level check at their own fields' locations."""
    if not problems:
        return
    raise ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError("spec", "{message}", {"message": p.message, "hint": p.hint}),
                loc=loc,
                input=None,
            )
            for loc, p in problems
        ],
    )


# Query parameters and header names that carry credentials by convention.
_CREDENTIAL_NAME = re.compile(
    r"(^|[-_.])(key|apikey|api[-_]?key|token|access[-_]?token|secret|client[-_]?secret|password"
    r"|passwd|pwd|sig|signature|auth|authorization|credential|credentials|cookie|session)$",
    re.IGNORECASE,
)
# An unreplaced `{placeholder}` such as the integration guide's `{spreadsheetId}`.
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")
PRIVATE_NETWORK_HINT = (
    "set config.allowPrivateNetwork: true if the integration must reach this machine or the private network"
)


def looks_like_credential_name(name: str) -> bool:
    return bool(_CREDENTIAL_NAME.search(name))


def is_local_host(host: str) -> bool:
    """localhost, 127.0.0.0/8 and ::1: the hosts plain http:// may reach without opt-in.
    `host` as the HTTP client reads it (`addresses.url_host`)."""
    if is_local_name(host):
        return True
    address = address_of(host)
    return address is not None and address.is_loopback


def check_public_host(url: str, what: str, *, echo: bool = True) -> None:
    """Refuse a URL whose host, read as the HTTP client reads it (so `127。0。0。1` is
    127.0.0.1), is a private, loopback or link-local address or a loopback name: delivery
    would refuse it unless `allowPrivateNetwork`. Names are not looked up (CI's DNS is not
    production's); hosts hidden in a secret reference are checked when connecting."""
    if secrets.is_single_reference(url):
        return
    try:
        reason = non_public_host(secrets.mask_references(url))
    except ValueError:
        return  # no host the client could use: the URL's own checks say so
    if reason is not None:
        shown = reason if echo else "its host is private, loopback or link-local"
        raise FieldProblem(f"{what}: {shown}, which integrations may not reach by default", PRIVATE_NETWORK_HINT)


def require_reference(value: str, what: str) -> str:
    """A credential must be a secret reference: git is not a secret store."""
    if secrets.is_single_reference(value):
        return value
    raise FieldProblem(
        f"{what} is a literal value; credentials must not be committed to git",
        "write a secret reference such as ${env:NAME} or ${file:/run/secrets/name} and set the value outside git",
    )


def check_url(
    url: str,
    *,
    schemes: Iterable[str],
    allow_insecure_http: bool = False,
    allow_private_network: bool = True,
    what: str = "the URL",
    echo: bool = True,
) -> None:
    """Shape checks of a URL that may contain secret references.

    A URL that is one whole reference can only be checked once resolved (at apply time,
    or with `validate --check-env`); then `echo=False` keeps its parts out of messages.
    Hosts are judged as the HTTP client reads them (yarl's IDNA/NFKC reading), not as written.
    """
    if secrets.is_single_reference(url):
        return
    query = url.partition("?")[2].partition("#")[0]
    if secrets.has_reference(query):
        # query strings end up in access logs, proxies and error messages, and the test
        # endpoint would send whatever a reference there names to wherever the URL points
        raise FieldProblem(
            f"{what} has a secret reference in its query string",
            "send the secret in a header (authType: api_key or bearer), or make the whole URL "
            "one reference such as ${env:HOOK_URL}",
        )
    masked = secrets.mask_references(url)
    placeholder = _PLACEHOLDER.search(masked)
    if placeholder:
        name = f"{{{placeholder.group(1)}}}" if echo else "{...}"
        raise FieldProblem(
            f"{what} contains the unreplaced placeholder {name}",
            f"replace {name} with the real value (or a secret reference such as ${{env:NAME}})",
        )
    try:
        parts = urlsplit(masked)
        host = parts.hostname or ""
    except ValueError as exc:
        raise FieldProblem(
            f"{what} is not a valid URL" + (f": {exc}" if echo else ""), "check the brackets and port"
        ) from None
    allowed = tuple(schemes)
    if parts.scheme not in allowed:
        shown = f" {parts.scheme or '(none)'!r}" if echo else ""
        raise FieldProblem(
            f"{what} has scheme{shown} not in: {', '.join(allowed)}",
            f"start it with {allowed[0]}://",
        )
    if parts.scheme in ("http", "https") and not host:
        raise FieldProblem(f"{what} has no host", "write a full URL such as https://example.org/hook")
    if parts.scheme in ("http", "https"):
        try:
            host = url_host(masked)  # what aiohttp connects to: 127。0。0。1 is 127.0.0.1
        except ValueError as exc:
            raise FieldProblem(
                f"{what} is not a URL the HTTP client can use" + (f": {exc}" if echo else ""),
                "check the host (plain ASCII, or its xn-- form) and the port",
            ) from None
        if not allow_private_network:
            check_public_host(url, what, echo=echo)
    userinfo = url.split("://", 1)[-1].split("/", 1)[0].rpartition("@")[0]
    if parts.scheme in ("http", "https") and userinfo and ":" not in userinfo and not secrets.has_reference(userinfo):
        # https://TOKEN@host is how many APIs take a token: a user name alone is a credential
        raise FieldProblem(
            f"{what} carries a literal credential as its user name",
            "use authType bearer or basic with a secret reference instead of user@ in the URL",
        )
    if parts.password is not None and not secrets.has_reference(_password_of(url)):
        raise FieldProblem(
            f"{what} carries a literal password in its user info",
            "replace the password with a secret reference: scheme://user:${env:NAME}@host/...",
        )
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if looks_like_credential_name(name) and value and not secrets.has_reference(value):
            raise FieldProblem(
                f"{what} carries a literal credential in its query parameter {name!r}",
                f"write {name}=${{env:NAME}} (a secret reference), or use authType api_key with a query parameter",
            )
    if _is_secret_path_webhook(host, parts.path) and not secrets.has_reference(url):
        raise FieldProblem(
            f"{what} is a {host} webhook URL, whose path is itself the credential",
            "put the whole URL in a secret: endpoint: ${env:NAME}",
        )
    if parts.scheme == "http" and not allow_insecure_http and not is_local_host(host):
        raise FieldProblem(
            f"{what} uses plain http:// to "
            + (f"{host}, which is not a local host" if echo else "a host that is not local"),
            "use https://, or set config.allowInsecureHttp: true if the peer has no TLS",
        )


# Services whose incoming-webhook URLs carry their credential in the path.
_SECRET_PATH_HOSTS = {
    "hooks.slack.com": "/services/",
    "discord.com": "/api/webhooks/",
    "discordapp.com": "/api/webhooks/",
    "chat.googleapis.com": "/v1/spaces/",
}


def _is_secret_path_webhook(host: str, path: str) -> bool:
    host = host.lower()
    if host.endswith(".webhook.office.com") or host.endswith(".logic.azure.com"):
        return True
    prefix = _SECRET_PATH_HOSTS.get(host)
    return prefix is not None and path.startswith(prefix)


# The built-in template that shapes a body for each chat service's incoming webhooks.
_CHAT_TEMPLATES = {"hooks.slack.com": "slack", "discord.com": "discord", "discordapp.com": "discord"}


def chat_template_for(url: str) -> str | None:
    """`slack`, `teams` or `discord` for that service's incoming-webhook URL, else None: those
    services answer 400 to a raw event envelope."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if not _is_secret_path_webhook(host, parts.path):
        return None
    if host.endswith(".webhook.office.com") or host.endswith(".logic.azure.com"):
        return "teams"
    return _CHAT_TEMPLATES.get(host)


def _password_of(url: str) -> str:
    """The password part of the user info, references included (masked parsing loses them)."""
    netloc = url.split("://", 1)[-1].split("/", 1)[0]
    userinfo = netloc.rpartition("@")[0]
    return userinfo.partition(":")[2]


def walk_strings(value: Any, loc: tuple[str | int, ...] = ()) -> Iterable[tuple[tuple[str | int, ...], str]]:
    """Every string leaf of a JSON-like value, with its location."""
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from walk_strings(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk_strings(item, (*loc, index))
