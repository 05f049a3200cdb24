"""`reconciler`: validate, scaffold, plan and run integrations; trigger events."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from reconciler import __version__
from reconciler.cli import colour, environment
from reconciler.cli.secret import AdminSecret, NoAdminSecret, find_admin_secret
from reconciler.logs import count

if TYPE_CHECKING:
    import asyncio

    from reconciler.daemon import Settings
    from reconciler.reconcile.source import Credentials, SourceSpec

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_ERROR = 2
# Below this many files a progress line is noise.
PROGRESS_MIN_FILES = 200


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    if getattr(args, "settings_parser", None) is not None:
        try:
            environment.apply_variables(args.settings_parser, args)
        except environment.SettingError as exc:
            print(f"reconciler: {exc}", file=sys.stderr)
            return EXIT_ERROR
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Declare course-system integrations in YAML, validate them in CI, and deliver events durably.",
    )
    parser.add_argument("--version", "-V", action="version", version=f"reconciler {__version__}")
    _color_argument(parser, "auto")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="check integration files; exit 0 valid, 1 invalid, 2 could not run",
        description="Check integration files against the schema and the semantic rules, "
        "reporting every error as file:line:col.",
    )
    validate.add_argument(
        "paths", nargs="*", metavar="PATH", help="files or directories (default: integrations.d); - for standard input"
    )
    validate.add_argument(
        "--config-dir",
        metavar="DIR",
        help="the config directory whose event types (kind: EventType) the files may use "
        "(default: the directory of each file given)",
    )
    validate.add_argument(
        "--format",
        choices=("text", "json", "github"),
        default="text",
        help="text for people, json for tools, github for workflow annotations",
    )
    validate.add_argument(
        "--check-env", action="store_true", help="also require every ${env:...} and ${file:...} reference to resolve"
    )
    validate.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    validate.set_defaults(handler=_validate)

    new = commands.add_parser(
        "new",
        help="scaffold an integration file from a template",
        description="Print (or write) a new integration file from a template.",
    )
    new.add_argument("template", nargs="?", help="template name; omit to list them")
    new.add_argument("id", nargs="?", help="the new integration's id (an EventType's name)")
    new.add_argument(
        "--output", "-o", metavar="FILE", help="write to FILE (refuses to overwrite) instead of standard output"
    )
    new.set_defaults(handler=_new)

    run = commands.add_parser(
        "run",
        help="start the daemon: reconcile loop, watcher and HTTP API",
        description="Watch the config directory, reconcile it into the registry and serve the API. "
        "SIGTERM or SIGINT stops it gracefully (exit 0).",
    )
    run.add_argument("--config-dir", default="integrations.d", metavar="DIR", help="default: integrations.d")
    run.add_argument(
        "--store",
        default="sqlite:///state/reconciler.db",
        metavar="URL",
        help="sqlite:///path (default sqlite:///state/reconciler.db) or postgresql://user@host/db",
    )
    run.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT", help="default: 127.0.0.1:8080")
    run.add_argument(
        "--resync",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="full pass at least this often, besides file events (default 60)",
    )
    run.add_argument(
        "--retention",
        default="30d",
        metavar="DURATION",
        help="keep delivered events and attempt logs this long (default 30d; 0 keeps everything); "
        "waiting deliveries and dead letters are always kept",
    )
    run.add_argument(
        "--header-timeout",
        default="10s",
        metavar="DURATION",
        help="close a connection whose request headers are not all in within this time (default 10s)",
    )
    run.add_argument(
        "--body-timeout",
        default="30s",
        metavar="DURATION",
        help="answer 408 and close when a request body is not all in within this time (default 30s)",
    )
    run.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        metavar="N",
        help="answer 503 to requests beyond this many open connections (default 1000)",
    )
    run.add_argument(
        "--max-retry-after",
        default="10m",
        metavar="DURATION",
        help="the longest pause a sink's Retry-After (429, 503) holds its endpoint's queue (default 10m)",
    )
    run.add_argument(
        "--metrics-auth",
        action="store_true",
        help="require the admin secret on /metrics too (default: open, like the health probes)",
    )
    run.add_argument(
        "--role",
        choices=("all", "controller", "worker", "api"),
        default="all",
        help="what this replica does (default all): controller reconciles the files while it leads, worker "
        "delivers, api only serves; replicas of one PostgreSQL store share the work (docs/deploy.md)",
    )
    run.add_argument(
        "--public-status",
        action="store_true",
        help="let anyone who reaches the daemon read the status page at / (default: the admin secret is needed; "
        "actions always need it)",
    )
    run.add_argument(
        "--secrets-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="a directory ${file:...} references may read, beside secrets/ next to the config "
        "directory and /run/secrets (repeatable)",
    )
    run.add_argument(
        "--secret-env-prefix",
        metavar="PREFIX",
        help="${env:...} references may read only variables starting with PREFIX (default: any "
        "but the daemon's own settings)",
    )
    _source_arguments(run)
    run.add_argument(
        "--source-interval",
        default="1m",
        metavar="DURATION",
        help="with --source: fetch this often (default 1m); push webhooks fetch at once",
    )
    run.add_argument(
        "--source-webhook-secret",
        metavar="REF",
        help="with --source: the push webhooks' secret, '${env:NAME}' or '${file:/path}'; "
        "turns on POST /api/source/webhook",
    )
    run.add_argument(
        "--source-verify",
        metavar="FILE",
        help="with --source: follow only heads signed by these keys: an SSH allowed-signers file "
        "(as git verify-commit reads it) or armored OpenPGP public keys; otherwise the last trusted commit stays",
    )
    run.add_argument(
        "--source-allow-rewrite",
        action="store_true",
        help="with --source: follow a force-pushed ref to a commit never followed before (default: keep the "
        "last good commit and say so)",
    )
    run.add_argument(
        "--log-format",
        choices=("auto", "json", "text"),
        default="auto",
        help="auto: JSON when stderr is not a terminal",
    )
    environment.bind_variables(run)
    run.set_defaults(handler=_run, settings_parser=run)

    plan = commands.add_parser(
        "plan",
        help="show what a change would do: + add, ~ change, - remove; exit 0 none, 1 changes, 2 error",
        description="Compare the integrations at a base (a git revision, or a running daemon) with a head "
        "(a git revision, or the work tree). Secrets show only as reference names.",
    )
    plan.add_argument("--config-dir", default="integrations.d", metavar="DIR", help="default: integrations.d")
    plan.add_argument("--base", metavar="REV", help="git revision to compare from (origin/main in a pull request)")
    plan.add_argument("--head", metavar="REV", help="git revision to compare to (default: the work tree)")
    plan.add_argument("--server", metavar="URL", help="compare from a running daemon's registry instead of --base")
    plan.add_argument(
        "--source",
        metavar="URL",
        help="compare the head of a git source (as `run --source` takes it) with the running daemon (--server)",
    )
    plan.add_argument("--source-token", metavar="REF", help=argparse.SUPPRESS)
    plan.add_argument("--source-token-file", metavar="FILE", help=argparse.SUPPRESS)
    plan.add_argument("--source-ssh-key", metavar="FILE", help=argparse.SUPPRESS)
    plan.add_argument("--source-known-hosts", metavar="FILE", help=argparse.SUPPRESS)
    plan.add_argument(
        "--admin-secret-file",
        metavar="FILE",
        help="file holding the daemon's admin secret (default: the ADMIN_SECRET variable)",
    )
    plan.add_argument(
        "--format", choices=("text", "markdown", "json"), default="text", help="markdown for a pull-request comment"
    )
    plan.set_defaults(handler=_plan)

    trigger = commands.add_parser(
        "trigger",
        help="emit an event through a running daemon; exit 0 accepted, 1 refused, 2 error",
        description="Send an event to a running daemon (POST /api/integrations/webhooks/trigger). It is "
        "acknowledged once it and its deliveries are stored.",
    )
    trigger.add_argument("event", help="event type, such as user.registered")
    trigger.add_argument(
        "--data",
        default="{}",
        metavar="JSON|@FILE|@-",
        help="the event's data: inline JSON, @file.json, or @- for standard input",
    )
    trigger.add_argument("--timestamp", help="RFC 3339 time of the event (default: now)")
    trigger.add_argument(
        "--idempotency-key",
        help="send it again with the same key and the daemon answers with the first event, storing nothing new",
    )
    trigger.add_argument("--id", dest="event_id", help="the event's own id (also serves as its idempotency key)")
    _client_arguments(trigger)
    trigger.set_defaults(handler=_trigger)

    from reconciler.cli.client import add_commands

    add_commands(commands, _client_arguments, _admin_secret)

    schemas = commands.add_parser(
        "schemas",
        help="write the JSON Schemas (make schemas), or print one",
        description="Write every JSON Schema under DIR, or print one (--print integration) for an editor or a tool.",
    )
    schemas.add_argument("--output", "-o", default="schemas", metavar="DIR")
    schemas.add_argument(
        "--print", dest="print_name", metavar="NAME", help="print one schema: integration, eventtype, events/EVENT"
    )
    schemas.add_argument(
        "--typescript",
        metavar="FILE",
        help="also write the event types' data as TypeScript declarations (make schemas: clients/node/events.d.ts)",
    )
    schemas.set_defaults(handler=_schemas)

    completion = commands.add_parser(
        "completion",
        help="print a shell completion script: bash, zsh or fish",
        description='Print the completion script for a shell. bash: eval "$(reconciler completion bash)" in '
        "~/.bashrc; zsh: reconciler completion zsh > ~/.zfunc/_reconciler (with ~/.zfunc on fpath); fish: "
        "reconciler completion fish > ~/.config/fish/completions/reconciler.fish",
    )
    from reconciler.cli.completion import SHELLS

    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(handler=lambda args: _completion(parser, args))
    for name, command in commands.choices.items():
        if name != "run":  # the daemon logs; it prints nothing to colour
            _color_argument(command, argparse.SUPPRESS)
    return parser


def _color_argument(parser: argparse.ArgumentParser, default: object) -> None:
    # on every command too, so `reconciler status --color never` works as well as before the command
    parser.add_argument(
        "--color",
        choices=colour.CHOICES,
        default=default,
        help="colour status words, plan changes and errors: auto (on a terminal, unless NO_COLOR is set; "
        "the default), always, never",
    )


def _completion(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from reconciler.cli.completion import script

    sys.stdout.write(script(parser, args.shell))
    return EXIT_OK


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        metavar="URL",
        help="follow a git repository instead of watching --config-dir: "
        "git+https://host/org/repo.git?ref=main&path=integrations.d (or git+ssh://, git+file://)",
    )
    parser.add_argument(
        "--source-token", metavar="REF", help="with --source: an HTTPS token, '${env:NAME}' or '${file:/path}'"
    )
    parser.add_argument("--source-token-file", metavar="FILE", help="with --source: a file holding the HTTPS token")
    parser.add_argument("--source-ssh-key", metavar="FILE", help="with --source: the SSH private key for git+ssh://")
    parser.add_argument(
        "--source-known-hosts", metavar="FILE", help="with --source: the SSH host keys to trust (known_hosts format)"
    )


def _source_settings(args: argparse.Namespace) -> tuple[SourceSpec, Credentials]:
    """The source and its credentials from the flags; SourceError names the flag and the fix."""
    from urllib.parse import urlsplit

    from reconciler.reconcile.source import Credentials, SourceError, parse_source, resolve_credential

    spec = parse_source(args.source)
    if args.source_token and args.source_token_file:
        raise SourceError("give --source-token or --source-token-file, not both")
    token_reference = args.source_token
    if args.source_token_file:
        token_reference = f"${{file:{Path(args.source_token_file).resolve()}}}"
    credentials = Credentials(
        token=resolve_credential(token_reference, "source-token"),
        ssh_key=Path(args.source_ssh_key).resolve() if args.source_ssh_key else None,
        known_hosts=Path(args.source_known_hosts).resolve() if args.source_known_hosts else None,
        username=urlsplit(spec.remote).username or "git",
    )
    return spec, credentials


def _validate(args: argparse.Namespace) -> int:
    from reconciler.manifests.diagnostics import render
    from reconciler.manifests.validate import validate_paths

    paths = args.paths or ["integrations.d"]
    from_stdin = "-" in paths
    paths = [p for p in paths if p != "-"]
    missing = [p for p in [*paths, *([args.config_dir] if args.config_dir else [])] if not os.path.exists(p)]
    if missing:
        print(f"reconciler validate: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return EXIT_ERROR
    stdin = _read_stdin() if from_stdin else None
    progress = _ProgressLine() if sys.stderr.isatty() and args.format != "json" else None
    result = validate_paths(
        paths, check_env=args.check_env, progress=progress, stdin=stdin, context=_validation_context(args, paths)
    )
    if progress is not None:
        progress.clear()
    shown = result.diagnostics + ([] if args.quiet else result.warnings)
    output = render(shown, args.format, result.summary())
    if output:
        print(output)
    if args.format == "text" and not args.quiet:
        s = result.summary()
        verdict = "valid" if result.ok else f"{s['errors']} error{'s' * (s['errors'] != 1)}"
        if s["warnings"]:
            verdict += f", {count(s['warnings'], 'warning')}"
        print(f"{count(s['files'], 'file')}, {count(s['integrations'], 'integration')}: {verdict}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_INVALID


def _validation_context(args: argparse.Namespace, paths: list[str]) -> list[str]:
    """Where the event types a file may use are declared: `--config-dir` (its whole tree, as the
    daemon reads it), else the directory of each file given (its files only: a file's directory
    may be a home directory, not worth walking)."""
    if args.config_dir:
        return [args.config_dir]
    from reconciler.manifests.discovery import EXTENSIONS

    siblings: list[str] = []
    for directory in sorted({os.path.dirname(os.path.abspath(p)) for p in paths if not os.path.isdir(p)}):
        with os.scandir(directory) as entries:
            siblings += sorted(
                e.path
                for e in entries
                if e.name.endswith(EXTENSIONS) and not e.name.startswith(".") and e.is_file(follow_symlinks=False)
            )
    return siblings


def _read_stdin() -> bytes:
    """Standard input, up to one byte over the file size limit (enough to say it is too large)."""
    from reconciler.manifests.loader import MAX_FILE_BYTES

    return sys.stdin.buffer.read(MAX_FILE_BYTES + 1)


class _ProgressLine:
    """`validating 1200/10000 files` on one terminal line, for large trees."""

    def __init__(self) -> None:
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if total >= PROGRESS_MIN_FILES and (done % 100 == 0 or done == total):
            sys.stderr.write(f"\rvalidating {done}/{total} files")
            sys.stderr.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _new(args: argparse.Namespace) -> int:
    import re

    from reconciler.manifests.modeline import DEFAULT_SERVER, with_modeline
    from reconciler.manifests.models import ID_PATTERN
    from reconciler.manifests.scaffold import scaffolds

    available = scaffolds()
    if not args.template:
        width = max(len(n) for n in available)
        for name, listed in available.items():
            print(f"{name:<{width}}  {listed.description}")
        return EXIT_OK
    scaffold = available.get(args.template)
    if scaffold is None:
        print(
            f"reconciler new: unknown template {args.template!r}; templates: " + ", ".join(available), file=sys.stderr
        )
        return EXIT_ERROR
    ident = args.id or scaffold.default_id
    if scaffold.data.get("kind") == "Integration" and not re.match(ID_PATTERN, ident):
        print(
            f"reconciler new: {ident!r} is not a valid id: use lowercase letters, digits and "
            "dashes (slack-notifications)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    target = Path(args.output) if args.output else None
    server = os.environ.get("RECONCILER_SERVER") or DEFAULT_SERVER
    text = with_modeline(scaffold.render(ident), _scaffold_dir(target), server)
    if target is not None:
        if target.exists():
            print(f"reconciler new: {target} exists; choose another file", file=sys.stderr)
            return EXIT_ERROR
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}; check it with: reconciler validate {target.parent}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _scaffold_dir(target: Path | None) -> Path:
    """Where the new file goes: the output's folder, or (printed) integrations.d/ when there is one here."""
    if target is not None:
        return target.parent
    return Path("integrations.d") if Path("integrations.d").is_dir() else Path.cwd()


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (Linux and macOS: a dependency there), else asyncio's.
    The daemon spends most of its CPU in the loop: uvloop takes 10 to 20% more events end to end."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from reconciler import logs
    from reconciler.api.auth import AdminSecretError
    from reconciler.daemon import Settings, StartupError, serve
    from reconciler.manifests.durations import parse_duration
    from reconciler.store import StoreError

    try:
        retention = parse_duration(args.retention) if args.retention not in ("0", "0s") else 0.0
    except ValueError as exc:
        print(f"reconciler run: --retention: {exc}; 0 keeps everything", file=sys.stderr)
        return EXIT_ERROR
    timeouts: dict[str, float] = {}
    for flag in ("header_timeout", "body_timeout", "max_retry_after"):
        try:
            timeouts[flag] = parse_duration(getattr(args, flag))
        except ValueError as exc:
            print(f"reconciler run: --{flag.replace('_', '-')}: {exc}", file=sys.stderr)
            return EXIT_ERROR
        if timeouts[flag] <= 0:
            print(f"reconciler run: --{flag.replace('_', '-')} must be more than 0 (for example 10s)", file=sys.stderr)
            return EXIT_ERROR
    if args.max_connections < 1:
        print("reconciler run: --max-connections must be at least 1 (default 1000)", file=sys.stderr)
        return EXIT_ERROR
    logs.configure(args.log_format)
    settings = Settings(
        Path(args.config_dir),
        args.store,
        args.listen,
        args.resync,
        retention_seconds=retention or None,
        metrics_need_admin=args.metrics_auth,
        public_status=args.public_status,
        secrets_dirs=tuple(Path(d) for d in args.secrets_dir),
        secret_env_prefix=args.secret_env_prefix,
        header_timeout=timeouts["header_timeout"],
        body_timeout=timeouts["body_timeout"],
        max_connections=args.max_connections,
        max_retry_after=timeouts["max_retry_after"],
        role=args.role,
    )
    if args.source:
        try:
            _add_source(settings, args)
        except ValueError as exc:
            print(f"reconciler run: {exc}", file=sys.stderr)
            return EXIT_ERROR
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(serve(settings))
    except (StartupError, StoreError, AdminSecretError) as exc:
        print(f"reconciler run: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _add_source(settings: Settings, args: argparse.Namespace) -> None:
    """The source settings from `run`'s flags; ValueError (SourceError) names the flag and the fix."""
    from reconciler.manifests.durations import parse_duration
    from reconciler.reconcile.source import SignerPolicy, resolve_credential

    settings.source, settings.source_credentials = _source_settings(args)
    settings.source_verify = SignerPolicy.of(Path(args.source_verify)) if args.source_verify else None
    try:
        settings.source_interval = parse_duration(args.source_interval)
    except ValueError as exc:
        raise ValueError(f"--source-interval: {exc}") from None
    if settings.source_interval <= 0:
        raise ValueError("--source-interval must be more than 0 (for example 1m)")
    settings.source_allow_rewrite = args.source_allow_rewrite
    settings.source_webhook_secret = resolve_credential(args.source_webhook_secret, "source-webhook-secret")


def _plan(args: argparse.Namespace) -> int:
    from reconciler.manifests.diagnostics import render
    from reconciler.reconcile import plan as planning

    if args.source:
        return _plan_source(args)
    if bool(args.base) == bool(args.server):
        print("reconciler plan: give either --base REV or --server URL", file=sys.stderr)
        return EXIT_ERROR
    config_dir = Path(args.config_dir)
    if not config_dir.is_dir():
        print(f"reconciler plan: no such directory: {config_dir}", file=sys.stderr)
        return EXIT_ERROR
    try:
        head = planning.side_from_git(config_dir, args.head) if args.head else planning.side_from_work_tree(config_dir)
        if head.diagnostics:
            print(render(head.diagnostics, "text", {}), file=sys.stderr)
            print(f"reconciler plan: {head.label} does not validate; fix the errors above first", file=sys.stderr)
            return EXIT_ERROR
        if args.server:
            base = planning.side_from_server(args.server, _admin_secret(args).value)
        else:
            base = planning.side_from_git(config_dir, args.base)
    except (planning.PlanError, OSError, NoAdminSecret) as exc:
        print(f"reconciler plan: {exc}", file=sys.stderr)
        return EXIT_ERROR
    result = planning.make_plan(base, head)
    rendered = planning.RENDERERS[args.format](result)
    if args.format == "text":
        palette = colour.Palette.of(sys.stdout, args.color)
        rendered = "\n".join(palette.plan_line(line) for line in rendered.splitlines())
    print(rendered)
    return EXIT_INVALID if result.changes else EXIT_OK


def _plan_source(args: argparse.Namespace) -> int:
    """The followed ref's head against the running daemon's registry."""
    from reconciler.manifests.diagnostics import render
    from reconciler.reconcile import plan as planning

    if args.base or args.head:
        print(
            "reconciler plan: --source compares with the running daemon (--server); drop --base and --head",
            file=sys.stderr,
        )
        return EXIT_ERROR
    server = args.server or os.environ.get("RECONCILER_SERVER", "http://127.0.0.1:8080")
    try:
        spec, credentials = _source_settings(args)
        head = planning.side_from_source(spec, credentials)
        if head.diagnostics:
            print(render(head.diagnostics, "text", {}), file=sys.stderr)
            print(
                f"reconciler plan: {head.label} does not validate; the daemon would keep the last good "
                "version of what these errors touch",
                file=sys.stderr,
            )
        base = planning.side_from_server(server, _admin_secret(args).value)
    except (planning.PlanError, ValueError, OSError, NoAdminSecret) as exc:
        print(f"reconciler plan: {exc}", file=sys.stderr)
        return EXIT_ERROR
    result = planning.make_plan(base, head)
    print(planning.RENDERERS[args.format](result))
    return EXIT_INVALID if result.changes else EXIT_OK


def _client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("RECONCILER_SERVER", "http://127.0.0.1:8080"),
        metavar="URL",
        help="the daemon (default: $RECONCILER_SERVER or http://127.0.0.1:8080)",
    )
    parser.add_argument(
        "--admin-secret-file",
        metavar="FILE",
        help="file holding the admin secret (default: $ADMIN_SECRET, else the daemon's state/admin-secret: "
        "beside $RECONCILER_STORE's database, or in ./state or a directory above)",
    )


def _admin_secret(args: argparse.Namespace) -> AdminSecret:
    """The secret to send; NoAdminSecret (with where it looked) when there is none."""
    return find_admin_secret(args.admin_secret_file)


def _read_data(text: str) -> object:
    import json

    if text == "@-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    return json.loads(text)


def _trigger(args: argparse.Namespace) -> int:
    import json

    from reconciler.cli.secret import refused_message
    from reconciler.client import AuthError, Client, ClientError, TriggerRefused

    try:
        secret = _admin_secret(args)
    except (OSError, NoAdminSecret) as exc:
        print(f"reconciler trigger: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        data = _read_data(args.data)
    except (OSError, ValueError) as exc:
        print(f"reconciler trigger: cannot read the data: {exc}", file=sys.stderr)
        return EXIT_ERROR
    # the client retries a dropped connection or a 503 under one idempotency key: never twice stored
    with Client(args.server, secret.value, timeout=30) as client:
        try:
            accepted = client.trigger(
                args.event,
                cast(dict[str, Any], data),  # whatever JSON was given: the daemon names what is wrong with it
                idempotency_key=args.idempotency_key,
                timestamp=args.timestamp,
                event_id=args.event_id,
            )
        except AuthError:
            print(f"reconciler trigger: {refused_message(secret)}", file=sys.stderr)
            return EXIT_ERROR
        except TriggerRefused as exc:
            if exc.status != 422:
                print(f"reconciler trigger: {exc}", file=sys.stderr)
                return EXIT_ERROR
            print(f"reconciler trigger: {args.event} refused: {exc.problem.get('detail', '')}", file=sys.stderr)
            for reason in exc.errors:
                print(f"  {reason['pointer']}: {reason['message']}", file=sys.stderr)
            return EXIT_INVALID
        except ClientError as exc:
            print(f"reconciler trigger: {exc}", file=sys.stderr)
            return EXIT_ERROR
    # one line: what a script reads (with jq), and what the README shows
    print(json.dumps(accepted.raw, separators=(", ", ": ")))
    return EXIT_OK


def _schemas(args: argparse.Namespace) -> int:
    from reconciler.manifests.schemagen import all_schemas, dumps, schema_named, write_schemas, write_typescript

    if args.print_name:
        schema = schema_named(args.print_name)
        if schema is None:
            names = ", ".join(name.removesuffix(".schema.json") for name in all_schemas())
            print(f"reconciler schemas: no schema {args.print_name!r}; schemas: {names}", file=sys.stderr)
            return EXIT_ERROR
        sys.stdout.write(dumps(schema))
        return EXIT_OK
    written = write_schemas(Path(args.output))
    print(f"wrote {count(len(written), 'schema')} under {args.output}/", file=sys.stderr)
    if args.typescript:
        write_typescript(Path(args.typescript))
        print(f"wrote the event types' TypeScript declarations to {args.typescript}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
