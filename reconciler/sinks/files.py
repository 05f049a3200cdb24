"""The file sink of `file` integrations, on fsspec: events as JSON Lines or CSV objects.

Objects are immutable: each delivered unit (one event, or one batch) writes its own objects,
named from the `path` pattern with the unit's id before the extension
(`exports/grade.published/2024-01-15.bat_0190a4....jsonl`). The unit's id is stable across
retries, so a retried unit overwrites what an interrupted try may have left instead of adding
a duplicate. A unit whose records for one name exceed `rolloverSize` is split into numbered
parts (`...-001.jsonl`, `...-002.jsonl`). A pattern with `{id}` names one object per event and is
used as it stands. docs/decisions.md says why objects are not appended to.

Writes are atomic: object stores (S3, GCS, Azure) publish an object whole when its upload
completes; on file systems the object is written under a hidden temporary name in the same
directory, synced, then renamed. `note.uploaded` events can have their file copied next to the
record (`copyAttachments`), fetched over HTTP(S) with the SSRF rules of the HTTP sink and a size
cap. fsspec is blocking: its calls run on the sink's own threads, bounded by `config.timeout`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import csv
import io
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp
import fsspec

from reconciler.manifests.durations import parse_duration
from reconciler.manifests.models import FileConfig, parse_size
from reconciler.registry import AppliedIntegration, Resolved, substitute
from reconciler.sinks import RecordSink, SinkResult, config_of
from reconciler.sinks.ssrf import BlockedAddress, PublicOnlyResolver, check_literal_host, is_public

T = TypeVar("T")

THREADS = 16  # blocking storage calls in flight, across file integrations
EXCERPT_CHARS = 1024
DEFAULT_CSV_COLUMNS = ("id", "event", "timestamp", "data")
# Object stores publish an upload whole; other file systems get a temporary name and a rename.
ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "memory"})
MAX_REDIRECTS = 5
ATTACHMENTS_DIR = "attachments"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class FileSinkError(Exception):
    """A problem in the unit's data or the integration's config: retrying as is will not help."""


class AttachmentError(FileSinkError):
    """The attachment of a note.uploaded event could not be copied."""


@dataclass(frozen=True)
class Target:
    """One integration generation's storage: the filesystem and what every write shares."""

    fs: Any
    root: str  # the URL's path as the filesystem names it, without a trailing slash
    atomic_put: bool
    local: bool
    timeout: float
    secrets: tuple[str, ...]  # resolved secret values, kept out of errors and excerpts

    def full(self, name: str) -> str:
        return f"{self.root}/{name}" if self.root else name

    def url(self, name: str) -> str:
        return str(self.fs.unstrip_protocol(self.full(name)))

    def scrub(self, text: str) -> str:
        for value in self.secrets:
            text = text.replace(value, "***")
        return text


@dataclass(frozen=True)
class Planned:
    name: str  # relative to the target's root
    body: bytes
    records: int


class FileSink(RecordSink):
    def __init__(self) -> None:
        self._targets: dict[tuple[str, int, str], Target] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="file-sink")
        self._public: aiohttp.ClientSession | None = None
        self._private: aiohttp.ClientSession | None = None

    # --- the RecordSink protocol ---------------------------------------------------------------

    async def write(
        self, integration: AppliedIntegration, envelopes: list[dict[str, Any]], message_id: str
    ) -> SinkResult:
        started = time.perf_counter()
        config = config_of(integration, FileConfig)
        target: Target | None = None
        try:
            target = await self.target(integration)
            attachments: dict[str, dict[str, Any]] = {}
            if config.copyAttachments:
                for envelope in envelopes:
                    if envelope.get("event") == "note.uploaded":
                        attachments[envelope["id"]] = await self._copy_attachment(
                            integration.id, config, target, envelope
                        )
            objects = plan(integration.id, config, envelopes, message_id, attachments)
            await asyncio.gather(*(self.blocking(target, put_object, target, o.name, o.body) for o in objects))
        except Exception as exc:
            return _failure(exc, target, config, started)
        shown = ", ".join(o.name for o in objects)
        copied = f"; {len(attachments)} attachment(s) copied" if attachments else ""
        excerpt = f"wrote {len(envelopes)} record(s) in {len(objects)} object(s): {shown}{copied}"
        return SinkResult.success(target.scrub(excerpt)[:EXCERPT_CHARS], started)

    async def check(self, integration: AppliedIntegration) -> SinkResult:
        """Reach the storage and look at the target (and the source prefix), writing nothing."""
        started = time.perf_counter()
        config = config_of(integration, FileConfig)
        target: Target | None = None
        try:
            target = await self.target(integration)
            lines = [await self.blocking(target, inspect, target, "")]
            if config.source:
                lines.append(await self.blocking(target, inspect, target, config.source.strip("/")))
        except Exception as exc:
            return _failure(exc, target, config, started)
        excerpt = target.scrub("; ".join(lines))[:EXCERPT_CHARS]
        return SinkResult.success(excerpt, started)

    async def close(self) -> None:
        for session in (self._public, self._private):
            if session is not None:
                await session.close()
        self._public = self._private = None
        self._targets.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- storage ---------------------------------------------------------------------------------

    async def target(self, integration: AppliedIntegration) -> Target:
        resolved = integration.resolved
        key = (integration.id, integration.generation, resolved.fingerprint if resolved is not None else "")
        target = self._targets.get(key)
        if target is None:
            config = config_of(integration, FileConfig)
            timeout = parse_duration(config.timeout)
            loop = asyncio.get_running_loop()
            target = await asyncio.wait_for(
                loop.run_in_executor(self._executor, open_target, config, resolved, timeout), timeout
            )
            for stale in [k for k in self._targets if k[0] == integration.id]:
                del self._targets[stale]
            self._targets[key] = target
        return target

    async def blocking(self, target: Target, call: Callable[..., T], *args: Any) -> T:
        """A blocking storage call on the sink's threads, bounded by the integration's timeout.
        A call that times out may still finish later: names are stable, so a retry overwrites it."""
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(self._executor, call, *args), target.timeout)

    # --- attachments -----------------------------------------------------------------------------

    async def _copy_attachment(
        self, integration_id: str, config: FileConfig, target: Target, envelope: dict[str, Any]
    ) -> dict[str, Any]:
        data = envelope.get("data") or {}
        url = data.get("fileUrl")
        if not isinstance(url, str) or not url:
            raise AttachmentError(f"event {envelope['id']} has no data.fileUrl to copy")
        cap = parse_size(config.maxAttachmentSize)
        body, content_type = await self._fetch(url, cap, config.allowPrivateNetwork, target.timeout)
        name = attachment_name(expand(config.path, envelope, integration_id), envelope)
        await self.blocking(target, put_object, target, name, body)
        found: dict[str, Any] = {"path": name, "url": target.url(name), "size": len(body)}
        if content_type:
            found["contentType"] = content_type
        return found

    async def _fetch(self, url: str, cap: int, allow_private: bool, timeout: float) -> tuple[bytes, str | None]:
        """GET the attachment, following redirects by hand so that each hop is vetted."""
        session = self._session(allow_private)
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            host = parts.hostname or ""
            if parts.scheme not in ("http", "https") or not host:
                raise AttachmentError("the attachment's fileUrl is not an absolute http(s) URL")
            try:
                if not allow_private:
                    check_literal_host(host)
                async with session.get(
                    url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout)
                ) as response:
                    if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                        url = urljoin(url, response.headers["Location"])
                        continue
                    if response.status != 200:
                        raise AttachmentError(f"the attachment's server {host} answered HTTP {response.status}")
                    if response.content_length is not None and response.content_length > cap:
                        raise AttachmentError(_too_large(response.content_length, cap))
                    body = await response.content.read(cap + 1)
                    while len(body) <= cap:
                        chunk = await response.content.read(cap + 1 - len(body))
                        if not chunk:
                            break
                        body += chunk
                    if len(body) > cap:
                        raise AttachmentError(_too_large(None, cap))
                    return body, response.headers.get("Content-Type")
            except BlockedAddress as exc:
                raise AttachmentError(f"the attachment was not fetched: {exc}") from None
            except TimeoutError:
                raise AttachmentError(f"fetching the attachment from {host} timed out") from None
            except aiohttp.ClientError as exc:
                cause = exc.__cause__ or getattr(exc, "os_error", None)
                if isinstance(cause, BlockedAddress):
                    raise AttachmentError(f"the attachment was not fetched: {cause}") from None
                raise AttachmentError(f"fetching the attachment from {host} failed: {type(exc).__name__}") from None
        raise AttachmentError(f"the attachment's URL redirected more than {MAX_REDIRECTS} times")

    def _session(self, allow_private: bool) -> aiohttp.ClientSession:
        if allow_private:
            if self._private is None:
                self._private = _client(None)
            return self._private
        if self._public is None:
            self._public = _client(PublicOnlyResolver())
        return self._public


def _client(resolver: PublicOnlyResolver | None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=32, resolver=resolver, ttl_dns_cache=60)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)


def _too_large(length: int | None, cap: int) -> str:
    size = f" of {length} bytes" if length is not None else ""
    return f"the attachment{size} is larger than maxAttachmentSize ({cap} bytes); raise it, then replay"


def _failure(exc: Exception, target: Target | None, config: FileConfig, started: float) -> SinkResult:
    endpoint_failure = True
    if isinstance(exc, FileSinkError):
        message, endpoint_failure = str(exc), False
    elif isinstance(exc, TimeoutError):
        message = f"the storage did not answer within {config.timeout}"
    elif isinstance(exc, FileNotFoundError):
        message, endpoint_failure = f"not found: {exc}", False
    elif isinstance(exc, PermissionError):
        message, endpoint_failure = f"permission denied: {exc}", False
    elif isinstance(exc, ImportError | ValueError | TypeError):
        # no backend for the URL's scheme, storage options the backend refuses, data JSON cannot hold
        message, endpoint_failure = f"{type(exc).__name__}: {exc}", False
    else:
        message = f"{type(exc).__name__}: {exc}"
    message = message[:500]
    if target is not None:
        message = target.scrub(message)
    return SinkResult.failure(message, started, endpoint_failure=endpoint_failure)


# --- opening a target (blocking) -----------------------------------------------------------------


def open_target(config: FileConfig, resolved: Resolved | None, timeout: float) -> Target:
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


# --- writing (blocking) ----------------------------------------------------------------------------


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


# --- planning a unit's objects ----------------------------------------------------------------------


def plan(
    integration_id: str,
    config: FileConfig,
    envelopes: list[dict[str, Any]],
    message_id: str,
    attachments: dict[str, dict[str, Any]] | None = None,
) -> list[Planned]:
    """The objects one unit writes: records grouped by expanded name, split at rolloverSize."""
    attachments = attachments or {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for envelope in envelopes:
        groups.setdefault(expand(config.path, envelope, integration_id), []).append(envelope)
    rollover = parse_size(config.rolloverSize)
    per_event = "{id}" in config.path
    objects: list[Planned] = []
    for name, members in groups.items():
        records = [record(config, e, attachments.get(e["id"])) for e in members]
        parts = _split(config, records, rollover)
        for number, (body, count) in enumerate(parts, start=1):
            if per_event and len(parts) == 1:
                final = name
            else:
                final = part_name(name, message_id, number if len(parts) > 1 else None)
            objects.append(Planned(final, body, count))
    return objects


def expand(pattern: str, envelope: dict[str, Any], integration_id: str) -> str:
    moment = _moment(envelope.get("timestamp"))
    values = {
        "event": _safe(str(envelope.get("event", "unknown"))),
        "date": moment.strftime("%Y-%m-%d"),
        "year": moment.strftime("%Y"),
        "month": moment.strftime("%m"),
        "day": moment.strftime("%d"),
        "hour": moment.strftime("%H"),
        "id": _safe(str(envelope.get("id", ""))),
        "integration": integration_id,
    }
    return re.sub(r"\{([a-z]+)\}", lambda m: values[m.group(1)], pattern)


def part_name(name: str, message_id: str, number: int | None) -> str:
    """`dir/2024-01-15.jsonl` -> `dir/2024-01-15.<unit id>[-NNN].jsonl`."""
    directory, _, base = name.rpartition("/")
    stem, dot, extension = base.rpartition(".")
    if not dot or not stem:
        stem, extension = base, ""
    suffix = f".{_safe(message_id)}" + (f"-{number:03d}" if number is not None else "")
    return f"{directory + '/' if directory else ''}{stem}{suffix}{'.' + extension if extension else ''}"


def attachment_name(record_name: str, envelope: dict[str, Any]) -> str:
    """Beside the record: `<record's directory>/attachments/<event id>/<file name>`."""
    directory = record_name.rpartition("/")[0]
    data = envelope.get("data") or {}
    name = data.get("fileName") if isinstance(data.get("fileName"), str) else None
    if not name:
        name = urlsplit(str(data.get("fileUrl", ""))).path.rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name).lstrip(".")[:200] or "file"
    base = f"{ATTACHMENTS_DIR}/{_safe(str(envelope['id']))}/{name}"
    return f"{directory}/{base}" if directory else base


def record(config: FileConfig, envelope: dict[str, Any], attachment: dict[str, Any] | None) -> dict[str, Any]:
    if config.mapping:
        return {column: field_value(envelope, path) for column, path in config.mapping.items()}
    shaped = {k: envelope.get(k) for k in DEFAULT_CSV_COLUMNS}
    if config.format == "csv" and config.copyAttachments:
        shaped["attachment"] = attachment["path"] if attachment else None
    elif attachment is not None:
        shaped["attachment"] = attachment
    return shaped


def field_value(envelope: dict[str, Any], path: str) -> Any:
    value: Any = envelope
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def csv_columns(config: FileConfig) -> list[str]:
    if config.mapping:
        return list(config.mapping)
    return [*DEFAULT_CSV_COLUMNS, *(["attachment"] if config.copyAttachments else [])]


def _split(config: FileConfig, records: list[dict[str, Any]], rollover: int) -> list[tuple[bytes, int]]:
    """Serialized parts of at most `rollover` bytes (a single larger record makes its own part)."""
    if config.format == "csv":
        columns = csv_columns(config)
        header = _csv_line(columns)
        lines = [_csv_line([_csv_cell(r.get(c)) for c in columns]) for r in records]
    else:
        header = b""
        lines = [
            (json.dumps(r, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode() for r in records
        ]
    parts: list[tuple[bytes, int]] = []
    current: list[bytes] = []
    size = len(header)
    for line in lines:
        if current and size + len(line) > rollover:
            parts.append((header + b"".join(current), len(current)))
            current, size = [], len(header)
        current.append(line)
        size += len(line)
    if current:
        parts.append((header + b"".join(current), len(current)))
    return parts


def _csv_line(cells: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(cells)
    return buffer.getvalue().encode()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _moment(timestamp: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(timestamp).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise FileSinkError(f"the event's timestamp {str(timestamp)[:40]!r} is not RFC 3339") from None


def _safe(text: str) -> str:
    """A path part from event data: no separators, no dot-dot, nothing a shell or URL minds."""
    cleaned = _UNSAFE_NAME.sub("_", text).strip(".")
    return cleaned or "_"
