"""Which hosts a declared URL may name without `allowPrivateNetwork`: the address policy that
`reconciler validate` and the sinks' SSRF guard (reconciler/sinks/ssrf.py) share.

A host is judged as the HTTP client will use it, not as it is written. aiohttp parses URLs
with yarl, which maps a host through IDNA (NFKC): 127.0.0.1 written with ideographic full
stops (U+3002), fullwidth digits and dots (U+FF11, U+FF0E) or circled digits (U+2460) becomes
`127.0.0.1`, and aiohttp then connects to that literal without asking a resolver. So every
check here starts from `url_host`, yarl's reading of the URL, never from `urllib.parse`, which
keeps the written form.

Nothing here resolves a name: validation runs in CI, where DNS says nothing about production.
Names are checked where the connection is made (reconciler/sinks/ssrf.py).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

import yarl

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Names that are loopback by definition (RFC 6761, and the /etc/hosts conventions of Linux
# distributions): judged like 127.0.0.1 without a lookup.
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

# Not public whatever the Python version's `is_global` table says (it changed in 3.12.4 and
# 3.11.10): shared address space (carrier-grade NAT), IETF protocol assignments, the 6to4 relay
# anycast block, and 6to4 (2002::/16) which embeds an IPv4 address a relay would reach.
NOT_PUBLIC = tuple(
    ipaddress.ip_network(block) for block in ("100.64.0.0/10", "192.0.0.0/24", "192.88.99.0/24", "2002::/16")
)
# NAT64's well-known prefix carries an IPv4 address in its last 32 bits: judge that address.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

# The legacy numeric IPv4 forms that inet_aton and getaddrinfo accept (2130706433, 0x7f.1,
# 127.1, 0177.0.0.1): yarl keeps them as names, a resolver maps them onto an address.
_NUMERIC_IPV4 = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")


def url_host(url: str) -> str:
    """The URL's host exactly as aiohttp resolves or connects to it (`raw_host`: yarl's
    IDNA/NFKC reading, lower case, IPv6 without brackets, a name in its xn-- form).
    ValueError when there is none or yarl refuses it."""
    host = yarl.URL(url).raw_host
    if not host:
        raise ValueError("the URL has no host")
    return host


def address_of(host: str) -> Address | None:
    """The IP address a host (as `url_host` gives it) stands for without a lookup: an IPv4 or
    IPv6 literal (a zone id and one trailing dot dropped) or a legacy numeric IPv4 form."""
    host = host.strip("[]").split("%", 1)[0].lower()
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def is_public(address: str | Address) -> bool:
    """Whether an integration may reach the address without `allowPrivateNetwork`.

    `ipaddress`'s `is_global`, minus multicast, reserved blocks and `NOT_PUBLIC`. An
    IPv4-mapped IPv6 address (::ffff:10.0.0.1) and a NAT64 one are judged by the IPv4
    address they carry: the kernel or the gateway connects to that one."""
    if isinstance(address, str):
        address = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address in NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if any(address in block for block in NOT_PUBLIC if block.version == address.version):
        return False
    return address.is_global and not address.is_multicast and not address.is_reserved


def is_local_name(host: str) -> bool:
    """localhost and the names that mean it (RFC 6761: anything under .localhost)."""
    host = host.rstrip(".").lower()
    return host in LOCAL_NAMES or host.endswith(".localhost")


def non_public_host(url: str) -> str | None:
    """Why the URL's host is not public, judged without a lookup, or None (a public address,
    or a name: those are checked when connecting). ValueError when the URL has no usable host.

    The reason names the host as the client reads it, and as written when that differs, so
    that `127。0。0。1` is recognisable in the message."""
    host = url_host(url)
    written = _written_host(url)
    shown = host if written in (None, host) else f"{host} (written {written})"
    if is_local_name(host):
        return f"{shown} is a loopback name"
    address = address_of(host)
    if address is None or is_public(address):
        return None
    if str(address) != host.strip("[]"):
        shown += f", that is {address},"  # 2130706433, 0x7f.1: say which address it stands for
    return f"{shown} is {_kind(address)} address"


def _written_host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _kind(address: Address) -> str:
    """How to call a non-public address in a message."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return "an IPv4-mapped " + _kind(address.ipv4_mapped).split(" ", 1)[1]
    if address.is_loopback:
        return "a loopback"
    if address.is_link_local:
        return "a link-local"
    if address.is_unspecified:
        return "an unspecified"
    if address.is_multicast:
        return "a multicast"
    return "a private or reserved"


__all__ = [
    "LOCAL_NAMES",
    "NOT_PUBLIC",
    "Address",
    "address_of",
    "is_local_name",
    "is_public",
    "non_public_host",
    "url_host",
]
