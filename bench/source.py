"""Git source benchmark: from `git push` to the change visible in the registry, with a push
webhook and with polling every second, beside a bare `git fetch` of the same repository over
the same HTTP server (`git http-backend`) in the same run.

Each push renames the integration; the time runs from just before `git push` until
`GET /api/integrations/export` shows the new name.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import hmac
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import ADMIN, free_port, process  # noqa: E402 - after sys.path is set
from tests.gitserver import GIT_ENV, GitHttpServer, Repo  # noqa: E402

WEBHOOK_SECRET = "bench-source-webhook-secret"
EXPORT = """\
apiVersion: cms.integrations/v1
kind: Integration
name: {name}
type: file
config: {{url: "file://state/exports"}}
webhooks: [{{events: ["*"]}}]
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _push_webhook(client: httpx.Client, url: str) -> None:
    """What a forge sends after a push to main: a signed GitHub push event."""
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    answer = client.post(url, content=body, headers={"x-github-event": "push", "x-hub-signature-256": signature})
    if answer.status_code != 202:
        raise SystemExit(f"the push webhook was answered {answer.status_code}: {answer.text}")


def _push_to_visible(
    repo: Repo, daemon: str, pushes: int, label: str, after_push: Callable[[], None] | None
) -> list[float]:
    """Milliseconds from `git push` to the registry showing the pushed name, one per push."""
    latencies = []
    with httpx.Client(base_url=daemon, headers={"x-admin-secret": ADMIN}, timeout=10) as client:
        for i in range(pushes):
            name = f"{label} {i}"
            repo.commit({"integrations.d/export.yaml": EXPORT.format(name=name)})
            start = time.perf_counter()
            repo.push()
            if after_push is not None:
                after_push()
            deadline = start + 60
            while client.get("/api/integrations/export").json().get("spec", {}).get("name") != name:
                if time.perf_counter() > deadline:
                    raise SystemExit(f"push {i} ({label}) was not applied within 60 s")
                time.sleep(0.005)
            latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def _bare_fetches(server: GitHttpServer, repo: Repo, work: Path, count: int) -> list[float]:
    """Milliseconds of `git fetch` over the same server, one new commit each time."""
    clone = work / "bare-fetch"
    subprocess.run(["git", "init", "--quiet", "--bare", str(clone)], check=True, env=GIT_ENV)
    url = f"http://127.0.0.1:{server.port}/config.git"
    latencies = []
    for i in range(count):
        repo.commit({"integrations.d/export.yaml": EXPORT.format(name=f"fetch {i}")})
        repo.push()
        start = time.perf_counter()
        subprocess.run(
            ["git", f"--git-dir={clone}", "fetch", "--quiet", url, "+main:refs/heads/main"], check=True, env=GIT_ENV
        )
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def _run_daemon(work: Path, url: str, *extra: str) -> tuple[list[str], int]:
    port = free_port()
    command = [
        sys.executable, "-m", "reconciler", "run", "--listen", f"127.0.0.1:{port}", "--log-format", "json",
        "--source", url, *extra,
    ]  # fmt: skip
    return command, port


def bench_source(args: argparse.Namespace) -> list[dict[str, object]]:
    """Push to applied, p50 and p99, with the webhook and with 1 s polling, beside a bare git fetch."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-source-") as tmp:
        work = Path(tmp)
        repo = Repo(work)
        repo.commit({"integrations.d/export.yaml": EXPORT.format(name="start")})
        repo.push()
        server = GitHttpServer(repo.bare.parent)
        try:
            url = server.url()
            env = {"ADMIN_SECRET": ADMIN, "PYTHONPATH": str(ROOT), "BENCH_SOURCE_WEBHOOK": WEBHOOK_SECRET}
            results: dict[str, list[float]] = {}
            for mode, extra in (
                ("webhook", ("--source-interval", "1h", "--source-webhook-secret", "${env:BENCH_SOURCE_WEBHOOK}")),
                ("poll 1s", ("--source-interval", "1s")),
            ):
                daemon_dir = work / mode.replace(" ", "-")
                daemon_dir.mkdir()
                command, port = _run_daemon(daemon_dir, url, *extra)
                with process(command, port, cwd=daemon_dir, env=env):
                    daemon = f"http://127.0.0.1:{port}"
                    _wait_applied(daemon)
                    with httpx.Client(base_url=daemon, timeout=10) as forge:
                        hook = functools.partial(_push_webhook, forge, "/api/source/webhook")
                        after_push = hook if mode == "webhook" else None
                        results[mode] = _push_to_visible(repo, daemon, args.pushes, mode, after_push)
            results["bare git fetch"] = _bare_fetches(server, repo, work, args.pushes)
        finally:
            server.stop()
    for mode, values in results.items():
        row = {
            "mode": mode,
            "pushes": len(values),
            "p50_ms": round(_percentile(values, 0.5), 1),
            "p99_ms": round(_percentile(values, 0.99), 1),
        }
        rows.append(row)
        print(
            f"source: {mode}: push to visible p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms over {row['pushes']}"
            if mode != "bare git fetch"
            else f"source: bare git fetch of the same repository: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms",
            flush=True,
        )
    return rows


def _wait_applied(daemon: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=daemon, headers={"x-admin-secret": ADMIN}, timeout=10) as client:
        while client.get("/api/integrations/export").status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit("the daemon did not apply the source's first commit within 60 s")
            time.sleep(0.05)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pushes", type=int, default=30)
    bench_source(parser.parse_args())
