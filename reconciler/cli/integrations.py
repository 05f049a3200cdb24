"""Operator commands on the registry of a running daemon: get, describe, suspend, resume, deliveries.

They read the routes the API already serves (GET /api/integrations[/{id}], its logs and
deliveries) and call its runtime overrides (POST .../deactivate, .../activate); nothing here
decides anything the API does not. `-o json|yaml` prints what the API answered.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from reconciler.cli.colour import Palette
from reconciler.logs import count

if TYPE_CHECKING:
    import httpx

EXIT_OK = 0
RECENT_ATTEMPTS = 10
DELIVERY_STATUSES = ("pending", "failed", "delivered", "dead")
Command = Callable[[str, str, Callable[[argparse.Namespace, "httpx.Client"], int]], argparse.ArgumentParser]
Call = Callable[..., "httpx.Response"]


def add_commands(command: Command, call: Call) -> None:
    """Register the commands through `command` (client.add_commands' factory); `call` sends a request."""

    def get(args: argparse.Namespace, client: httpx.Client) -> int:
        return _get(args, client, call)

    def describe(args: argparse.Namespace, client: httpx.Client) -> int:
        return _describe(args, client, call)

    def suspend(args: argparse.Namespace, client: httpx.Client) -> int:
        return _override(args, client, call, suspend=True)

    def resume(args: argparse.Namespace, client: httpx.Client) -> int:
        return _override(args, client, call, suspend=False)

    def deliveries(args: argparse.Namespace, client: httpx.Client) -> int:
        return _deliveries(args, client, call)

    parser = command("get", "one integration on a line (all of them without an ID): status, type, revision", get)
    parser.add_argument("id", nargs="?", help="integration id (default: every integration)")
    _output(parser, ("table", "name", "json", "yaml"))

    parser = command(
        "describe",
        "one integration in full: spec (secrets as references), conditions, revisions, counters, recent attempts",
        describe,
    )
    parser.add_argument("id", help="integration id")
    _output(parser, ("text", "json", "yaml"))

    parser = command("suspend", "suspend an integration at runtime (audited drift from git): deliveries wait", suspend)
    parser.add_argument("id", help="integration id")
    parser.add_argument("--reason", required=True, help="why, for the audit trail (partner outage until 14:00)")
    _output(parser, ("table", "json", "yaml"))

    parser = command("resume", "resume an integration suspended at runtime (audited)", resume)
    parser.add_argument("id", help="integration id")
    parser.add_argument("--reason", default="", help="why, for the audit trail")
    _output(parser, ("table", "json", "yaml"))

    parser = command(
        "deliveries", "an integration's deliveries, newest first (pending, failed and dead by default)", deliveries
    )
    parser.add_argument("id", help="integration id")
    parser.add_argument(
        "--status", action="append", choices=DELIVERY_STATUSES, help="repeatable; default: all but delivered"
    )
    parser.add_argument("--limit", type=int, default=50, help="deliveries to print (default 50, at most 500)")
    _output(parser, ("table", "json", "yaml"))


def _output(parser: argparse.ArgumentParser, formats: tuple[str, ...]) -> None:
    parser.add_argument(
        "-o", "--output", choices=formats, default=formats[0], help=f"{formats[0]} for people (default), json or yaml"
    )


def _machine(args: argparse.Namespace) -> str | None:
    """json or yaml when asked (by -o, or the --json every client command takes), else None."""
    if args.json:
        return "json"
    return args.output if args.output in ("json", "yaml") else None


def _dump(document: Any, form: str) -> None:
    if form == "json":
        print(json.dumps(document, indent=2))
    else:
        print(yaml.safe_dump(document, sort_keys=False, allow_unicode=True).rstrip())


# --- get ----------------------------------------------------------------------------------------


def _get(args: argparse.Namespace, client: httpx.Client, call: Call) -> int:
    if args.id:
        items = [_integration(client, call, args.id)]
        document: Any = items[0]
    else:
        document = call(client, "GET", "/api/integrations").json()
        items = document["items"]
    form = _machine(args)
    if form:
        _dump(document, form)
    elif args.output == "name":
        for item in items:
            print(item["id"])
    else:
        summary_table(items, Palette.of(sys.stdout, args.color))
    return EXIT_OK


def _integration(client: httpx.Client, call: Call, integration_id: str) -> dict[str, Any]:
    response = call(client, "GET", f"/api/integrations/{integration_id}")
    return dict(response.json())


def summary_table(items: list[dict[str, Any]], palette: Palette) -> None:
    rows: list[tuple[str, ...]] = [("ID", "STATUS", "TYPE", "READY", "GEN", "REVISION", "FILE")]
    for item in items:
        rows.append(
            (
                item["id"],
                item["status"],
                item.get("type") or "-",
                "yes" if item.get("ready") else "no",
                str(item.get("generation", "-")),
                revision_text(item.get("lastAppliedRevision")),
                item.get("sourceFile") or "-",
            )
        )
    table(rows, {1: palette.status})


def revision_text(revision: dict[str, Any] | None) -> str:
    """`3f2a9c1` (the git commit, short) or `sha256:0b1c...` when the file was not in git."""
    if not revision:
        return "-"
    commit = revision.get("commit") or revision.get("gitCommit")
    if commit:
        return str(commit)[:12]
    digest = revision.get("contentHash") or revision.get("hash") or ""
    return str(digest)[:19] or "-"


def table(rows: Sequence[tuple[str, ...]], paint: dict[int, Callable[[str], str]] | None = None) -> None:
    """Columns padded to their widest cell; `paint` colours cells of some columns after padding,
    so escape codes never upset the alignment. The header row is never painted."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        cells = []
        for column, (cell, width) in enumerate(zip(row, widths, strict=True)):
            padded = cell.ljust(width)
            painter = (paint or {}).get(column) if number else None
            cells.append(painter(cell) + padded[len(cell) :] if painter else padded)
        print("  ".join(cells).rstrip())


# --- describe -----------------------------------------------------------------------------------


def _describe(args: argparse.Namespace, client: httpx.Client, call: Call) -> int:
    item = _integration(client, call, args.id)
    recent = {"kind": "attempt", "limit": RECENT_ATTEMPTS}
    logs = call(client, "GET", f"/api/integrations/{args.id}/logs", params=recent)
    item["recentAttempts"] = logs.json()["items"]
    form = _machine(args)
    if form:
        _dump(item, form)
    else:
        print("\n".join(describe_lines(item, Palette.of(sys.stdout, args.color))))
    return EXIT_OK


def describe_lines(item: dict[str, Any], palette: Palette) -> list[str]:
    lines = [
        f"ID:          {item['id']}",
        f"Name:        {item.get('name') or '-'}",
        f"Type:        {item.get('type') or '-'}",
        f"Status:      {palette.status(item['status'])}",
        f"Generation:  {item.get('generation')}",
        f"Source file: {item.get('sourceFile') or '-'}",
        f"Applied:     {_revision_long(item.get('lastAppliedRevision'))}",
        f"Attempted:   {_revision_long(item.get('lastAttemptedRevision'))}",
    ]
    drift = item.get("drift")
    if drift:
        by, at, reason = drift.get("by"), drift.get("at"), drift.get("reason") or "-"
        lines.append(f"Drift:       suspended at runtime by {by} at {at}: {reason}")
    lines += ["", "Conditions:"]
    rows: list[tuple[str, ...]] = [("TYPE", "STATUS", "REASON", "SINCE", "MESSAGE")]
    for cond in item.get("conditions") or []:
        rows.append(
            (
                cond.get("type", ""),
                cond.get("status", ""),
                cond.get("reason") or "-",
                cond.get("lastTransitionTime") or "-",
                cond.get("message") or "",
            )
        )
    lines += _indented(rows) if len(rows) > 1 else ["  none"]
    counters = item.get("deliveries") or {}
    lines += ["", "Deliveries:  " + (", ".join(f"{n} {word}" for word, n in counters.items()) or "none")]
    lines += ["", "Spec (secrets as references; unset fields left out, -o yaml has them all):"]
    spec = yaml.safe_dump(_set_fields(item.get("spec") or {}), sort_keys=False, allow_unicode=True).rstrip()
    lines += ["  " + line for line in spec.splitlines()]
    lines += ["", "Recent attempts:"]
    attempts = item.get("recentAttempts") or []
    rows = [("AT", "EVENT", "ATTEMPT", "STATUS", "HTTP", "LATENCY", "ERROR")]
    for entry in attempts:
        rows.append(
            (
                entry.get("at", ""),
                entry.get("event") or "-",
                str(entry.get("attempt") or "-"),
                entry.get("status", ""),
                str(entry.get("statusCode") or "-"),
                f"{entry['latencyMs']} ms" if entry.get("latencyMs") is not None else "-",
                (entry.get("error") or "")[:80],
            )
        )
    lines += _indented(rows) if attempts else ["  none yet"]
    trail = item.get("auditTrail") or []
    lines += ["", "Audit trail (newest first):"]
    lines += [f"  {e.get('at')}  {e.get('action'):<8} {e.get('actor')}: {e.get('message')}" for e in trail[:10]] or [
        "  none"
    ]
    return lines


def _set_fields(value: Any) -> Any:
    """The value without null, empty mappings and empty lists, at any depth: what a file sets."""
    if isinstance(value, dict):
        kept = {k: _set_fields(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        return [_set_fields(v) for v in value]
    return value


def _revision_long(revision: dict[str, Any] | None) -> str:
    if not revision:
        return "-"
    return ", ".join(f"{key} {value}" for key, value in revision.items() if value not in (None, ""))


def _indented(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


# --- suspend and resume -------------------------------------------------------------------------


def _override(args: argparse.Namespace, client: httpx.Client, call: Call, suspend: bool) -> int:
    route = "deactivate" if suspend else "activate"
    item = dict(call(client, "POST", f"/api/integrations/{args.id}/{route}", json={"reason": args.reason}).json())
    form = _machine(args)
    if form:
        _dump(item, form)
        return EXIT_OK
    palette = Palette.of(sys.stdout, args.color)
    done = "suspended" if suspend else "resumed"
    print(f"{args.id} {done}: status {palette.status(item['status'])}" + (f" ({args.reason})" if args.reason else ""))
    return EXIT_OK


# --- deliveries ---------------------------------------------------------------------------------


def _deliveries(args: argparse.Namespace, client: httpx.Client, call: Call) -> int:
    params: dict[str, Any] = {"limit": max(1, min(args.limit, 500))}
    if args.status:
        params["status"] = args.status
    page = call(client, "GET", f"/api/integrations/{args.id}/deliveries", params=params).json()
    form = _machine(args)
    if form:
        _dump(page, form)
        return EXIT_OK
    items = page["items"]
    if not items:
        wanted = "/".join(args.status or ("pending", "failed", "dead"))
        print(f"no {wanted} deliveries for {args.id}", file=sys.stderr)
        return EXIT_OK
    palette = Palette.of(sys.stdout, args.color)
    rows: list[tuple[str, ...]] = [("ID", "EVENT", "STATUS", "ATTEMPTS", "UPDATED", "NEXT ATTEMPT", "LAST ERROR")]
    for item in items:
        rows.append(
            (
                item["id"],
                item.get("event") or "-",
                item["status"],
                str(item.get("attempts", 0)),
                item.get("updatedAt") or "-",
                item.get("nextAttemptAt") or "-",
                (item.get("lastError") or "")[:80],
            )
        )
    table(rows, {2: palette.status})
    if page.get("nextCursor"):
        print(f"more than {count(len(items), 'delivery', 'deliveries')}: raise --limit to see more", file=sys.stderr)
    return EXIT_OK
