"""Database sink benchmark: rows per second into PostgreSQL through the pipeline, beside a bare
psycopg executemany of the same rows in the same batches."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BATCH = 200  # the bundled postgres-reporting example's batchSize
EVENT_DATA = {"userId": 42, "email": "s@example.edu", "name": "Student", "studentId": "IT2024001"}
UPSERT = (
    "INSERT INTO {table} (event_id, event, timestamp, data) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (event_id) DO UPDATE SET event = EXCLUDED.event, timestamp = EXCLUDED.timestamp, "
    "data = EXCLUDED.data"
)


def _integration(batch: int) -> str:
    return f"""\
apiVersion: cms.integrations/v1
kind: Integration
id: warehouse
name: Bench warehouse
type: database
config:
  url: ${{env:WAREHOUSE_URL}}
  table: cms_events
  mode: upsert
  key: [event_id]
  createTable: true
  batchSize: {batch}
webhooks:
  - events: ["user.*"]
"""


class _Nothing:
    """A record sink that writes nothing: what the pipeline costs around the sink."""

    async def write(self, integration: object, envelopes: list[dict[str, object]], message_id: str) -> object:
        from reconciler.sinks import SinkResult

        return SinkResult(ok=True, status=None, latency_ms=0.0, excerpt=f"{len(envelopes)} rows dropped")

    async def check(self, integration: object) -> object:
        raise NotImplementedError

    async def close(self) -> None:
        pass


async def _through_pipeline(
    work: Path, url: str, rows: int, batch: int, write_nothing: bool = False
) -> tuple[float, list[dict[str, object]]]:
    """Rows per second from resuming a suspended integration until every row is delivered."""
    sys.path.insert(0, str(ROOT))
    from tests.pipeline import Pipeline

    files = {"warehouse.yaml": _integration(batch)}
    async with Pipeline(work, files, environ={"WAREHOUSE_URL": url}) as p:
        if write_nothing:
            await p.engine.records["database"].close()
            p.engine.records["database"] = _Nothing()  # type: ignore[assignment]
        await p.reconciler.suspend("warehouse", "bench", "queue up first")
        for start in range(0, rows, 500):
            await asyncio.gather(*(p.emit("user.registered", EVENT_DATA) for _ in range(min(500, rows - start))))
        began = time.perf_counter()
        await p.reconciler.resume("warehouse", "bench", "go")
        p.engine.wake()
        while p.statuses("warehouse").get("delivered", 0) < rows:
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - began
        envelopes = [
            {"id": e["id"], "event": e["event"], "timestamp": e["timestamp"], "data": e["data"]}
            for e in _envelopes(p.store, rows)
        ]
    return rows / elapsed, envelopes


def _envelopes(store: object, rows: int) -> list[dict[str, object]]:
    """The stored events, for the peer to write the same rows."""
    from reconciler.store import schema as t

    engine: sa.Engine = store.engine  # type: ignore[attr-defined]
    with engine.connect() as connection:
        result = connection.execute(sa.select(t.events).limit(rows)).mappings()
        return [
            {
                "id": row["id"],
                "event": row["event"],
                "timestamp": row["timestamp"],
                "data": row["data"] if isinstance(row["data"], dict) else json.loads(row["data"]),
            }
            for row in result
        ]


def _bare(url: str, envelopes: list[dict[str, object]], batch: int) -> float:
    """The same rows with psycopg alone: executemany of the same upsert, one transaction per batch."""
    from datetime import datetime

    import psycopg
    from psycopg.types.json import Jsonb

    rows = [(e["id"], e["event"], datetime.fromisoformat(str(e["timestamp"])), Jsonb(e["data"])) for e in envelopes]
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as connection:
        connection.execute(
            "CREATE TABLE bare_events (event_id varchar(255) PRIMARY KEY, event varchar(255), "
            "timestamp timestamptz, data jsonb)"
        )
        connection.commit()
        statement = UPSERT.format(table="bare_events")
        began = time.perf_counter()
        for start in range(0, len(rows), batch):
            with connection.cursor() as cursor:
                cursor.executemany(statement, rows[start : start + batch])
            connection.commit()
        return len(rows) / (time.perf_counter() - began)


def _sink_alone(url: str, envelopes: list[dict[str, object]], batch: int) -> float:
    """The same rows through DatabaseSink.write alone, batch after batch: the sink's share."""
    from types import SimpleNamespace

    from reconciler.manifests.models import DatabaseConfig
    from reconciler.sinks.database import DatabaseSink

    config = DatabaseConfig.model_validate(
        {"url": url, "table": "sink_events", "mode": "upsert", "key": ["event_id"], "createTable": True},
        strict=False,
    )
    integration = SimpleNamespace(id="sink", generation=1, spec=SimpleNamespace(config=config), resolved=None)

    async def run() -> float:
        sink = DatabaseSink()
        try:
            first = await sink.write(integration, envelopes[:1], "warm-up")  # creates the table
            if not first.ok:
                raise SystemExit(first.error)
            began = time.perf_counter()
            for start in range(1, len(envelopes), batch):
                result = await sink.write(integration, envelopes[start : start + batch], f"b{start}")
                if not result.ok:
                    raise SystemExit(result.error)
            return (len(envelopes) - 1) / (time.perf_counter() - began)
        finally:
            await sink.close()

    return asyncio.run(run())


def bench_database(args: argparse.Namespace) -> list[dict[str, object]]:
    """Rows per second into PostgreSQL through the pipeline, beside bare psycopg."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-database-") as tmp:
            ours, envelopes = asyncio.run(_through_pipeline(Path(tmp), url, args.rows, BATCH))
        with tempfile.TemporaryDirectory(prefix="bench-database-") as tmp:
            ceiling, _ = asyncio.run(_through_pipeline(Path(tmp), url, args.rows, BATCH, write_nothing=True))
        with admin.connect() as connection:
            written = connection.execute(sa.text(f"SELECT count(*) FROM {schema}.cms_events")).scalar()
        if written != args.rows:
            raise SystemExit(f"{written} rows in the table, {args.rows} expected")
        alone = _sink_alone(url, envelopes, BATCH)
        bare = _bare(url, envelopes, BATCH)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    row = {
        "rows": args.rows,
        "batch": BATCH,
        "per_s": round(ours),
        "sink_alone_per_s": round(alone),
        "bare_psycopg_per_s": round(bare),
        "ratio": round(ours / bare, 2),
        "sink_alone_ratio": round(alone / bare, 2),
        "pipeline_writing_nothing_per_s": round(ceiling),
    }
    print(
        f"database: {row['per_s']} rows/s into PostgreSQL through the pipeline (claim, upsert in batches of "
        f"{BATCH}, record) vs bare psycopg executemany of the same rows and batches: "
        f"{row['bare_psycopg_per_s']}/s; ratio {row['ratio']} (the sink's writes alone, without the pipeline: "
        f"{row['sink_alone_per_s']}/s, ratio {row['sink_alone_ratio']}; the pipeline with a sink that writes "
        f"nothing: {row['pipeline_writing_nothing_per_s']}/s)",
        flush=True,
    )
    return [row]
