"""The Node.js client (`clients/node/`) against a real daemon: `node --test` runs
`clients/node/test/*.test.js` with the daemon's address and secret in its environment, and its declarations type-check.

Skips when Node.js is not installed, except in CI (CI=true), where `.ci/run` installs it and
these tests must run. The package's dev dependencies (standardwebhooks, typescript) come from
its committed lock file (`npm ci`) when `node_modules` is missing or older than the lock.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.peers import Peer
from tests.pipeline import webhook_to
from tests.test_daemon import SECRET, Daemon

PACKAGE = ROOT / "clients" / "node"
SIGNING = "whsec_" + base64.b64encode(b"node-receiver-test-secret-32-by.").decode()
NODE_TIMEOUT = 300  # seconds for the whole node run; generous for a loaded 2-core machine


def unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(why + " (CI=true: the Node.js client's tests must run; .ci/run installs Node.js)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, with the package's dev dependencies installed from the lock file."""
    found = shutil.which("node")
    if found is None:
        unavailable("node is not on PATH")
        raise AssertionError("unreachable")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    major = int(re.match(r"v(\d+)", version).group(1))  # type: ignore[union-attr]
    assert major >= 18, f"the client needs Node.js 18 or newer, found {version}"
    installed = PACKAGE / "node_modules" / ".package-lock.json"
    lock = PACKAGE / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        npm = shutil.which("npm")
        if npm is None:
            unavailable("npm is not on PATH (needed once, to install clients/node's dev dependencies)")
            raise AssertionError("unreachable")
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=PACKAGE, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"npm ci failed in clients/node:\n{done.stdout}\n{done.stderr}"
    return found


@pytest.fixture
def daemon(tmp_path: Path, peer: Peer) -> Iterator[Daemon]:
    config = tmp_path / "integrations.d"
    config.mkdir()
    (config / "hook.yaml").write_text(webhook_to(peer.url))
    # a short resync: the receiver's file, written by the node test, is applied even if a file event is missed
    with Daemon(
        tmp_path,
        "--config-dir",
        str(config),
        "--resync",
        "2",
        env={"ADMIN_SECRET": SECRET, "RECEIVER_SIGNING_SECRET": SIGNING},
    ) as running:
        yield running


def summary(output: str) -> dict[str, int]:
    """node --test's closing counts (`# pass 12`, `# fail 0`, ...)."""
    return {name: int(count) for name, count in re.findall(r"^# (\w+) (\d+)$", output, re.MULTILINE)}


def test_node_client_adapter_and_receiver_against_the_daemon(node, daemon, tmp_path, peer):
    environment = {
        **os.environ,
        "DAEMON_URL": daemon.url,
        "ADMIN_SECRET": SECRET,
        "CONFIG_DIR": str(tmp_path / "integrations.d"),
        "RECEIVER_SIGNING_SECRET": SIGNING,
    }
    environment.pop("NODE_OPTIONS", None)
    files = sorted(str(path.relative_to(PACKAGE)) for path in (PACKAGE / "test").glob("*.test.js"))
    run = subprocess.run(
        [node, "--test", "--test-reporter=tap", *files],
        cwd=PACKAGE,
        env=environment,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
    )
    output = run.stdout + run.stderr
    counts = summary(run.stdout)
    assert run.returncode == 0, f"node --test failed:\n{output}\n--- daemon log ---\n{daemon.log()[-4000:]}"
    assert counts.get("fail") == 0 and counts.get("pass", 0) >= 15, output
    assert counts.get("skipped") == 0, f"a node test skipped: the environment did not reach it\n{output}"
    # what the client stored was delivered by the daemon to the webhook integration's sink
    deadline = time.monotonic() + 30
    while not any(seen.json()["data"].get("studentId") == "IT2024001" for seen in peer.requests("/hook")):
        assert time.monotonic() < deadline, "the adapter's user.registered did not reach the sink"
        time.sleep(0.05)


def test_typescript_declarations_check_event_data(node):
    """The declarations compile, and `trigger` refuses data that does not match a built-in type
    (each `@ts-expect-error` in test/types.ts must meet an error, or tsc fails)."""
    tsc = PACKAGE / "node_modules" / "typescript" / "bin" / "tsc"
    run = subprocess.run(
        [node, str(tsc), "-p", "test/tsconfig.json"], cwd=PACKAGE, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_package_is_ready_to_publish():
    manifest = json.loads((PACKAGE / "package.json").read_text())
    assert manifest["type"] == "module" and manifest["version"] == "0.1.0" and manifest["license"] == "MIT"
    assert not manifest.get("dependencies"), "the client has no runtime dependencies"
    assert set(manifest["exports"]) >= {".", "./adapter"}
    for path in manifest["files"]:
        assert (PACKAGE / path).is_file(), f"package.json lists {path}, which does not exist"
    for target in [manifest["types"], *(e["types"] for e in manifest["exports"].values() if isinstance(e, dict))]:
        assert (PACKAGE / target).is_file(), target
    lock = json.loads((PACKAGE / "package-lock.json").read_text())
    resolved = [entry["resolved"] for entry in lock["packages"].values() if "resolved" in entry]
    assert resolved == [], "the lock names download hosts: regenerate it in clients/node (its .npmrc omits them)"
    assert all(entry.get("integrity") for name, entry in lock["packages"].items() if name), "each package is pinned"
