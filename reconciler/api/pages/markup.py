"""Markup the pages share: times, revisions, status words, conditions, and the rows of the list.

The list's rows are written in Python rather than in a template: the list shows every
integration, and a thousand rows through Jinja2 macros cost several times the JSON list.
Every value goes through markupsafe's escape. Times are `<time>` elements in UTC with their
RFC 3339 value in `datetime` and `title`; the page's script shows them in the viewer's zone."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape


def rfc3339(value: Any) -> str | None:
    """A time (epoch seconds or an RFC 3339 string) as RFC 3339 in UTC; None for none."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return str(value)


def time_element(value: Any) -> Markup:
    """`<time>` in UTC, with the RFC 3339 value on hover; the page's script rewrites the text
    in the viewer's zone."""
    text = rfc3339(value)
    if text is None:
        return Markup('<span class="muted">never</span>')
    try:
        shown = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        shown = text
    quoted = escape(text)
    return Markup(f'<time datetime="{quoted}" title="{quoted}">{escape(shown)}</time>')


def short_hash(value: str) -> str:
    """A content hash (`sha256:...`) as its first ten hex digits."""
    return value.rpartition(":")[2][:10]


def percent(value: float | None) -> str:
    return "\u2013" if value is None else f"{value * 100:.1f} %"  # an en dash: no figure


NONE = Markup('<span class="muted">none</span>')


def e(value: Any) -> str:
    """A value escaped for HTML text and quoted attributes. The markup below is built as plain
    strings and made Markup once: Markup.format and Markup objects per value cost more than
    the rest of a thousand rows together."""
    return html.escape(str(value))


def status_badge(word: str) -> Markup:
    return Markup(f'<span class="status s-{e(word)}">{e(word)}</span>')


def revision(rev: dict[str, Any] | None) -> Markup:
    """A revision: its commit (or that there is none), whether the tree was dirty, its content hash."""
    if not rev:
        return NONE
    commit = rev.get("commit")
    html = f'<code title="{e(commit)}">{e(commit[:12])}</code>' if commit else '<span class="muted">no commit</span>'
    if rev.get("dirty"):
        html += ' <span class="tag warn" title="the working tree had changes not committed">dirty</span>'
    digest = rev.get("contentHash")
    if digest:
        html += f' <code class="muted" title="content hash {e(digest)}">{e(short_hash(digest))}</code>'
    return Markup(f'<span class="rev">{html}</span>')


def conditions_short(conditions: list[dict[str, Any]]) -> Markup:
    items = []
    for c in conditions:
        status = str(c.get("status", ""))
        message = c.get("message")
        tail = f': <span class="msg">{e(message)}</span>' if message else ""
        items.append(
            f'<li class="c-{e(status.lower())}"><b>{e(c.get("type", ""))}</b>={e(status)} '
            f'<span class="reason">{e(c.get("reason", ""))}</span>{tail}</li>'
        )
    return Markup(f'<ul class="conds">{"".join(items)}</ul>')


def list_rows(rows: list[dict[str, Any]]) -> Markup:
    """The table body of the list."""
    if not rows:
        return Markup('<tr><td colspan="7" class="muted">No integration matches.</td></tr>')
    return Markup("\n".join(_row(r) for r in rows))


def _row(r: dict[str, Any]) -> str:
    labels = "".join(f'<span class="tag label">{e(k)}={e(v)}</span>' for k, v in r["labels"].items())
    drift = r.get("drift")
    drift_html = ""
    if drift:
        why = f": \u201c{e(drift['reason'])}\u201d" if drift.get("reason") else ""
        drift_html = f'<div class="drift">suspended by {e(drift["by"])}{why}</div>'
    source = e(r.get("sourceFile") or "\u2013") + (f":{r['sourceLine']}" if r.get("sourceLine") else "")
    queue = r["queue"]
    if r["attempts24h"]:
        sends = f"{r['attempts24h']} sent, {percent(r['successRate24h'])} ok"
    else:
        sends = '<span class="muted">no sends</span>'
    dead = f', <b class="bad">{queue["dead"]} dead</b>' if queue.get("dead") else ""
    last = r.get("lastSend")
    if last:
        code = f" ({last['statusCode']})" if last.get("statusCode") else ""
        last_html = f"{time_element(last['at'])}<br>{e(last['outcome'])}{code}"
    else:
        last_html = '<span class="muted">none in 24 h</span>'
    ident = e(r["id"])
    return (
        f'<tr id="row-{ident}" data-status="{e(r["status"])}">'
        f'<td data-label="Integration"><a href="/integrations/{e(quote(r["id"], safe=""))}">'
        f"<b>{e(r['name'] or r['id'])}</b></a><br><code>{ident}</code> "
        f'<span class="tag">{e(r["type"] or "?")}</span> {labels}</td>'
        f'<td data-label="Status">{status_badge(r["status"])} {drift_html}</td>'
        f'<td data-label="Conditions">{conditions_short(r["conditions"])}</td>'
        f'<td data-label="Source"><code>{source}</code></td>'
        f'<td data-label="Revisions">applied {revision(r["lastAppliedRevision"])}<br>'
        f"attempted {revision(r['lastAttemptedRevision'])}</td>"
        f'<td data-label="Deliveries 24 h">{sends}<br>{queue.get("depth", 0)} waiting{dead}</td>'
        f'<td data-label="Last attempt">{last_html}</td></tr>'
    )
