"""Benchmarks (`make bench`): each figure beside a peer measured in the same run.

These machines are shared and noisy, so absolute numbers drift; the ratio to the peer is
what to compare across runs. Results are recorded in docs/benchmarks.md.

    python bench/run.py                 # every section
    python bench/run.py validate        # one section
    python bench/run.py validate --sizes 1000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

# Runs a command and prints its peak resident memory (KiB) on the last line of stderr:
# the wrapper has exactly one child, so RUSAGE_CHILDREN is that child's own peak.
_MEASURE = (
    "import resource, subprocess, sys;"
    "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE);"
    "sys.stderr.write(p.stderr.decode(errors='replace'));"
    "sys.stderr.write('\\nmaxrss_kib=%d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);"
    "sys.exit(p.returncode)"
)


def measure(command: list[str]) -> tuple[float, float, int]:
    """(seconds, peak MiB, exit code) of one command."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    peak_kib = int(proc.stderr.rsplit("maxrss_kib=", 1)[1].split()[0])
    return elapsed, peak_kib / 1024, proc.returncode


def generate_integrations(target: Path, count: int) -> list[Path]:
    """`count` integration files, cycling through the scaffolding templates with new ids."""
    from reconciler.manifests.scaffold import scaffolds

    templates = [s for s in scaffolds().values() if s.data.get("kind") == "Integration"]
    # the inbound template needs a unique secret per file, which its scaffold cannot give
    templates = [s for s in templates if "receive" not in s.data]
    paths = []
    for i in range(count):
        scaffold = templates[i % len(templates)]
        path = target / f"{scaffold.name}-{i:05d}.yaml"
        path.write_text(scaffold.render(f"{scaffold.name}-{i:05d}"), encoding="utf-8")
        paths.append(path)
    return paths


def bench_validate(args: argparse.Namespace) -> list[dict[str, object]]:
    """reconciler validate vs check-jsonschema on the same files and schema."""
    schema = ROOT / "schemas" / "integration.schema.json"
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
            folder = Path(tmp)
            files = generate_integrations(folder, size)
            ours = measure([str(BIN / "reconciler"), "validate", "--quiet", str(folder)])
            peer = measure([str(BIN / "check-jsonschema"), "--schemafile", str(schema), *map(str, files)])
            if ours[2] != 0 or peer[2] != 0:
                raise SystemExit(f"a validator failed on the generated files: ours={ours[2]} peer={peer[2]}")
            row = {
                "files": size,
                "reconciler_files_per_s": round(size / ours[0]),
                "reconciler_peak_mib": round(ours[1]),
                "check_jsonschema_files_per_s": round(size / peer[0]),
                "check_jsonschema_peak_mib": round(peer[1]),
                "ratio": round(peer[0] / ours[0], 2),
            }
            print(
                f"validate {size:>6} files: reconciler {row['reconciler_files_per_s']:>6} files/s "
                f"({row['reconciler_peak_mib']} MiB peak)  check-jsonschema "
                f"{row['check_jsonschema_files_per_s']:>6} files/s ({row['check_jsonschema_peak_mib']} MiB peak)"
                f"  ratio {row['ratio']}x",
                flush=True,
            )
            rows.append(row)
    return rows


# Every secret the scaffolding templates reference, so generated integrations apply.
BENCH_ENV = {
    name: "https://bench.example.org/x" if name.endswith("_URL") else "bench-value"
    for name in (
        "SLACK_WEBHOOK_URL",
        "TEAMS_WEBHOOK_URL",
        "DISCORD_WEBHOOK_URL",
        "GOOGLE_CLIENT_ID",
        "GOOGLE_CLIENT_SECRET",
        "GOOGLE_REFRESH_TOKEN",
        "SHEETS_SPREADSHEET_ID",
        "SIS_API_KEY",
        "REPORTING_DATABASE_URL",
        "EXPORT_BUCKET",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    )
}
BENCH_ENV["REPORTING_DATABASE_URL"] = "postgresql://bench@127.0.0.1/bench"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _edit_latencies(folder: Path, files: list[Path], edits: int) -> tuple[list[float], list[float]]:
    """(reconciler: write -> registry, bare watchfiles: write -> notification), in milliseconds."""
    import asyncio

    import watchfiles

    from reconciler.reconcile.loop import Reconciler
    from reconciler.reconcile.watch import DEBOUNCE_MS, STEP_MS, watch
    from reconciler.store import open_store

    store = open_store(f"sqlite:///{folder.parent}/state/bench.db")
    reconciler = Reconciler(store, folder, environ=BENCH_ENV, resync_seconds=3600)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(reconciler.run(stop)), asyncio.create_task(watch(folder, reconciler.trigger, stop))]
    while reconciler.passes == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    ours = []
    for n in range(edits):
        path = files[(n * 37) % len(files)]
        ident = path.stem
        before = reconciler.snapshot.registry[ident].generation
        text = path.read_text().replace("\nname: ", f"\nname: Edit {n} ", 1)
        start = time.perf_counter()
        path.write_text(text)
        while (record := reconciler.snapshot.registry.get(ident)) is None or record.generation == before:
            await asyncio.sleep(0.001)
        ours.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*tasks)
    store.close()

    # the peer: the bare watcher with the same settings, noticing the same kind of write
    bare = []
    stop_bare = asyncio.Event()
    noticed = asyncio.Event()

    async def bare_watch() -> None:
        async for _ in watchfiles.awatch(folder, debounce=DEBOUNCE_MS, step=STEP_MS, stop_event=stop_bare):
            noticed.set()

    watcher = asyncio.create_task(bare_watch())
    await asyncio.sleep(0.5)
    for n in range(edits):
        path = files[(n * 37) % len(files)]
        noticed.clear()
        start = time.perf_counter()
        path.write_text(path.read_text() + f"# {n}\n")
        await noticed.wait()
        bare.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(0.05)
    stop_bare.set()
    await watcher
    return ours, bare


def bench_reconcile(args: argparse.Namespace) -> list[dict[str, object]]:
    """Write-to-registry latency with 1,000 integrations; a full pass over 10,000 files."""
    import asyncio

    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        folder = Path(tmp) / "integrations.d"
        folder.mkdir()
        files = generate_integrations(folder, 1000)
        ours, bare = asyncio.run(_edit_latencies(folder, files, args.edits))
        row = {
            "integrations": 1000,
            "edits": len(ours),
            "p50_ms": round(_percentile(ours, 0.5), 1),
            "p99_ms": round(_percentile(ours, 0.99), 1),
            "bare_watch_p50_ms": round(_percentile(bare, 0.5), 1),
            "bare_watch_p99_ms": round(_percentile(bare, 0.99), 1),
        }
        print(
            f"reconcile: file write -> registry, 1,000 integrations, {row['edits']} edits: "
            f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms  (bare watchfiles notification: "
            f"p50 {row['bare_watch_p50_ms']} ms, p99 {row['bare_watch_p99_ms']} ms)",
            flush=True,
        )
        rows.append(row)
    with tempfile.TemporaryDirectory(prefix="bench-fullpass-") as tmp:
        folder = Path(tmp) / "integrations.d"
        folder.mkdir()
        generate_integrations(folder, args.full_pass_files)
        out = subprocess.run(
            [sys.executable, __file__, "_full_pass", str(folder)], capture_output=True, text=True, check=True
        )
        figures = json.loads(out.stdout)
        print(
            f"reconcile: full pass over {args.full_pass_files:,} files: first {figures['first_pass_s']} s, "
            f"unchanged {figures['second_pass_s']} s, peak {figures['peak_mib']} MiB  (bare read + yaml.safe_load "
            f"of the same files: {figures['bare_parse_s']} s; ratio {figures['ratio']}x)",
            flush=True,
        )
        rows.append({"files": args.full_pass_files, **figures})
    return rows


def _full_pass(folder: Path) -> None:
    """Child process of bench_reconcile: its peak memory is the reconciler's alone."""
    import asyncio
    import resource

    import yaml

    from reconciler.reconcile.loop import Reconciler
    from reconciler.store import open_store

    start = time.perf_counter()
    for path in sorted(folder.iterdir()):
        yaml.load(path.read_bytes(), Loader=yaml.CSafeLoader)
    bare = time.perf_counter() - start

    store = open_store(f"sqlite:///{folder.parent}/state/bench.db")
    reconciler = Reconciler(store, folder, environ=BENCH_ENV, resync_seconds=3600)
    start = time.perf_counter()
    first = asyncio.run(reconciler.reconcile_once("bench"))
    first_s = time.perf_counter() - start
    assert len(first.added) == len(list(folder.iterdir())), first.refused[:3]
    start = time.perf_counter()
    asyncio.run(reconciler.reconcile_once("bench"))
    second_s = time.perf_counter() - start
    store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "first_pass_s": round(first_s, 2),
                "second_pass_s": round(second_s, 2),
                "peak_mib": round(peak),
                "bare_parse_s": round(bare, 2),
                "ratio": round(first_s / bare, 1),
            }
        )
    )


from bench import api, database, e2e, files, inbound, page, pipeline, source  # noqa: E402 - after sys.path is set

SECTIONS: dict[str, Callable[[argparse.Namespace], list[dict[str, object]]]] = {
    "validate": bench_validate,
    "reconcile": bench_reconcile,
    "intake": pipeline.bench_intake,
    "idempotent": pipeline.bench_idempotent,
    "delivery": pipeline.bench_delivery,
    "latency": pipeline.bench_latency,
    "backlog": pipeline.bench_backlog,
    "files": files.bench_files,
    "database": database.bench_database,
    "inbound": inbound.bench_inbound,
    "api": api.bench_api,
    "e2e": e2e.bench_e2e,
    "source": source.bench_source,
    "page": page.bench_page,
}


def _pool(text: str) -> tuple[str, int]:
    pool, _, size = text.partition(":")
    return pool, int(size or 8)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "_full_pass":
        _full_pass(Path(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=f"one of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="file counts for validate")
    parser.add_argument("--edits", type=int, default=60, help="edits timed by the reconcile section")
    parser.add_argument("--full-pass-files", type=int, default=10000, help="files in the reconcile full pass")
    parser.add_argument("--events", type=int, default=5000, help="events posted by the intake and inbound sections")
    parser.add_argument("--concurrency", type=int, default=64, help="clients posting at once (intake, inbound)")
    parser.add_argument("--deliveries", type=int, default=5000, help="deliveries in the delivery section")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the intake and delivery sections")
    parser.add_argument("--rate", type=int, default=500, help="events per second in the latency section")
    parser.add_argument("--seconds", type=int, default=10, help="duration of the latency section")
    parser.add_argument("--backlog", type=int, default=100_000, help="deliveries queued in the backlog section")
    parser.add_argument("--rows", type=int, default=20_000, help="rows written by the database section")
    parser.add_argument("--objects", type=int, default=1000, help="objects written by the files section")
    parser.add_argument("--api-integrations", type=int, default=1000, help="integrations in the api and page sections")
    parser.add_argument("--api-requests", type=int, default=300, help="requests timed per route in the api section")
    parser.add_argument("--clients", type=int, default=32, help="clients posting at once in the e2e section")
    parser.add_argument(
        "--systems",
        nargs="+",
        metavar="NAME",
        help="only these systems in the e2e section (forwarder, ours-sqlite, ours-postgresql, ours-postgresql-x3, "
        "celery-prefork-8, ..., procrastinate); the forwarder is always measured, as the ratios' peer",
    )
    parser.add_argument(
        "--celery-pools",
        type=_pool,
        nargs="+",
        default=[("prefork", 8), ("threads", 32)],
        metavar="POOL:N",
        help="Celery pools and concurrencies the e2e section tries (the best is reported)",
    )
    parser.add_argument("--pushes", type=int, default=30, help="pushes timed per mode in the source section")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; sections: {', '.join(SECTIONS)}")
    if shutil.which("check-jsonschema", path=str(BIN)) is None:
        print("check-jsonschema is missing: run `make bench` (it installs the dev extras)", file=sys.stderr)
        return 2
    results = {name: SECTIONS[name](args) for name in (args.sections or SECTIONS)}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
