"""The status page's list with 1,000 integrations beside GET /api/integrations of the same daemon
in the same run (goal: the page at most twice the JSON list), one client, the two routes timed
in alternation so a slower moment of the machine falls on both."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.api import WARM_UP, _percentile, loaded_daemon  # noqa: E402 - after sys.path is set


def _timed(client: httpx.Client, path: str) -> float:
    start = time.perf_counter()
    client.get(path).raise_for_status()
    return (time.perf_counter() - start) * 1000


def bench_page(args: argparse.Namespace) -> list[dict[str, object]]:
    with loaded_daemon(args.api_integrations) as c:
        for _ in range(WARM_UP):
            _timed(c, "/")
            _timed(c, "/api/integrations")
        page, listed = [], []
        for _ in range(args.api_requests):
            page.append(_timed(c, "/"))
            listed.append(_timed(c, "/api/integrations"))
        page_bytes, list_bytes = len(c.get("/").content), len(c.get("/api/integrations").content)
    page.sort()
    listed.sort()
    row: dict[str, object] = {
        "integrations": args.api_integrations,
        "requests": args.api_requests,
        "page_p50_ms": round(_percentile(page, 0.5), 2),
        "page_p99_ms": round(_percentile(page, 0.99), 2),
        "page_bytes": page_bytes,
        "list_p50_ms": round(_percentile(listed, 0.5), 2),
        "list_p99_ms": round(_percentile(listed, 0.99), 2),
        "list_bytes": list_bytes,
    }
    row["ratio_p50"] = round(_percentile(page, 0.5) / _percentile(listed, 0.5), 2)
    row["ratio_p99"] = round(_percentile(page, 0.99) / _percentile(listed, 0.99), 2)
    print(
        f"page: GET / with {row['integrations']} integrations ({page_bytes:,} bytes): p50 {row['page_p50_ms']} ms, "
        f"p99 {row['page_p99_ms']} ms; GET /api/integrations of the same daemon ({list_bytes:,} bytes): "
        f"p50 {row['list_p50_ms']} ms, p99 {row['list_p99_ms']} ms (ratio p50 {row['ratio_p50']}, "
        f"p99 {row['ratio_p99']}; goal at most 2)",
        flush=True,
    )
    return [row]
