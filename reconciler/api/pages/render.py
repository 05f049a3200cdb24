"""HTML answers of the status page: the Jinja2 environment, its filters, the headers every page sends.

Templates are rendered off the event loop (a list of 1,000 integrations takes milliseconds
the intake should not wait for). The markup they share is in markup.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from importlib import resources
from typing import Any

import jinja2
from starlette.responses import HTMLResponse, Response

from reconciler.api.pages.markup import percent, revision, short_hash, status_badge, time_element

# No inline script and no script from elsewhere: the page's one script is served by the daemon.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",  # what an admin saw is not kept by the browser or a proxy
}
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def _load_static() -> dict[str, tuple[bytes, str, str]]:
    """name -> (content, media type, version) of every file under static/, read once."""
    found = {}
    for entry in resources.files("reconciler.api.pages").joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in STATIC_TYPES:
            content = entry.read_bytes()
            found[entry.name] = (content, STATIC_TYPES[suffix], hashlib.sha256(content).hexdigest()[:12])
    return found


STATIC = _load_static()


def asset_url(name: str) -> str:
    """A static file's URL, versioned by its content so browsers may keep it for good."""
    return f"/static/{name}?v={STATIC[name][2]}"


def static_response(name: str) -> Response | None:
    found = STATIC.get(name)
    if found is None:
        return None
    content, media_type, version = found
    headers = {
        **SECURITY_HEADERS,
        "Cache-Control": "public, max-age=31536000, immutable",
        "ETag": f'"{version}"',
    }
    return Response(content, media_type=media_type, headers=headers)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reconciler.api.pages", "templates"),
        autoescape=True,  # whitespace kept: it is what separates inline elements
    )
    env.filters["when"] = time_element
    env.filters["percent"] = percent
    env.filters["short_hash"] = short_hash
    env.globals["asset"] = asset_url
    env.globals["status_badge"] = status_badge
    env.globals["revision"] = revision
    return env


ENVIRONMENT = _environment()


async def page(template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """A template rendered off the event loop, with the page's security headers."""
    html = await asyncio.to_thread(ENVIRONMENT.get_template(template).render, **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def secured(response: Response) -> Response:
    """A response of the page (a redirect) with the page's security headers."""
    response.headers.update(SECURITY_HEADERS)
    return response


__all__ = ["CONTENT_SECURITY_POLICY", "page", "secured", "static_response"]
