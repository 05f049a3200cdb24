"""Operator commands that talk to a running daemon over its API: status, logs, test, replay.

Each prints a short human summary (or the JSON the API answered, with --json) and exits
0 when the daemon did what was asked, 1 when it answered with a failure (a failed test send,
a degraded status), 2 when it could not be asked (unreachable, refused credentials).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from reconciler.cli import integrations
from reconciler.cli.colour import Palette
from reconciler.cli.secret import AdminSecret, NoAdminSecret, refused_message
from reconciler.logs import count

if TYPE_CHECKING:  # httpx is imported when a command runs: `--version` and completion stay quick
    import httpx

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
TIMEOUT_SECONDS, CONNECT_TIMEOUT_SECONDS = 30.0, 5.0


class ClientError(Exception):
    """The daemon could not be asked, or refused: the message says why and what to do."""


class Refused(ClientError):
    """The daemon answered 401 or 403 to the admin secret sent."""


class DaemonGone(ClientError):
    """The daemon closed a stream it was following (it stopped, or restarted)."""


def add_commands(
    commands: Any, client_arguments: Callable[[argparse.ArgumentParser], None], secret: Callable[..., AdminSecret]
) -> None:
    def command(name: str, help_text: str, handler: Callable[[argparse.Namespace, httpx.Client], int]) -> Any:
        parser = commands.add_parser(name, help=help_text, description=help_text)
        client_arguments(parser)
        parser.add_argument("--json", action="store_true", help="print the API's JSON answer")
        parser.set_defaults(handler=lambda args: _run(name, args, secret, handler))
        return parser

    command("status", "system health: last reconcile pass, queue, integrations; exit 1 when degraded", _status)

    logs = command("logs", "an integration's log: attempts, syncs, reconcile actions, inbound receipts", _logs)
    logs.add_argument("id", help="integration id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new entries as they happen")
    logs.add_argument("--kind", action="append", choices=("attempt", "test", "sync", "reconcile", "receipt"))
    logs.add_argument("--status", help="only entries with this status (delivered, failed, dead, add, ...)")
    logs.add_argument("--event", help="only entries of this event type")
    logs.add_argument("--since", help="RFC 3339 time or a duration back from now (2h)")
    logs.add_argument(
        "--limit", type=int, default=50, help="print the newest N entries, oldest first like a log file (default 50)"
    )

    test = command("test", "send integration.test through an integration's real sink; exit 1 if it failed", _test)
    test.add_argument("id", help="integration id")
    test.add_argument("--message", help="text of the test message")

    replay = command("replay", "queue failed or dead deliveries again: one by id, or all since a time", _replay)
    replay.add_argument("id", help="integration id")
    what = replay.add_mutually_exclusive_group(required=True)
    what.add_argument("--delivery", metavar="DELIVERY_ID", help="one delivery (see GET .../deliveries)")
    what.add_argument("--since", help="every failed or dead delivery updated since: RFC 3339 or a duration (24h)")
    replay.add_argument("--status", choices=("failed", "dead"), action="append", help="default: both")

    integrations.add_commands(command, _call)


def _run(name: str, args: argparse.Namespace, secret: Callable[..., AdminSecret], handler: Callable[..., int]) -> int:
    def fail(message: str) -> int:
        print(Palette.of(sys.stderr, args.color).error(f"reconciler {name}:") + f" {message}", file=sys.stderr)
        return EXIT_ERROR

    try:
        admin_secret = secret(args)
    except NoAdminSecret as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"cannot read the admin secret: {exc}")
    import httpx

    headers = {"x-admin-secret": admin_secret.value, "accept": "application/json"}
    timeout = httpx.Timeout(TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
    try:
        with httpx.Client(base_url=args.server.rstrip("/"), headers=headers, timeout=timeout) as client:
            return handler(args, client)
    except Refused:
        return fail(refused_message(admin_secret))
    except ClientError as exc:
        return fail(str(exc))
    except httpx.HTTPError as exc:
        return fail(f"cannot reach the daemon at {args.server}: {exc}")


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    response = client.request(method, path, **kwargs)
    if response.status_code in (401, 403):
        raise Refused()
    if response.status_code >= 400 and response.status_code not in (405, 409, 422):
        raise ClientError(f"{method} {path} answered {response.status_code}: {_detail(response)}")
    return response


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text[:300]))
    except ValueError:
        return response.text[:300]


# --- commands -----------------------------------------------------------------------------------


def _print_source(source: dict[str, Any]) -> None:
    """The git source: where, which commit, when it fetched and will fetch, what went wrong."""
    commit = (source.get("commit") or "none")[:12]
    print(f"source: {source['url']} ref {source['ref']}" + (f" path {source['path']}" if source.get("path") else ""))
    fetched, upcoming = source.get("lastFetch") or "never", source.get("nextFetch") or "-"
    print(f"  commit {commit}, last fetch {fetched}, next fetch {upcoming}")
    if source.get("lastError"):
        print(f"  last error: {source['lastError']}")


def _status(args: argparse.Namespace, client: httpx.Client) -> int:
    health = _call(client, "GET", "/api/integrations/health/status").json()
    if args.json:
        print(json.dumps(health, indent=2))
        return EXIT_OK if health["status"] == "ok" else EXIT_FAILED
    last = health.get("lastPass") or {}
    queue = health["queue"]
    palette = Palette.of(sys.stdout, args.color)
    print(f"status: {palette.status(health['status'])}")
    for problem in health.get("problems") or []:
        print(f"  - {problem}")
    if last:
        problems = [
            f"{count(len(last.get(key) or []), noun)} {what}"
            for key, noun, what in (
                ("waitingForSecrets", "integration", "waiting for secrets"),
                ("refused", "integration", "refused"),
                ("filesRefused", "file", "refused"),
            )
            if last.get(key)
        ]
        if not last.get("ok"):
            problems.insert(0, f"failed: {last.get('error') or 'see the log'}")
        print(f"last pass: {last['at']} ({last['trigger']}, {last['durationMs']} ms): {', '.join(problems) or 'ok'}")
        revision = (health.get("config") or {}).get("revision")
        dirty = last.get("dirtyFiles") or []
        if revision:
            changes = f" with uncommitted changes to {count(len(dirty), 'file')}: {', '.join(dirty)}" if dirty else ""
            print(f"config: {health['config']['directory']} at {revision[:12]}{changes}")
    source = (health.get("config") or {}).get("source")
    if source:
        _print_source(source)
    _print_replicas(health)
    by_status = ", ".join(f"{n} {word}" for word, n in health["integrationsByStatus"].items()) or "none"
    print(f"integrations: {by_status}")
    dead = count(queue["dead"], "dead letter")
    print(f"queue: {queue['depth']} waiting, oldest {queue['oldestPendingSeconds']}s, {dead}")
    rows: list[tuple[str, ...]] = [("ID", "STATUS", "WAITING", "DEAD", "SUCCESS 24H", "REASON")]
    for item in health["integrations"]:
        rate = item.get("successRate24h")
        rows.append(
            (
                item["id"],
                item["status"],
                str(item["queue"]["depth"]),
                str(item["queue"]["dead"]),
                "-" if rate is None else f"{rate * 100:.1f}%",
                # why it is not simply active; a healthy one's reason says nothing new
                "" if item["status"] == "active" else item.get("reason") or "",
            )
        )
    integrations.table(rows, {1: palette.status})
    if last.get("waitingForSecrets"):
        _print_waiting(client, set(last["waitingForSecrets"]))
    return EXIT_OK if health["status"] == "ok" else EXIT_FAILED


def _print_replicas(health: dict[str, Any]) -> None:
    """The replicas on the store: one line each, the leader and the one answering marked."""
    replicas = health.get("replicas") or []
    if not replicas:
        return
    print(f"replicas: {len(replicas)}, leader {health.get('leader') or 'none'}")
    rows: list[tuple[str, ...]] = [("ID", "ROLE", "VERSION", "CONFIG", "HEARTBEAT", "LEASES", "")]
    for item in replicas:
        marks = [
            *(["leader"] if item["leader"] else []),
            *(["this one"] if item["id"] == health.get("replica") else []),
            *([] if item["alive"] else ["silent: being taken over"]),
        ]
        rows.append(
            (
                item["id"],
                item["role"],
                item["version"],
                (item.get("configRevision") or "-")[:12],
                f"{item.get('heartbeatAgeSeconds', 0)}s ago",
                str(item["leases"]),
                ", ".join(marks),
            )
        )
    integrations.table(rows, {})


def _print_waiting(client: httpx.Client, waiting: set[str]) -> None:
    """Every secret each waiting integration misses, so that one restart after setting them is enough."""
    print("waiting for secrets:")
    for item in _call(client, "GET", "/api/integrations").json()["items"]:
        if item["id"] not in waiting:
            continue
        held = [c for c in item["conditions"] if c["reason"] == "SecretMissing"]
        print(f"  {item['id']}: {held[0]['message'] if held else 'see reconciler logs'}")


def _logs(args: argparse.Namespace, client: httpx.Client) -> int:
    params: dict[str, Any] = {"limit": max(1, min(args.limit, 500))}
    for name in ("status", "event", "since"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    if args.kind:
        params["kind"] = args.kind
    path = f"/api/integrations/{args.id}/logs"
    page = _call(client, "GET", path, params=params).json()
    palette = Palette.of(sys.stdout, args.color)
    for entry in reversed(page["items"]):  # oldest first, like a log file
        _print_entry(entry, args.json, palette)
    if not args.follow:
        return EXIT_OK
    sys.stdout.flush()
    # resume right after the newest entry printed: nothing written meanwhile is skipped
    newest = page["items"][0]["cursor"] if page["items"] else None
    for entry in _follow(client, path, {**params, "follow": "true"}, newest):
        _print_entry(entry, args.json, palette)
        sys.stdout.flush()
    # the daemon ends a stream only when it stops: a follower that ends quietly would look
    # like a quiet log to whoever watches it, or to the script that waits on it
    raise DaemonGone(
        f"the daemon at {args.server} went away (it stopped or restarted) and closed the log of {args.id}; "
        f"run the command again once it is back (`reconciler status` says when)"
    )


def _follow(client: httpx.Client, path: str, params: dict[str, Any], after: str | None) -> Iterator[dict[str, Any]]:
    params.pop("limit", None)
    import httpx

    timeout = httpx.Timeout(None, connect=CONNECT_TIMEOUT_SECONDS)  # a quiet log sends only keep-alives
    headers = {"accept": "text/event-stream", **({"last-event-id": after} if after else {})}
    with client.stream("GET", path, params=params, timeout=timeout, headers=headers) as stream:
        if stream.status_code != 200:
            stream.read()
            raise ClientError(f"following {path} answered {stream.status_code}: {_detail(stream)}")
        event = ""
        try:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "error":
                        raise ClientError(f"following {path}: {data.get('detail')}")
                    yield data
        except httpx.RemoteProtocolError:  # the connection closed in the middle of the stream
            return


def _print_entry(entry: dict[str, Any], as_json: bool, palette: Palette) -> None:
    if as_json:
        print(json.dumps(entry, separators=(",", ":")))
        return
    kind, status = entry["kind"], entry["status"]
    if kind == "reconcile":
        text = f"{entry.get('actor')}: {entry.get('message')}"
    elif kind == "receipt":
        text = f"{entry.get('event')} {entry.get('eventId')}"
    else:
        code = entry.get("statusCode")
        parts = [
            entry.get("event") or "",
            f"attempt {entry.get('attempt')}" if kind == "attempt" else "",
            f"HTTP {code}" if code is not None else "",
            f"{entry.get('latencyMs')} ms" if entry.get("latencyMs") is not None else "",
            entry.get("error") or "",
        ]
        text = "  ".join(p for p in parts if p)
    print(f"{entry['at']}  {kind:<9} {palette.status(status)}{' ' * (10 - len(status))} {text}")


def _test(args: argparse.Namespace, client: httpx.Client) -> int:
    body = {"message": args.message} if args.message else {}
    response = _call(client, "POST", f"/api/integrations/{args.id}/test", json=body)
    result = response.json()
    if response.status_code != 200:
        print(f"reconciler test: {result.get('detail')}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(result, indent=2))
    elif result["ok"]:
        print(f"ok: {args.id} answered {result['status'] or 'ok'} in {result['latencyMs']} ms")
    else:
        shown = result.get("error") or f"HTTP {result.get('status')}"
        print(f"failed: {args.id}: {shown} after {result['latencyMs']} ms", file=sys.stderr)
        if result.get("responseExcerpt"):
            print(f"response: {result['responseExcerpt'][:500]}", file=sys.stderr)
    return EXIT_OK if result["ok"] else EXIT_FAILED


def _replay(args: argparse.Namespace, client: httpx.Client) -> int:
    body: dict[str, Any] = {"deliveryId": args.delivery} if args.delivery else {"since": args.since}
    if args.status:
        body["status"] = args.status
    response = _call(client, "POST", f"/api/integrations/{args.id}/replay", json=body)
    result = response.json()
    if response.status_code == 422:
        print(f"reconciler replay: {result.get('detail')}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"queued again: {count(result['replayed'], 'delivery', 'deliveries')} of {args.id}")
    return EXIT_OK
