"""Outbound requests refuse private, loopback and link-local addresses unless allowed.

An endpoint can come from a pull request, so it must not reach the daemon's own network
(cloud metadata at 169.254.169.254, an admin port on localhost) by default. The check runs on
the addresses a name resolves to, at connection time, so DNS rebinding does not get around it.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver


class BlockedAddress(OSError):
    """The target resolves to an address integrations may not reach."""


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


def check_literal_host(host: str) -> None:
    """A URL whose host is an IP address never reaches the resolver: check it here."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return
    if not is_public(host.strip("[]")):
        raise BlockedAddress(
            f"{host} is a private, loopback or link-local address; set config.allowPrivateNetwork: true to allow it"
        )


class PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp's default, then drops every non-public address."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if is_public(r["host"])]
        if not allowed:
            raise BlockedAddress(
                f"{host} resolves only to private, loopback or link-local addresses; "
                "set config.allowPrivateNetwork: true to allow it"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()


__all__ = ["BlockedAddress", "PublicOnlyResolver", "check_literal_host", "is_public"]
