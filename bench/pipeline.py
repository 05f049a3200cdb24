"""Event pipeline benchmarks: durable intake, delivery throughput, latency, backlog memory."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
ADMIN = "bench-admin-secret-0123456789"
EVENT = {"event": "user.login", "data": {"userId": 42, "email": "s@example.edu"}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


@contextmanager
def process(args: list[str], port: int, cwd: Path | None = None, env: dict[str, str] | None = None) -> Iterator[None]:
    log = open(os.devnull, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, cwd=cwd, env={**os.environ, **(env or {})}, stdout=log, stderr=log)
    try:
        wait_for_port(port)
        yield
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def target(sink_port: int, extra: str = "") -> str:
    return f"""\
apiVersion: cms.integrations/v1
kind: Integration
name: Bench target
type: webhook
config:
  endpoint: http://127.0.0.1:{sink_port}/hook
  allowPrivateNetwork: true
{extra}webhooks:
  - events: ["user.*"]
"""


async def _post_load(url: str, count: int, concurrency: int, keyed: bool = False) -> float:
    """Events accepted per second: `concurrency` clients posting `count` events in all;
    `keyed`: each with an Idempotency-Key of its own, as a client that never duplicates sends."""
    done = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"x-admin-secret": ADMIN}) as session:

        async def client(share: int) -> None:
            nonlocal done
            for _ in range(share):
                headers = {"idempotency-key": str(uuid.uuid4())} if keyed else None
                async with session.post(url, json=EVENT, headers=headers) as response:
                    if response.status != 202:
                        raise SystemExit(f"{url} answered {response.status}: {await response.text()}")
                    await response.read()
                    done += 1

        warm = min(200, count // 10)
        await asyncio.gather(*(client(warm // concurrency) for _ in range(concurrency)))
        start = time.perf_counter()
        await asyncio.gather(*(client(count // concurrency) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return (count // concurrency * concurrency) / elapsed


@contextmanager
def _intake_daemon(sink_port: int, paused: bool) -> Iterator[str]:
    """A real daemon with one webhook integration; yields its trigger URL. `paused`: the
    integration is suspended, so every event still commits a delivery, but none is sent."""
    daemon_port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        work = Path(tmp)
        (work / "integrations.d").mkdir()
        (work / "integrations.d" / "target.yaml").write_text(target(sink_port))
        with process(
            [sys.executable, "-m", "reconciler", "run", "--listen", f"127.0.0.1:{daemon_port}", "--log-format", "json"],
            daemon_port,
            cwd=work,
            env={"ADMIN_SECRET": ADMIN, "PYTHONPATH": str(ROOT)},
        ):
            time.sleep(1.0)  # the first reconcile pass
            if paused:
                import httpx

                httpx.post(
                    f"http://127.0.0.1:{daemon_port}/api/integrations/target/deactivate",
                    headers={"x-admin-secret": ADMIN},
                    json={"reason": "bench"},
                ).raise_for_status()
            yield f"http://127.0.0.1:{daemon_port}/api/integrations/webhooks/trigger"


def bench_intake(args: argparse.Namespace) -> list[dict[str, object]]:
    """Durable events accepted per second over HTTP, beside a bare Starlette 202. The two
    alternate over several rounds and the medians are compared, as in the delivery section."""
    sink_port, bare_port = free_port(), free_port()
    ours: list[float] = []
    bare: list[float] = []
    with (
        process([sys.executable, str(HERE / "peers.py"), "sink", str(sink_port)], sink_port),
        process([sys.executable, str(HERE / "peers.py"), "bare202", str(bare_port)], bare_port),
    ):
        bare_url = f"http://127.0.0.1:{bare_port}/api/integrations/webhooks/trigger"
        with _intake_daemon(sink_port, paused=True) as url:
            for _ in range(args.rounds):
                bare.append(asyncio.run(_post_load(bare_url, args.events, args.concurrency)))
                ours.append(asyncio.run(_post_load(url, args.events, args.concurrency)))
        with _intake_daemon(sink_port, paused=False) as url:
            delivering = asyncio.run(_post_load(url, args.events, args.concurrency))
    paused, bare_median = statistics.median(ours), statistics.median(bare)
    row = {
        "events": args.events,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "durable_per_s": round(paused),
        "durable_while_delivering_per_s": round(delivering),
        "bare_starlette_per_s": round(bare_median),
        "ratio": round(paused / bare_median, 2),
        "ratio_while_delivering": round(delivering / bare_median, 2),
        "durable_runs": [round(x) for x in ours],
        "bare_runs": [round(x) for x in bare],
    }
    print(
        f"intake: {row['durable_per_s']} durable events/s over HTTP (each committed with its delivery before "
        f"the 202; {row['durable_while_delivering_per_s']}/s while the same process delivers them) vs bare "
        f"Starlette 202: {row['bare_starlette_per_s']}/s; ratio {row['ratio']} "
        f"({row['ratio_while_delivering']} while delivering; medians of {args.rounds} alternating rounds: "
        f"ours {row['durable_runs']}, bare {row['bare_runs']})",
        flush=True,
    )
    return [row]


def bench_idempotent(args: argparse.Namespace) -> list[dict[str, object]]:
    """Intake with an Idempotency-Key on every request beside the same intake without, on one
    daemon, alternating rounds (the goal: at least 0.9 of the rate without)."""
    sink_port = free_port()
    keyed: list[float] = []
    plain: list[float] = []
    with (
        process([sys.executable, str(HERE / "peers.py"), "sink", str(sink_port)], sink_port),
        _intake_daemon(sink_port, paused=True) as url,
    ):
        for _ in range(args.rounds):
            plain.append(asyncio.run(_post_load(url, args.events, args.concurrency)))
            keyed.append(asyncio.run(_post_load(url, args.events, args.concurrency, keyed=True)))
    with_key, without = statistics.median(keyed), statistics.median(plain)
    row = {
        "events": args.events,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "keyed_per_s": round(with_key),
        "unkeyed_per_s": round(without),
        "ratio": round(with_key / without, 2),
        "keyed_runs": [round(x) for x in keyed],
        "unkeyed_runs": [round(x) for x in plain],
    }
    print(
        f"idempotent intake: {row['keyed_per_s']} events/s with an Idempotency-Key on every request vs "
        f"{row['unkeyed_per_s']}/s without; ratio {row['ratio']} (medians of {args.rounds} alternating rounds: "
        f"keyed {row['keyed_runs']}, without {row['unkeyed_runs']})",
        flush=True,
    )
    return [row]


async def _bare_client(url: str, bodies: list[bytes], concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = list(reversed(bodies))

        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(bodies) / (time.perf_counter() - start)


async def _sink_stats(port: int) -> dict[str, object]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/stats") as r:
        return dict(await r.json())


async def _sink_reset(port: int) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"http://127.0.0.1:{port}/reset") as r:
        await r.read()


def _pipeline(work: Path, sink_port: int, extra: str = "") -> object:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from tests.pipeline import Pipeline

    return Pipeline(work, {"target.yaml": target(sink_port, extra)})


def bench_delivery(args: argparse.Namespace) -> list[dict[str, object]]:
    """Deliveries per second end to end to a local sink, beside a bare aiohttp client.

    The two alternate over several rounds and the medians are compared: on a shared machine a
    single pair of runs can land in different moments of someone else's load."""
    sink_port = free_port()
    bodies = [
        json.dumps(
            {"id": f"evt_{n}", "event": "user.login", "timestamp": "2024-01-15T10:30:00.000Z", "data": EVENT["data"]}
        ).encode()
        for n in range(args.deliveries)
    ]
    ours: list[float] = []
    bare: list[float] = []
    with process([sys.executable, str(HERE / "peers.py"), "sink", str(sink_port)], sink_port):
        for _ in range(args.rounds):
            bare.append(asyncio.run(_bare_client(f"http://127.0.0.1:{sink_port}/hook", bodies, 16)))
            with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
                ours.append(asyncio.run(_drain_queue(Path(tmp), sink_port, args.deliveries)))
    ours_median, bare_median = statistics.median(ours), statistics.median(bare)
    row = {
        "deliveries": args.deliveries,
        "rounds": args.rounds,
        "per_s": round(ours_median),
        "bare_aiohttp_per_s": round(bare_median),
        "ratio": round(ours_median / bare_median, 2),
        "per_s_runs": [round(x) for x in ours],
        "bare_runs": [round(x) for x in bare],
    }
    print(
        f"delivery: {row['per_s']} deliveries/s end to end (claim, send, record) vs a bare aiohttp client "
        f"posting the same bodies: {row['bare_aiohttp_per_s']}/s; ratio {row['ratio']} "
        f"(medians of {args.rounds} alternating rounds: ours {row['per_s_runs']}, bare {row['bare_runs']})",
        flush=True,
    )
    return [row]


async def _drain_queue(work: Path, sink_port: int, count: int) -> float:
    """Queue `count` deliveries while the target is suspended, then time their delivery."""
    async with _pipeline(work, sink_port) as p:  # type: ignore[attr-defined]
        await p.reconciler.suspend("target", "bench", "queue up first")
        for start in range(0, count, 500):
            await asyncio.gather(*(p.emit("user.login", EVENT["data"]) for _ in range(min(500, count - start))))
        await _sink_reset(sink_port)
        await p.reconciler.resume("target", "bench", "go")  # an operator's action, not timed
        began = time.perf_counter()
        p.engine.wake()
        # sent and answered (the engine's own count, read without touching the store), then
        # recorded: the clock stops once every outcome is written
        while p.engine.stats.total("delivered") < count:
            await asyncio.sleep(0.002)
        await p.engine.flush()
        elapsed = time.perf_counter() - began
        stored = (await asyncio.to_thread(p.statuses, "target")).get("delivered", 0)
        if stored != count:
            raise SystemExit(f"{count} deliveries were sent but {stored} are recorded delivered")
        return count / elapsed


def bench_latency(args: argparse.Namespace) -> list[dict[str, object]]:
    """Acknowledgement to first attempt at a steady rate."""
    sink_port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp,
        process([sys.executable, str(HERE / "peers.py"), "sink", str(sink_port)], sink_port),
    ):

        async def run() -> list[float]:
            acked: dict[str, float] = {}
            async with _pipeline(Path(tmp), sink_port) as p:  # type: ignore[attr-defined]
                interval = 1.0 / args.rate
                start = time.perf_counter()
                tasks = []

                async def one() -> None:
                    accepted = await p.emit("user.login", EVENT["data"])
                    acked[accepted.id] = time.time()

                for n in range(args.rate * args.seconds):
                    delay = start + n * interval - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(one()))
                await asyncio.gather(*tasks)
                while (await asyncio.to_thread(p.statuses, "target")).get("delivered", 0) < len(acked):
                    await asyncio.sleep(0.05)
            arrivals = (await _sink_stats(sink_port))["arrivals"]
            assert isinstance(arrivals, dict)
            return sorted((arrivals[i] - t) * 1000 for i, t in acked.items() if i in arrivals)

        latencies = asyncio.run(run())
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    row = {"rate_per_s": args.rate, "events": len(latencies), "p50_ms": round(p50, 1), "p99_ms": round(p99, 1)}
    print(
        f"latency: acknowledgement -> first attempt at {args.rate} events/s over {args.seconds} s: "
        f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms",
        flush=True,
    )
    return [row]


def bench_backlog(args: argparse.Namespace) -> list[dict[str, object]]:
    """Peak memory as deliveries pile up for a dead endpoint (in a child, for its own RSS)."""
    out = subprocess.run(
        [sys.executable, __file__, "_backlog", str(args.backlog)], capture_output=True, text=True, check=True
    )
    figures = json.loads(out.stdout)
    print(
        "backlog: peak memory with deliveries queued for a dead endpoint: "
        + ", ".join(f"{n:,} queued: {mib} MiB" for n, mib in figures["points"]),
        flush=True,
    )
    return [figures]


def _backlog_child(total: int) -> None:
    dead_port = free_port()  # nothing listens: every attempt is refused

    async def run() -> list[tuple[int, int]]:
        points = []
        with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
            async with _pipeline(Path(tmp), dead_port) as p:  # type: ignore[attr-defined]
                emitted = 0
                marks = sorted({total // 10, total // 2, total})
                for mark in marks:
                    while emitted < mark:
                        batch = min(1000, mark - emitted)
                        await asyncio.gather(*(p.emit("user.login", EVENT["data"]) for _ in range(batch)))
                        emitted += batch
                    await asyncio.sleep(1.0)  # let the engine claim, fail and back off
                    points.append((emitted, round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
        return points

    print(json.dumps({"points": asyncio.run(run())}))


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "_backlog":
    _backlog_child(int(sys.argv[2]))
