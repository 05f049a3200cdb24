"""The storage a file integration writes to: opening it (fsspec), and putting objects atomically.

Opening resolves the URL and storage options, checks the endpoints an integration names itself
against the private-network rule, and bounds S3's own retries by the integration's timeout.
Objects are published whole: object stores (S3, GCS, Azure) do that when an upload completes;
on file systems the object is written under a hidden temporary name in the same directory,
synced, then renamed. Everything here is blocking: FileSink runs it on its own threads.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import fsspec

from reconciler.manifests.models import FileConfig
from reconciler.registry import Resolved, substitute
from reconciler.sinks.files.errors import FileSinkError
from reconciler.sinks.ssrf import is_public

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
        for value in self.secrets:
            text = text.replace(value, "***")
        return text


def open_target(config: FileConfig, resolved: Resolved | None, timeout: float) -> Target:
    """The integration's filesystem, from its resolved URL and storage options."""
    url = substitute(config.url, resolved)
    options = _substituted(config.storageOptions, resolved)
    protocol = url.split("://", 1)[0]
    if protocol in ("s3", "s3a"):
        # fail within the integration's timeout rather than botocore's minutes of retries
        config_kwargs = dict(options.get("config_kwargs") or {})
        config_kwargs.setdefault("connect_timeout", min(timeout, 10.0))
        config_kwargs.setdefault("read_timeout", timeout)
        config_kwargs.setdefault("retries", {"max_attempts": 2})
        options["config_kwargs"] = config_kwargs
    options.setdefault("skip_instance_cache", True)  # one filesystem per integration generation
    if not config.allowPrivateNetwork:
        for endpoint in _endpoints(options):
            _require_public(endpoint)
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


def _endpoints(options: dict[str, Any]) -> list[str]:
    """Storage endpoints an integration names itself (S3-compatible services): outbound
    requests like any other, so the private-address rule applies to them."""
    client_kwargs = options.get("client_kwargs")
    found = [
        options.get("endpoint_url"),
        client_kwargs.get("endpoint_url") if isinstance(client_kwargs, dict) else None,
    ]
    return [value for value in found if isinstance(value, str) and value]


def _require_public(endpoint: str) -> None:
    host = urlsplit(endpoint).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)} if host else set()
    except OSError:
        return  # unresolvable: the storage call fails with its own error
    if any(not is_public(str(address)) for address in addresses):
        raise FileSinkError(
            "storageOptions.endpoint_url resolves to a private, loopback or link-local address; "
            "set config.allowPrivateNetwork: true to allow it"
        )


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
