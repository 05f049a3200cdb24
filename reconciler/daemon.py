"""`reconciler run`: the reconcile loop, the watcher, the HTTP API, intake, delivery and
scheduled syncs in one process.

SIGTERM or SIGINT stops them in order: the API stops taking requests, intake commits what
it holds, delivery finishes what is in flight and gives back the rest; the process exits 0
(1 if a role failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from reconciler.api.app import Runtime, create_app
from reconciler.api.auth import load_admin_secret
from reconciler.api.connections import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    deadline_protocol,
)
from reconciler.delivery.engine import DeliveryEngine
from reconciler.delivery.health import HealthMonitor
from reconciler.delivery.replica import Replica
from reconciler.delivery.sources import SourceWatcher
from reconciler.delivery.sync import SyncScheduler
from reconciler.intake.committer import Intake
from reconciler.manifests.secrets import SecretScope
from reconciler.reconcile.loop import RESYNC_SECONDS, Reconciler
from reconciler.reconcile.source import (
    DEFAULT_INTERVAL,
    FIRST_FETCH_SECONDS,
    Credentials,
    GitSource,
    SignerPolicy,
    SourceSpec,
)
from reconciler.reconcile.watch import watch
from reconciler.sinks.files import FileSink
from reconciler.sinks.http import HttpSink
from reconciler.sinks.http.retry_after import MAX_RETRY_AFTER_SECONDS
from reconciler.store import AsyncStore, open_store

log = logging.getLogger("reconciler")
SHUTDOWN_GRACE_SECONDS = 10.0
DEFAULT_STORE = "sqlite:///state/reconciler.db"
DEFAULT_LISTEN = "127.0.0.1:8080"


class StartupError(RuntimeError):
    """The daemon cannot start; the message says why and what to do."""


@dataclass
class Settings:
    """The daemon's settings, as `reconciler run`'s flags give them."""

    config_dir: Path
    store_url: str = DEFAULT_STORE
    listen: str = DEFAULT_LISTEN
    resync_seconds: float = RESYNC_SECONDS
    retention_seconds: float | None = 30 * 86400.0
    metrics_need_admin: bool = False
    public_status: bool = False  # the status page readable without the admin secret
    secrets_dirs: tuple[Path, ...] = ()  # more places ${file:...} may read, beside the defaults
    secret_env_prefix: str | None = None  # ${env:...} only variables with this prefix
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_retry_after: float = MAX_RETRY_AFTER_SECONDS
    source: SourceSpec | None = None  # follow a git remote instead of watching config_dir
    source_interval: float = DEFAULT_INTERVAL
    source_credentials: Credentials = field(default_factory=Credentials)
    source_allow_rewrite: bool = False
    source_webhook_secret: str | None = None  # resolved; None: no push webhooks
    source_verify: SignerPolicy | None = None  # only heads signed by these keys are followed
    # What this replica does (`run --role`). Every role serves the HTTP API (probes, reads, event
    # intake) and follows the shared state from the store; `controller` and `all` reconcile while
    # they lead, `worker` and `all` deliver. Roles other than `all` share a PostgreSQL store.
    role: str = "all"  # all | controller | worker | api

    @property
    def reconciles(self) -> bool:
        """The controller's duties: passes while it leads, the file watch or git source, syncs."""
        return self.role in ("all", "controller")

    @property
    def delivers(self) -> bool:
        return self.role in ("all", "worker")

    @property
    def state_dir(self) -> Path:
        """Where the admin secret lives: beside the SQLite database, or ./state."""
        if self.store_url.startswith("sqlite:///"):
            return Path(self.store_url.removeprefix("sqlite:///")).parent
        return Path("state")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns the signals and the exit code."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(listen: str) -> socket.socket:
    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise StartupError(f"--listen {listen!r} is not HOST:PORT (for example 127.0.0.1:8080)") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns on TCP_NODELAY only for sockets that say so, and
    # without it a response written in two parts waits for a delayed ACK (about 40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot listen on {listen}: {exc.strerror}; choose another with --listen HOST:PORT"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(settings: Settings) -> int:
    if settings.reconciles and settings.source is None and not settings.config_dir.is_dir():
        raise StartupError(f"config directory {settings.config_dir} does not exist; create it or pass --config-dir")
    sock = bind(settings.listen)
    store = AsyncStore.of(await asyncio.to_thread(open_store, settings.store_url))
    if settings.role != "all" and store.dialect == "sqlite":
        await store.close()
        raise StartupError(
            f"--role {settings.role} shares a PostgreSQL store with other replicas; one process owns an "
            "SQLite store and does everything: use --role all (the default) or --store postgresql://..."
        )
    with contextlib.ExitStack() as held:
        if store.dialect == "sqlite":
            held.enter_context(exclusive_owner(settings.store_url))
            # the only process on this store: whatever a crashed predecessor had claimed is free
            released = await store.release_leases()
            if released:
                log.info("taking over deliveries claimed before a crash", extra={"fields": {"count": released}})
        return await _serve(settings, sock, store)


async def _serve(settings: Settings, sock: socket.socket, store: AsyncStore) -> int:
    admin_secret, secret_source = load_admin_secret(settings.state_dir)
    engine_holder: list[DeliveryEngine] = []

    async def drain(integration_id: str) -> None:
        await engine_holder[0].drain(integration_id)

    scope = SecretScope.beside(settings.config_dir, settings.secrets_dirs, settings.secret_env_prefix)
    source = await start_source(settings) if settings.reconciles else None
    reconciler = Reconciler(
        store,
        settings.config_dir,
        resync_seconds=settings.resync_seconds,
        on_remove=drain,
        secret_scope=scope,
        source=source,
        controller=settings.reconciles,
    )
    if source is not None:
        source.on_change = reconciler.trigger
    engine = DeliveryEngine(
        store,
        reconciler,
        http=HttpSink(max_retry_after=settings.max_retry_after),
        retention_seconds=settings.retention_seconds,
    )
    engine_holder.append(engine)
    replica = Replica(
        store,
        engine,
        role=settings.role,
        config_revision=lambda: reconciler.last_pass.revision if reconciler.last_pass else None,
        leading=lambda: reconciler.leading,
    )
    # what was applied before a restart runs again before the first request is taken
    await reconciler.restore()
    # deliveries committed here go straight to this replica's engine only if it delivers
    delivers = settings.delivers
    intake = Intake(
        store, reconciler, on_commit=engine.wake if delivers else None, handoff=engine if delivers else None
    )
    health = HealthMonitor(reconciler, engine, store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = _Server(
        uvicorn.Config(
            create_app(
                Runtime(
                    reconciler,
                    admin_secret,
                    intake,
                    engine,
                    metrics_need_admin=settings.metrics_need_admin,
                    public_status=settings.public_status,
                    stop=stop,
                    health=health,
                    replica=replica,
                    source=source,
                    source_webhook_secret=settings.source_webhook_secret,
                )
            ),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            # h11 always (never httptools, should it be installed): the deadlines are set in it
            http=deadline_protocol(settings.header_timeout, settings.body_timeout),
            # beyond this many connections or requests in progress, new requests are answered 503
            limit_concurrency=settings.max_connections,
        )
    )
    host, port = sock.getsockname()[:2]
    log.info(
        "starting",
        extra={
            "fields": {
                "configDir": str(reconciler.config_dir),
                **({"source": source.spec.display, "ref": source.spec.ref} if source is not None else {}),
                "store": store.describe(),
                "listen": f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}",
                "adminSecret": secret_source,
                "role": settings.role,
            }
        },
    )
    # Roles stop in order: the API stops taking events, intake commits what it holds, the
    # engine finishes requests in flight and gives back what it had not started; the heartbeat
    # goes on until then (else the others would take over what is still being finished).
    intake_stop, engine_stop, replica_stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    roles = {
        "replica": asyncio.create_task(replica.run(replica_stop), name="replica"),
        "api": asyncio.create_task(server.serve(sockets=[sock]), name="api"),
        "intake": asyncio.create_task(intake.run(intake_stop), name="intake"),
        # a replica that does not deliver still reads the shared breakers and pauses, for its status
        "delivery": asyncio.create_task(
            engine.run(engine_stop) if settings.delivers else engine.endpoints.follow(stop), name="delivery"
        ),
        "follow": asyncio.create_task(reconciler.follow(stop), name="follow"),
        "health": asyncio.create_task(health.run(stop), name="health"),
    }
    if settings.reconciles:
        roles |= {
            "reconcile": asyncio.create_task(reconciler.run(stop), name="reconcile"),
            # with a git source, the source role fetches and switches trees, then asks for a pass itself
            "watch": asyncio.create_task(
                source.run(stop) if source is not None else watch(settings.config_dir, reconciler.trigger, stop),
                name="source" if source is not None else "watch",
            ),
            "sync": asyncio.create_task(SyncScheduler(reconciler, intake, engine.http).run(stop), name="sync"),
            "sources": asyncio.create_task(
                source_watcher(reconciler, intake, engine, settings).run(stop), name="sources"
            ),
        }
    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({stopped, *roles.values()}, return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in done if t is not stopped and t.exception() is not None]
    stop.set()
    server.should_exit = True
    log.info("stopping: finishing in-flight work")
    deadline = loop.time() + SHUTDOWN_GRACE_SECONDS
    for name, release in (("api", intake_stop), ("intake", engine_stop), ("delivery", replica_stop)):
        await asyncio.wait({roles[name]}, timeout=max(0.1, deadline - loop.time()))
        if release is not None:
            release.set()
    _, pending = await asyncio.wait(set(roles.values()), timeout=max(0.1, deadline - loop.time()))
    for task in pending:
        task.cancel()
    await store.close()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)
    if failed:
        log.error("a role stopped unexpectedly", exc_info=failed[0].exception())
        return 1
    log.info("stopped")
    return 0


async def start_source(settings: Settings) -> GitSource | None:
    """The git source, with its first fetch done, so the first pass reads the followed head (or,
    if the remote cannot be reached now, the commit checked out before a restart)."""
    if settings.source is None:
        return None
    credentials = settings.source_credentials
    source = GitSource(
        settings.source,
        settings.state_dir,
        interval=settings.source_interval,
        credentials=lambda: credentials,
        allow_rewrite=settings.source_allow_rewrite,
        verify=settings.source_verify,
    )
    first = source.begin()  # not cancelled when slow: run() awaits it instead of fetching again
    done, _ = await asyncio.wait({first}, timeout=FIRST_FETCH_SECONDS)
    if not done:
        log.warning(
            "source: the first fetch is taking long; serving what was checked out before until it ends",
            extra={"fields": {"url": source.spec.display, "seconds": FIRST_FETCH_SECONDS}},
        )
    return source


def source_watcher(reconciler: Reconciler, intake: Intake, engine: DeliveryEngine, settings: Settings) -> SourceWatcher:
    """Lists file integrations' source prefixes, sharing the file sink's storage connections."""
    files = engine.records.get("file")
    return SourceWatcher(
        reconciler, intake, files if isinstance(files, FileSink) else None, retention_seconds=settings.retention_seconds
    )


@contextlib.contextmanager
def exclusive_owner(store_url: str) -> Iterator[None]:
    """One daemon per SQLite store: a second one would take over the first one's claims."""
    import fcntl

    path = Path(store_url.removeprefix("sqlite:///") + ".lock")
    # 0600 like the store beside it
    handle = os.fdopen(os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600), "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StartupError(
            f"another reconciler is running on {store_url}; stop it, or use PostgreSQL "
            "(--store postgresql://...) to run several replicas"
        ) from None
    try:
        yield
    finally:
        handle.close()
