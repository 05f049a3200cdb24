"""API read latency: GET /api/integrations with 1,000 integrations applied, beside GET /healthz
of the same daemon in the same run (the framework's own floor), one client, sequential requests."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import ADMIN, free_port, process  # noqa: E402 - after sys.path is set

WARM_UP = 20


def _integrations(folder: Path, count: int) -> None:
    """`count` webhook integrations that apply without secrets (loopback targets)."""
    for i in range(count):
        (folder / f"hook-{i:05d}.yaml").write_text(
            "apiVersion: cms.integrations/v1\nkind: Integration\n"
            f"id: hook-{i:05d}\nname: Hook {i}\ntype: webhook\n"
            f"labels: {{team: t{i % 10}}}\n"
            f"config: {{endpoint: 'http://127.0.0.1:9/hook/{i}', allowPrivateNetwork: true}}\n"
            "webhooks: [{events: ['user.*', 'grade.published']}]\n"
        )


def _latencies(client: httpx.Client, path: str, count: int) -> list[float]:
    for _ in range(WARM_UP):
        client.get(path).raise_for_status()
    found = []
    for _ in range(count):
        start = time.perf_counter()
        client.get(path).raise_for_status()
        found.append((time.perf_counter() - start) * 1000)
    return sorted(found)


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


@contextlib.contextmanager
def loaded_daemon(count: int) -> Iterator[httpx.Client]:
    """A daemon with `count` labelled integrations, all applied: an admin client of it."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        work = Path(tmp)
        (work / "integrations.d").mkdir()
        _integrations(work / "integrations.d", count)
        command = [sys.executable, "-m", "reconciler", "run", "--listen", f"127.0.0.1:{port}", "--log-format", "json"]
        env = {"ADMIN_SECRET": ADMIN, "PYTHONPATH": str(ROOT)}
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"x-admin-secret": ADMIN}, timeout=60)
        with process(command, port, cwd=work, env=env), client as c:
            deadline = time.monotonic() + 120
            while c.get("/api/integrations", params={"status": "active"}).json()["count"] < count:
                if time.monotonic() > deadline:
                    raise SystemExit("the integrations were not applied in time")
                time.sleep(0.5)
            yield c


def bench_api(args: argparse.Namespace) -> list[dict[str, object]]:
    with loaded_daemon(args.api_integrations) as c:
        listed = _latencies(c, "/api/integrations", args.api_requests)
        filtered = _latencies(c, "/api/integrations?label=team=t3", args.api_requests)
        health = _latencies(c, "/healthz", args.api_requests)
        size = len(c.get("/api/integrations").content)
    row = {
        "integrations": args.api_integrations,
        "requests": args.api_requests,
        "list_p50_ms": round(_percentile(listed, 0.5), 2),
        "list_p99_ms": round(_percentile(listed, 0.99), 2),
        "list_bytes": size,
        "filtered_p99_ms": round(_percentile(filtered, 0.99), 2),
        "healthz_p50_ms": round(_percentile(health, 0.5), 2),
        "healthz_p99_ms": round(_percentile(health, 0.99), 2),
    }
    row["ratio_p99"] = round(row["list_p99_ms"] / row["healthz_p99_ms"], 1)  # type: ignore[operator]
    print(
        f"api: GET /api/integrations with {row['integrations']} integrations ({size:,} bytes): "
        f"p50 {row['list_p50_ms']} ms, p99 {row['list_p99_ms']} ms; filtered by label p99 "
        f"{row['filtered_p99_ms']} ms; GET /healthz of the same daemon p50 {row['healthz_p50_ms']} ms, "
        f"p99 {row['healthz_p99_ms']} ms (p99 ratio {row['ratio_p99']})",
        flush=True,
    )
    return [row]
