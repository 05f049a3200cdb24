"""End to end: concurrent clients post events while they are delivered to a loopback sink.

For each system: time from the first post to the last arrival (events per second), the time
from each acknowledgement to that event's arrival (p50, p99; negative for the forwarder, which
posts before it answers), the CPU its processes used per
event, and how many acknowledged events never arrived. The daemon (SQLite, PostgreSQL) runs
beside the peers its users would otherwise build, in alternating rounds, medians compared:

- forwarder: a Starlette endpoint posting each event with a shared aiohttp session before it
  answers. The ceiling of one process here; it stores nothing (a crash loses what is in flight,
  and a sink that is down fails the sender's request).
- celery: a Starlette endpoint calling `.delay` on Celery 5 with the Redis broker, `acks_late`,
  a prefork worker posting with requests. Acknowledged means in Redis' memory (no fsync by
  default): a Redis restart loses the queue.
- procrastinate: a Starlette endpoint deferring a job to PostgreSQL (committed before the 202),
  the worker posting with aiohttp. Durable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.pipeline import ADMIN, HERE, ROOT, free_port, process, target, wait_for_port

TRIGGER = "/api/integrations/webhooks/trigger"
PG_ADMIN = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = "redis://127.0.0.1:6379/15"
WARM_EVENTS = 100
PATIENCE_SECONDS = 30.0  # no new arrival for this long: the rest are counted lost
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """One system's figures in one round."""

    events: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_event: float
    lost: int

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


# --- measuring --------------------------------------------------------------------------------------


def cpu_seconds(root_pids: list[int]) -> float:
    """User and system CPU of these processes and all their descendants, from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            pid = int(entry.name)
            parents[pid] = int(fields[1])
            times[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    wanted = set(root_pids)
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in wanted} - wanted
        grew = bool(more)
        wanted |= more
    return sum(times.get(pid, 0.0) for pid in wanted)


async def post_events(urls: list[str], count: int, concurrency: int) -> tuple[dict[str, float], float]:
    """Post `count` events from `concurrency` clients, each to one of `urls` in turn (a load
    balancer's keep-alive connection): (event id -> acknowledged at, first post at)."""
    acknowledged: dict[str, float] = {}
    started = time.time()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"x-admin-secret": ADMIN}) as session:

        async def client(first: int) -> None:
            url = urls[first % len(urls)]
            for n in range(first, count, concurrency):
                body = {"event": "user.login", "data": {"userId": n, "email": f"s{n}@example.edu"}}
                async with session.post(url, json=body) as response:
                    if response.status != 202:
                        raise SystemExit(f"{url} answered {response.status}: {await response.text()}")
                    acknowledged[(await response.json())["id"]] = time.time()

        await asyncio.gather(*(client(first) for first in range(concurrency)))
    return acknowledged, started


async def arrivals(sink: str, expected: set[str]) -> dict[str, float]:
    """The sink's arrival times, once every expected id arrived or none came for a while."""
    last_count, last_change = -1, time.monotonic()
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"{sink}/stats") as response:
                seen: dict[str, float] = (await response.json())["arrivals"]
            arrived = expected.intersection(seen)
            if len(arrived) == len(expected):
                return seen
            if len(arrived) != last_count:
                last_count, last_change = len(arrived), time.monotonic()
            elif time.monotonic() - last_change > PATIENCE_SECONDS:
                return seen
            await asyncio.sleep(0.05)


async def reset(sink: str) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"{sink}/reset") as response:
        await response.read()


def measure(urls: list[str], sink: str, pids: list[int], count: int, concurrency: int) -> Run:
    """Warm up until events flow, then post `count` events and wait for them at the sink."""
    warm, _ = asyncio.run(post_events(urls, WARM_EVENTS, min(concurrency, 10)))
    asyncio.run(arrivals(sink, set(warm)))
    asyncio.run(reset(sink))
    cpu_before = cpu_seconds(pids)
    acknowledged, started = asyncio.run(post_events(urls, count, concurrency))
    seen = asyncio.run(arrivals(sink, set(acknowledged)))
    cpu_used = cpu_seconds(pids) - cpu_before
    delays = sorted((seen[i] - at) * 1000 for i, at in acknowledged.items() if i in seen)
    last = max((seen[i] for i in acknowledged if i in seen), default=time.time())
    return Run(
        events=len(acknowledged),
        seconds=last - started,
        p50_ms=statistics.median(delays) if delays else float("nan"),
        p99_ms=delays[min(len(delays) - 1, int(len(delays) * 0.99))] if delays else float("nan"),
        cpu_ms_per_event=cpu_used * 1000 / len(acknowledged),
        lost=sum(1 for i in acknowledged if i not in seen),
    )


# --- the systems ------------------------------------------------------------------------------------


@contextlib.contextmanager
def background(args: list[str], env: dict[str, str], cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A process without a port to wait for (a queue worker)."""
    proc = subprocess.Popen(
        args, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema: its name; dropped afterwards."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {name} CASCADE")


System = Callable[[str], contextlib.AbstractContextManager[tuple[list[str], list[int]]]]


def _peer_env(sink_url: str) -> dict[str, str]:
    return {"SINK_URL": sink_url, "PYTHONPATH": str(ROOT), "REDIS_URL": REDIS_URL}


@contextlib.contextmanager
def forwarder(sink_url: str) -> Iterator[tuple[list[str], list[int]]]:
    port = free_port()
    with background([sys.executable, str(HERE / "e2e_peers.py"), "forwarder", str(port)], _peer_env(sink_url)) as web:
        wait_for_port(port)
        yield [f"http://127.0.0.1:{port}{TRIGGER}"], [web.pid]


def daemon(store: str | None, replicas: int = 1) -> System:
    """The daemon, or `replicas` of it on one PostgreSQL schema (each `--role all`, in a directory
    of its own with the same file): clients spread over them as a load balancer would."""

    @contextlib.contextmanager
    def start(sink_url: str) -> Iterator[tuple[list[str], list[int]]]:
        sink_port = int(sink_url.rsplit(":", 1)[1].split("/")[0])
        with contextlib.ExitStack() as held:
            extra: list[str] = []
            if store == "postgresql":
                schema = held.enter_context(pg_schema())
                extra = ["--store", f"{PG_ADMIN}?options=-csearch_path%3D{schema}"]
            urls, pids = [], []
            for _ in range(replicas):
                work = Path(held.enter_context(tempfile.TemporaryDirectory(prefix="bench-e2e-")))
                (work / "integrations.d").mkdir()
                (work / "integrations.d" / "target.yaml").write_text(target(sink_port))
                port = free_port()
                command = [sys.executable, "-m", "reconciler", "run", "--listen", f"127.0.0.1:{port}", *extra]
                env = {"ADMIN_SECRET": ADMIN, "PYTHONPATH": str(ROOT)}
                proc = held.enter_context(background([*command, "--log-format", "json"], env, cwd=work))
                urls.append(f"http://127.0.0.1:{port}")
                pids.append(proc.pid)
            for url in urls:  # a replica that follows takes events once it has read a pass back
                wait_ready(url)
            yield [url + TRIGGER for url in urls], pids

    return start


def wait_ready(url: str, timeout: float = 60.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready within {timeout:.0f} s")


def celery(pool: str, concurrency: int) -> System:
    @contextlib.contextmanager
    def start(sink_url: str) -> Iterator[tuple[list[str], list[int]]]:
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        port = free_port()
        env = _peer_env(sink_url)
        worker_command = [
            sys.executable, "-m", "celery", "-A", "bench.e2e_peers:celery_app", "worker",
            "--pool", pool, "--concurrency", str(concurrency), "--loglevel", "warning", "--without-mingle",
            "--without-gossip", "--without-heartbeat",
        ]  # fmt: skip
        with (
            background(worker_command, env, cwd=ROOT) as worker,
            background([sys.executable, str(HERE / "e2e_peers.py"), "celery-web", str(port)], env) as web,
        ):
            wait_for_port(port)
            yield [f"http://127.0.0.1:{port}{TRIGGER}"], [worker.pid, web.pid]

    return start


def procrastinate(concurrency: int) -> System:
    @contextlib.contextmanager
    def start(sink_url: str) -> Iterator[tuple[list[str], list[int]]]:
        port = free_port()
        with pg_schema() as schema:
            conninfo = f"{PG_ADMIN}?options=-csearch_path%3D{schema}"
            env = {**_peer_env(sink_url), "PG_CONNINFO": conninfo}
            peers = str(HERE / "e2e_peers.py")
            subprocess.run(
                [sys.executable, peers, "procrastinate-schema"],
                env={**os.environ, **env},
                check=True,
                timeout=60,
                capture_output=True,
            )
            with (
                background([sys.executable, peers, "procrastinate-worker", str(concurrency)], env) as worker,
                background([sys.executable, peers, "procrastinate-web", str(port)], env) as web,
            ):
                wait_for_port(port)
                yield [f"http://127.0.0.1:{port}{TRIGGER}"], [worker.pid, web.pid]

    return start


def available_systems(args: argparse.Namespace) -> dict[str, tuple[System, str]]:
    """name -> (system, what its acknowledgement means); peers whose services are missing are left out."""
    systems: dict[str, tuple[System, str]] = {
        "forwarder": (forwarder, "nothing stored: in-flight events die with the process"),
        "ours-sqlite": (daemon(None), "durable: committed with fsync before the 202"),
    }
    if _reachable(PG_ADMIN):
        systems["ours-postgresql"] = (daemon("postgresql"), "durable: committed to PostgreSQL before the 202")
        systems["ours-postgresql-x3"] = (
            daemon("postgresql", replicas=3),
            "durable: committed to PostgreSQL before the 202; three replicas, clients spread over them",
        )
    if _module("celery") and _reachable_redis():
        for pool, concurrency in args.celery_pools:
            systems[f"celery-{pool}-{concurrency}"] = (
                celery(pool, concurrency),
                "in Redis' memory (no fsync by default); acks_late",
            )
    if _module("procrastinate") and _reachable(PG_ADMIN):
        systems["procrastinate"] = (procrastinate(16), "durable: committed to PostgreSQL before the 202")
    return systems


def _module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _reachable(url: str) -> bool:
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
        return True
    except Exception:
        return False


def _reachable_redis() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping())
    except Exception:
        return False


def bench_e2e(args: argparse.Namespace) -> list[dict[str, object]]:
    """Every available system, `args.rounds` alternating rounds, medians; ratios to the forwarder."""
    sink_port = free_port()
    sink_url = f"http://127.0.0.1:{sink_port}"
    systems = available_systems(args)
    if args.systems:
        unknown = set(args.systems) - set(systems)
        if unknown:
            raise SystemExit(
                f"--systems: {', '.join(sorted(unknown))} not available here; choose among {', '.join(systems)}"
            )
        systems = {name: found for name, found in systems.items() if name == "forwarder" or name in args.systems}
    runs: dict[str, list[Run]] = {name: [] for name in systems}
    with process([sys.executable, str(HERE / "peers.py"), "sink", str(sink_port)], sink_port):
        for round_ in range(args.rounds):
            for name, (start, _) in systems.items():
                with start(f"{sink_url}/hook") as (urls, pids):
                    run = measure(urls, sink_url, pids, args.events, args.clients)
                runs[name].append(run)
                print(
                    f"  round {round_ + 1} {name}: {run.per_second:.0f} events/s, p50 {run.p50_ms:.1f} ms, "
                    f"p99 {run.p99_ms:.1f} ms, {run.cpu_ms_per_event:.2f} ms CPU/event, {run.lost} lost",
                    flush=True,
                )
    ceiling = statistics.median(r.per_second for r in runs["forwarder"])
    rows = []
    for name, (_, durability) in systems.items():
        done = runs[name]
        rate = statistics.median(r.per_second for r in done)
        rows.append(
            {
                "system": name,
                "events": args.events,
                "clients": args.clients,
                "rounds": args.rounds,
                "per_s": round(rate),
                "ratio_to_forwarder": round(rate / ceiling, 2),
                "p50_ms": round(statistics.median(r.p50_ms for r in done), 1),
                "p99_ms": round(statistics.median(r.p99_ms for r in done), 1),
                "cpu_ms_per_event": round(statistics.median(r.cpu_ms_per_event for r in done), 2),
                "lost": sum(r.lost for r in done),
                "runs": [round(r.per_second) for r in done],
                "durability": durability,
            }
        )
    print("e2e (medians; ratio to the bare forwarder):", flush=True)
    for row in rows:
        print(
            f"  {row['system']:<22} {row['per_s']:>6}/s  ratio {row['ratio_to_forwarder']:<5} p50 {row['p50_ms']} ms "
            f"p99 {row['p99_ms']} ms  {row['cpu_ms_per_event']} ms CPU/event  lost {row['lost']}  "
            f"runs {row['runs']}  ({row['durability']})",
            flush=True,
        )
    return rows
