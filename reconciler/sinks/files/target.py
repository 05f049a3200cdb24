"""The storage a file integration writes to: opening it (fsspec), and putting objects atomically.

Opening resolves the URL and storage options, checks the hosts an integration names itself (an
http(s)/ftp/sftp URL, `endpoint_url`) against the private-network rule, puts the SSRF guard
(reconciler/sinks/ssrf.py) into the storage client's own connections where the client lets us
(s3fs and fsspec's HTTP file system both connect through aiohttp), and bounds S3's own retries
by the integration's timeout.
Objects are published whole: object stores (S3, GCS, Azure) do that when an upload completes;
on file systems the object is written under a hidden temporary name in the same directory,
synced, then renamed. Everything here is blocking: FileSink runs it on its own threads.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import fsspec

from reconciler.manifests.addresses import address_of, url_host
from reconciler.manifests.models import HOST_PROTOCOLS, FileConfig, chains_file_systems
from reconciler.registry import Resolved, scrub, substitute
from reconciler.sinks import ssrf
from reconciler.sinks.files.errors import FileSinkError

# Object stores publish an upload whole; other file systems get a temporary name and a rename.
ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "memory"})


@dataclass(frozen=True)
class Target:
    """One integration generation's storage: the filesystem and what every write shares.

    FileSink.target opens and caches it; the source watcher lists the source prefix through it."""

    fs: Any
    root: str  # the URL's path as the filesystem names it, without a trailing slash
    atomic_put: bool
    local: bool
    timeout: float
    secrets: tuple[str, ...]  # resolved secret values, kept out of errors and excerpts

    def full(self, name: str) -> str:
        """A name relative to the root, as the filesystem names it."""
        return f"{self.root}/{name}" if self.root else name

    def url(self, name: str) -> str:
        """The object's URL, protocol included, as records and events show it."""
        return str(self.fs.unstrip_protocol(self.full(name)))

    def scrub(self, text: str) -> str:
        """The text with every resolved secret value replaced by ***."""
        return scrub(text, self.secrets)


def open_target(config: FileConfig, resolved: Resolved | None, timeout: float) -> Target:
    """The integration's filesystem, from its resolved URL and storage options."""
    url = substitute(config.url, resolved)
    options = _substituted(config.storageOptions, resolved)
    if chains_file_systems(url):
        # a reference may resolve to what validation refuses: fsspec would open each link itself
        raise FileSinkError("config.url (resolved) chains file systems with ::; write a single fsspec URL")
    protocol = url.split("://", 1)[0].lower()
    guard = not config.allowPrivateNetwork
    if guard:
        for what, endpoint in _endpoints(options):
            _require_public(endpoint, what)
        if protocol in HOST_PROTOCOLS:
            _require_public(url, "config.url")
    if protocol in ("s3", "s3a"):
        # fail within the integration's timeout rather than botocore's minutes of retries
        config_kwargs = dict(options.get("config_kwargs") or {})
        config_kwargs.setdefault("connect_timeout", min(timeout, 10.0))
        config_kwargs.setdefault("read_timeout", timeout)
        config_kwargs.setdefault("retries", {"max_attempts": 2})
        if guard:
            # aiobotocore's aiohttp connector gets the guard: each connection S3 makes is
            # checked, by the resolver for names and by the socket factory for every address
            config_kwargs["connector_args"] = _s3_connector_args()
        options["config_kwargs"] = config_kwargs
    if protocol in ("http", "https"):
        # fsspec's HTTP file system asks this for its session, redirects included
        options["get_client"] = _http_client(config.allowPrivateNetwork)
    # one filesystem per integration generation: a cached one may carry another's guard
    options["skip_instance_cache"] = True
    fs, root = fsspec.core.url_to_fs(url, **options)
    if protocol in ("s3", "s3a") and hasattr(fs, "retries"):
        fs.retries = 2  # s3fs's own retries of a failed call, on top of botocore's
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    secrets = tuple(sorted((v for v in (resolved.values.values() if resolved else ()) if len(v) >= 4), key=len))
    return Target(
        fs,
        str(root).rstrip("/"),
        atomic_put=bool(protocols & ATOMIC_PUT_PROTOCOLS),
        local="file" in protocols,
        timeout=timeout,
        secrets=secrets[::-1],
    )


def _endpoints(options: dict[str, Any]) -> list[tuple[str, str]]:
    """Storage endpoints an integration names itself (S3-compatible services), with where they
    were written: outbound requests like any other, so the private-address rule applies."""
    client_kwargs = options.get("client_kwargs")
    nested = client_kwargs.get("endpoint_url") if isinstance(client_kwargs, dict) else None
    found = [
        ("storageOptions.endpoint_url", options.get("endpoint_url")),
        ("storageOptions.client_kwargs.endpoint_url", nested),
    ]
    return [(what, value) for what, value in found if isinstance(value, str) and value]


def _require_public(url: str, what: str) -> None:
    """The open-time check of a URL the storage client will connect to: its host as the client
    reads it, then every address its name resolves to, all of which must be public.

    A name that does not resolve is refused, not waved through: it cannot be checked, and the
    lookup the client makes later may answer differently. This check is the early, clear one;
    the connections themselves are checked again where the client allows it (S3, HTTP)."""
    try:
        ssrf.check_url(url)
        host = url_host(url)
    except ssrf.BlockedAddress as exc:
        raise FileSinkError(f"{what}: {exc}") from None
    if address_of(host) is not None:
        return  # a public literal: nothing to resolve
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectionError(
            f"{what}: {host} does not resolve ({exc.strerror or exc}), so it cannot be checked against "
            "the private-network rule; fix the name or the daemon's resolver"
        ) from None
    for address in sorted({str(info[4][0]) for info in infos}):
        if not ssrf.is_public(address):
            raise FileSinkError(
                f"{what}: {host} resolves to {address}, a private, loopback or link-local address; {ssrf.ALLOW_HINT}"
            )


@functools.cache
def _aiobotocore_takes_socket_factory() -> bool:
    """Whether the installed aiobotocore passes `socket_factory` on to its connector (recent
    releases do; older ones refuse an argument they do not know)."""
    from aiobotocore.config import AioConfig

    try:
        AioConfig(connector_args={"socket_factory": None})
    except Exception:
        return False
    return True


def _s3_connector_args() -> dict[str, Any]:
    """The guard's connector arguments as the installed aiobotocore takes them: `resolver` always,
    `socket_factory` (the check of IP literals at connect time) where it is supported. A fresh
    resolver per filesystem: it binds the event loop the filesystem runs on."""
    args = ssrf.connector_args(False)
    if not _aiobotocore_takes_socket_factory():
        args.pop("socket_factory")
    return args


def _http_client(allow_private: bool) -> Callable[..., Awaitable[aiohttp.ClientSession]]:
    """fsspec's `get_client` for http(s) targets: our session, so that every connection it
    makes (each redirect hop too) goes through the SSRF guard unless private targets are allowed."""

    async def get_client(**_fsspec_kwargs: Any) -> aiohttp.ClientSession:
        # fsspec passes its loop and client_kwargs; the session is made on that loop, ours
        return ssrf.session(allow_private)

    return get_client


def _substituted(value: Any, resolved: Resolved | None) -> Any:
    if isinstance(value, str):
        return substitute(value, resolved)
    if isinstance(value, dict):
        return {k: _substituted(v, resolved) for k, v in value.items()}
    if isinstance(value, list):
        return [_substituted(v, resolved) for v in value]
    return value


def put_object(target: Target, name: str, body: bytes) -> None:
    """Publish one object whole: a reader sees the previous version or this one, never a part."""
    path = target.full(name)
    if target.atomic_put:
        target.fs.pipe_file(path, body)
    elif target.local:
        _put_local(path, body)
    else:  # sftp and other file systems: a temporary name beside it, then a rename
        directory, base = path.rsplit("/", 1) if "/" in path else ("", path)
        temporary = f"{directory}/.{base}.{os.urandom(6).hex()}.tmp" if directory else f".{base}.tmp"
        if directory:
            target.fs.makedirs(directory, exist_ok=True)
        target.fs.pipe_file(temporary, body)
        try:
            target.fs.mv(temporary, path)
        except BaseException:
            with contextlib.suppress(Exception):
                target.fs.rm_file(temporary)
            raise


def _put_local(path: str, body: bytes) -> None:
    directory, base = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), 0o644)
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # the rename itself is durable once the directory is synced
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    directory_fd = os.open(directory, flags)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def inspect(target: Target, prefix: str) -> str:
    """What the test endpoint reports about a prefix: its entries, or the nearest existing parent."""
    path = target.full(prefix) if prefix else target.root
    shown = prefix or "the target"
    if target.fs.exists(path):
        if target.fs.isdir(path):
            entries = target.fs.ls(path, detail=False)
            return f"{shown} is reachable and holds {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
        return f"{shown} is reachable (a file)"
    parent = path
    while "/" in parent.strip("/"):
        parent = parent.rstrip("/").rsplit("/", 1)[0]
        if target.fs.exists(parent):
            return f"{shown} does not exist yet; it is created by the first write"
    if target.local:
        return f"{shown} does not exist yet; it is created by the first write"
    raise FileNotFoundError(f"{shown}: neither it nor its bucket or container exists")
