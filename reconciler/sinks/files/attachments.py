"""Attachments: the file of a `note.uploaded` event, copied next to its record (`copyAttachments`).

The file is fetched over HTTP(S) with the SSRF rules of the HTTP sink (reconciler/sinks/ssrf.py):
unless `allowPrivateNetwork` is set, each hop's URL is checked as aiohttp reads its host (so
`127。0。0。1` is loopback), and the connector refuses every connection to a non-public address;
redirects are followed by hand so each hop is vetted with a clear message. The body is capped at
`maxAttachmentSize`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from reconciler.manifests.models import FileConfig, parse_size
from reconciler.sinks import ssrf
from reconciler.sinks.files.errors import AttachmentError
from reconciler.sinks.files.naming import UNSAFE_NAME, expand, safe
from reconciler.sinks.files.target import Target
from reconciler.sinks.ssrf import BlockedAddress

MAX_REDIRECTS = 5
ATTACHMENTS_DIR = "attachments"


class Attachments:
    """Fetches attachments for the file sink, over two connection pools: one that connects only
    to public addresses, one without that rule (for `allowPrivateNetwork: true`)."""

    def __init__(self) -> None:
        self._public: aiohttp.ClientSession | None = None
        self._private: aiohttp.ClientSession | None = None

    async def copy(
        self,
        integration_id: str,
        config: FileConfig,
        target: Target,
        envelope: dict[str, Any],
        put: Callable[[str, bytes], Awaitable[None]],
    ) -> dict[str, Any]:
        """Fetch the event's data.fileUrl and `put` it beside the record; what the record says of it."""
        data = envelope.get("data") or {}
        url = data.get("fileUrl")
        if not isinstance(url, str) or not url:
            raise AttachmentError(f"event {envelope['id']} has no data.fileUrl to copy")
        cap = parse_size(config.maxAttachmentSize)
        body, content_type = await self._fetch(url, cap, config.allowPrivateNetwork, target.timeout)
        name = attachment_name(expand(config.path, envelope, integration_id), envelope)
        await put(name, body)
        found: dict[str, Any] = {"path": name, "url": target.url(name), "size": len(body)}
        if content_type:
            found["contentType"] = content_type
        return found

    async def close(self) -> None:
        """Close both pools; a later copy opens them again."""
        for session in (self._public, self._private):
            if session is not None:
                await session.close()
        self._public = self._private = None

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
                    ssrf.check_url(url)
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
                blocked = ssrf.blocked_cause(exc)
                if blocked is not None:
                    raise AttachmentError(f"the attachment was not fetched: {blocked}") from None
                raise AttachmentError(f"fetching the attachment from {host} failed: {type(exc).__name__}") from None
        raise AttachmentError(f"the attachment's URL redirected more than {MAX_REDIRECTS} times")

    def _session(self, allow_private: bool) -> aiohttp.ClientSession:
        if allow_private:
            if self._private is None:
                self._private = ssrf.session(True, limit=32, ttl_dns_cache=60)
            return self._private
        if self._public is None:
            self._public = ssrf.session(False, limit=32, ttl_dns_cache=60)
        return self._public


def _too_large(length: int | None, cap: int) -> str:
    size = f" of {length} bytes" if length is not None else ""
    return f"the attachment{size} is larger than maxAttachmentSize ({cap} bytes); raise it, then replay"


def attachment_name(record_name: str, envelope: dict[str, Any]) -> str:
    """Beside the record: `<record's directory>/attachments/<event id>/<file name>`."""
    directory = record_name.rpartition("/")[0]
    data = envelope.get("data") or {}
    name = data.get("fileName") if isinstance(data.get("fileName"), str) else None
    if not name:
        name = urlsplit(str(data.get("fileUrl", ""))).path.rsplit("/", 1)[-1]
    name = UNSAFE_NAME.sub("_", name).lstrip(".")[:200] or "file"
    base = f"{ATTACHMENTS_DIR}/{safe(str(envelope['id']))}/{name}"
    return f"{directory}/{base}" if directory else base
