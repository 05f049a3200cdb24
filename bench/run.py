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
    from reconciler.spec.scaffold import scaffolds

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


SECTIONS: dict[str, Callable[[argparse.Namespace], list[dict[str, object]]]] = {
    "validate": bench_validate,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=f"one of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="file counts for validate")
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
