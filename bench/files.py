"""File sink benchmark: objects per second into S3 (moto's server on loopback, in its own process)
through the pipeline, beside a bare s3fs put loop of the same objects at the same concurrency."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.pipeline import free_port, process

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "bench-exports"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench-key",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
CONCURRENCY = 16  # the engine's requests in flight per integration without rateLimit.concurrency
EVENT_DATA = {"userId": 42, "email": "s@example.edu", "name": "Student", "studentId": "IT2024001"}


def _integration(endpoint: str, batch: int) -> str:
    return f"""\
apiVersion: cms.integrations/v1
kind: Integration
id: exports
name: Bench exports
type: file
config:
  url: s3://{BUCKET}/pipeline
  allowPrivateNetwork: true
  storageOptions:
    key: ${{env:AWS_ACCESS_KEY_ID}}
    secret: ${{env:AWS_SECRET_ACCESS_KEY}}
    endpoint_url: {endpoint}
  path: "{{event}}/{{date}}.jsonl"
  batchSize: {batch}
webhooks:
  - events: ["user.*"]
"""


async def _through_pipeline(work: Path, endpoint: str, events: int, batch: int) -> float:
    """Objects per second from resuming a suspended integration until every event is delivered."""
    sys.path.insert(0, str(ROOT))
    from tests.pipeline import Pipeline

    async with Pipeline(work, {"exports.yaml": _integration(endpoint, batch)}, environ=CREDENTIALS) as p:
        await p.reconciler.suspend("exports", "bench", "queue up first")
        for start in range(0, events, 500):
            await asyncio.gather(*(p.emit("user.login", EVENT_DATA) for _ in range(min(500, events - start))))
        began = time.perf_counter()
        await p.reconciler.resume("exports", "bench", "go")
        p.engine.wake()
        while p.statuses("exports").get("delivered", 0) < events:
            await asyncio.sleep(0.02)
        return time.perf_counter() - began


def _filesystem(endpoint: str) -> object:
    import fsspec

    return fsspec.filesystem(
        "s3",
        key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=endpoint,
        skip_instance_cache=True,
    )


def _bare(endpoint: str, written: dict[str, bytes]) -> float:
    """The same objects put with s3fs alone, CONCURRENCY at a time; seconds taken."""
    fs = _filesystem(endpoint)
    items = [(key.replace("/pipeline/", "/bare/", 1), body) for key, body in written.items()]
    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(lambda item: fs.pipe_file(*item), items))  # type: ignore[attr-defined]
    return time.perf_counter() - began


def bench_files(args: argparse.Namespace) -> list[dict[str, object]]:
    """Objects per second into moto's S3 through the pipeline, beside bare s3fs puts."""
    os.environ.update(CREDENTIALS)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    rows: list[dict[str, object]] = []
    with process(command, port):
        fs = _filesystem(endpoint)
        fs.mkdir(BUCKET)  # type: ignore[attr-defined]
        for batch in (1, 100):
            events = args.objects if batch == 1 else args.objects * 10
            prefix = f"{BUCKET}/pipeline"
            with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp:
                elapsed = asyncio.run(_through_pipeline(Path(tmp), endpoint, events, batch))
            keys = fs.find(prefix)  # type: ignore[attr-defined]
            written = fs.cat(keys)  # type: ignore[attr-defined]
            lines = sum(body.count(b"\n") for body in written.values())
            if lines != events:
                raise SystemExit(f"{lines} records in {len(keys)} objects, {events} expected")
            bare = _bare(endpoint, written)
            fs.rm(prefix, recursive=True)  # type: ignore[attr-defined]
            fs.rm(f"{BUCKET}/bare", recursive=True)  # type: ignore[attr-defined]
            row = {
                "batch": batch,
                "events": events,
                "objects": len(keys),
                "objects_per_s": round(len(keys) / elapsed),
                "records_per_s": round(events / elapsed),
                "bare_s3fs_objects_per_s": round(len(keys) / bare),
                "ratio": round(bare / elapsed, 2),
            }
            rows.append(row)
            print(
                f"files: batchSize {batch}: {row['objects_per_s']} objects/s ({row['records_per_s']} records/s) "
                f"into moto's S3 through the pipeline (claim, write, record) vs bare s3fs puts of the same "
                f"{len(keys)} objects, {CONCURRENCY} at a time: {row['bare_s3fs_objects_per_s']}/s; "
                f"ratio {row['ratio']}",
                flush=True,
            )
    return rows
