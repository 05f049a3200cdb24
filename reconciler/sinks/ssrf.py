"""Outbound requests refuse private, loopback and link-local addresses unless allowed.

An endpoint can come from a pull request (or from a secret reference nobody reviews), so it
must not reach the daemon's own network (cloud metadata at 169.254.169.254, an admin port on
localhost) by default. The policy (which addresses are public) lives in
reconciler/manifests/addresses.py, shared with `reconciler validate`; this module enforces it
where connections are made, in three places, each covering what the one before cannot:

- `check_url` before a request: the URL's host as aiohttp reads it (yarl, IDNA/NFKC), so
  `http://127。0。0。1/` is refused with a clear message before credentials are fetched;
- `PublicOnlyResolver`: names resolve only to public addresses, and what it returns is what
  aiohttp connects to (no second lookup: DNS rebinding gains nothing);
- `public_socket`, the connector's socket factory: the address of every socket aiohttp opens,
  IP literals included. aiohttp never asks the resolver about a host that is already an IP
  address, so this is the check that holds whatever the URL looked like, on every redirect hop.

`session(allow_private)` builds aiohttp sessions with all of it; `allowPrivateNetwork: true`
gets a plain connector.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from reconciler.manifests.addresses import is_public, non_public_host

ALLOW_HINT = "set config.allowPrivateNetwork: true to allow it"


class BlockedAddress(OSError):
    """The target is, or resolves to, an address integrations may not reach."""


def check_url(url: str) -> None:
    """Refuse a URL whose host, read as the HTTP client reads it, is a non-public address or a
    loopback name. Names are left to the resolver: they are checked when connecting."""
    try:
        reason = non_public_host(url)
    except ValueError:
        raise BlockedAddress("the URL has no host the client can use") from None
    if reason is not None:
        raise BlockedAddress(f"{reason}; {ALLOW_HINT}")


def check_address(address: str) -> None:
    """Refuse one resolved or literal address that is not public."""
    if not is_public(address):
        raise BlockedAddress(f"{address} is a private, loopback or link-local address; {ALLOW_HINT}")


def public_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """The connector's socket factory: a socket only for a public peer address.

    aiohttp (through aiohappyeyeballs) calls it with each address it is about to connect to,
    after its resolver, or without one for an IP literal: the address checked is the address
    connected to."""
    family, type_, proto, _, sockaddr = addr_info
    check_address(str(sockaddr[0]))
    return socket.socket(family=family, type=type_, proto=proto)


class PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp's default, then drops every non-public address.

    The inner resolver is made on first use: aiohttp's threaded resolver binds the running
    loop, and a storage client (s3fs) may build its connector outside of the loop it runs on."""

    def __init__(self) -> None:
        self._inner: AbstractResolver | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = DefaultResolver()
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if is_public(r["host"])]
        if not allowed:
            raise BlockedAddress(f"{host} resolves only to private, loopback or link-local addresses; {ALLOW_HINT}")
        return allowed

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def connector_args(allow_private: bool) -> dict[str, Any]:
    """What a `TCPConnector` needs to enforce the policy (empty when private targets are allowed)."""
    if allow_private:
        return {}
    return {"resolver": PublicOnlyResolver(), "socket_factory": public_socket}


def session(allow_private: bool, **connector_kwargs: Any) -> aiohttp.ClientSession:
    """A client session whose every connection is checked (unless `allow_private`).

    No cookies: each request stands alone. No proxies from the environment: a proxy would be
    the only peer the guard sees."""
    connector = aiohttp.TCPConnector(**connector_kwargs, **connector_args(allow_private))
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)


def blocked_cause(exc: BaseException) -> BlockedAddress | None:
    """The BlockedAddress behind a client library's error, if one is: aiohttp keeps it as the
    cause (`os_error`) of its connector errors, storage clients wrap those again."""
    for link in _chain(exc):
        if isinstance(link, BlockedAddress):
            return link
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        link = pending.pop()
        if id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        nested = [link.__cause__, link.__context__, getattr(link, "os_error", None)]
        nested += list(getattr(link, "kwargs", {}).values()) if isinstance(getattr(link, "kwargs", None), dict) else []
        pending += [n for n in nested if isinstance(n, BaseException)]


__all__ = [
    "ALLOW_HINT",
    "BlockedAddress",
    "PublicOnlyResolver",
    "blocked_cause",
    "check_address",
    "check_url",
    "connector_args",
    "is_public",
    "public_socket",
    "session",
]
