"""What the registry reports, checked on real daemons: integrations waiting for secrets show what
their files declare, every missing secret is named at once, a last good version restored without
its secret is not Ready, and revisions say when the work tree differs from the commit."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.cli.main import main
from tests.conftest import ROOT
from tests.gitserver import git
from tests.test_daemon import SECRET, Daemon, admin

WAIT_SECONDS = 30.0  # generous for a loaded machine
BUNDLED = ROOT / "integrations.d"
# every variable the bundled integrations reference: absent, whatever the machine sets
BUNDLED_VARIABLES = tuple(
    sorted({name for f in BUNDLED.glob("*.yaml") for name in re.findall(r"\$\{env:(\w+)\}", f.read_text())})
)
SHEETS_VARIABLES = ("GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET", "GOOGLE_REFRESH_TOKEN", "SHEETS_SPREADSHEET_ID")

HOOK = """\
apiVersion: cms.integrations/v1
kind: Integration
id: hook
name: Hook
type: webhook
authType: bearer
authConfig: {token: "${env:HOOK_TOKEN}"}
config:
  endpoint: ${env:HOOK_URL}
webhooks: [{events: ["user.*"]}]
"""


def until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)  # polling, with the deadline above
    raise AssertionError(f"timed out waiting for {what}")


def items(client: httpx.Client, **params: str) -> dict[str, dict[str, Any]]:
    response = client.get("/api/integrations", params=params)
    assert response.status_code == 200, response.text
    return {item["id"]: item for item in response.json()["items"]}


@pytest.fixture
def bundled(tmp_path: Path) -> Iterator[Daemon]:
    """A first `make run`: the bundled directory, with none of the secrets it references."""
    shutil.copytree(BUNDLED, tmp_path / "integrations.d")
    with Daemon(tmp_path, env={"ADMIN_SECRET": SECRET}, unset=BUNDLED_VARIABLES) as daemon:
        yield daemon


def test_pending_integrations_show_their_declared_spec_and_filter_by_type(bundled):
    with admin(bundled) as client:
        found = items(client)
    pending = {i for i, item in found.items() if item["status"] == "pending"}
    assert len(found) == 9 and pending == set(found) - {"local-export"}, "8 of 9 wait for secrets"
    for item in found.values():
        assert item["type"] and item["name"] and item["declaredSpec"], item["id"]
        assert item["lastAttemptedRevision"]["file"] == item["sourceFile"]
    sheets = found["google-sheets-sync"]
    # nothing applied yet: the applied version stays empty, the declared one shows, references by name
    assert sheets["spec"] is None and sheets["lastAppliedRevision"] is None and sheets["generation"] == 0
    assert sheets["declaredSpec"]["authConfig"]["clientSecret"] == "${env:GOOGLE_CLIENT_SECRET}"
    assert (sheets["type"], sheets["name"]) == ("api", "Google Sheets Sync")
    export = found["local-export"]
    assert export["spec"] == export["declaredSpec"] and export["lastAppliedRevision"] is not None
    with admin(bundled) as client:
        webhooks = items(client, type="webhook")
        labelled = items(client, label="team=registry")
    assert set(webhooks) == {"discord-reminders", "partner-webhook", "slack-notifications", "teams-notifications"}
    assert "slack-notifications" in labelled


def test_plan_against_a_fresh_daemon_on_the_same_directory_shows_no_change(bundled, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ADMIN_SECRET", SECRET)
    code = main(["plan", "--config-dir", str(bundled.workdir / "integrations.d"), "--server", bundled.url])
    out = capsys.readouterr().out
    assert code == 0 and "no changes" in out, out
    # a pull request's checkout (the daemon follows its own directory): a pending one's change shows
    checkout = tmp_path / "checkout"
    shutil.copytree(bundled.workdir / "integrations.d", checkout)
    sheets = checkout / "google-sheets.yaml"
    sheets.write_text(sheets.read_text().replace("batchSize: 100", "batchSize: 50"))
    code = main(["plan", "--config-dir", str(checkout), "--server", bundled.url])
    out = capsys.readouterr().out
    assert code == 1 and "0 to add, 1 to change" in out and "/config/batchSize: 100 -> 50" in out, out


def test_every_missing_secret_is_named_in_the_condition_the_log_and_status(bundled, capsys, monkeypatch):
    with admin(bundled) as client:
        sheets = items(client)["google-sheets-sync"]
    ready = {c["type"]: c for c in sheets["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "SecretMissing"
    assert all(name in ready["message"] for name in SHEETS_VARIABLES), ready["message"]
    assert ready["message"].startswith("4 secret references do not resolve")
    passes = [e for e in bundled.entries() if e.get("message", "").startswith("reconcile pass")]
    assert passes and all(name in passes[-1]["message"] for name in SHEETS_VARIABLES), passes[-1]
    monkeypatch.setenv("ADMIN_SECRET", SECRET)
    main(["status", "--server", bundled.url])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("google-sheets-sync:"))
    assert all(name in line for name in SHEETS_VARIABLES), out
    assert "8 integrations waiting for secrets" in out and "failed" not in out, out


def test_a_last_good_version_restored_without_its_secrets_is_not_ready(tmp_path):
    (tmp_path / "integrations.d").mkdir()
    (tmp_path / "integrations.d" / "hook.yaml").write_text(HOOK)
    secrets = {"HOOK_URL": "https://hooks.example.org/in", "HOOK_TOKEN": "t0ken-value"}
    first = Daemon(tmp_path, env={"ADMIN_SECRET": SECRET, **secrets})
    try:
        first.wait_ready()
        with admin(first) as client:
            hook = items(client)["hook"]
        assert hook["ready"] and hook["generation"] == 1
    finally:
        first.stop()
    restarted = Daemon(tmp_path, env={"ADMIN_SECRET": SECRET}, unset=tuple(secrets))
    try:
        restarted.wait_ready()
        with admin(restarted) as client:
            hook = items(client)["hook"]
        ready = {c["type"]: c for c in hook["conditions"]}["Ready"]
        assert not hook["ready"] and ready["status"] == "False" and ready["reason"] == "SecretMissing"
        assert "HOOK_URL" in ready["message"] and "HOOK_TOKEN" in ready["message"], ready["message"]
        assert "last good version" in ready["message"] and "t0ken" not in str(hook)
        assert hook["status"] == "failing"
        # what runs and what the file declares still show
        assert hook["spec"]["config"]["endpoint"] == "${env:HOOK_URL}" == hook["declaredSpec"]["config"]["endpoint"]
    finally:
        restarted.stop()


def test_a_new_version_waiting_for_a_secret_shows_beside_the_one_that_runs(tmp_path):
    config = tmp_path / "integrations.d"
    config.mkdir()
    (config / "hook.yaml").write_text(HOOK)
    secrets = {"HOOK_URL": "https://hooks.example.org/in", "HOOK_TOKEN": "t0ken-value"}
    daemon = Daemon(tmp_path, env={"ADMIN_SECRET": SECRET, **secrets}, unset=("HOOK_TENANT",))
    try:
        daemon.wait_ready()
        with admin(daemon) as client:
            daemon.wait_watching(client, config)
            (config / "hook.yaml").write_text(
                HOOK.replace("config:\n", "config:\n  headers: {X-Tenant: '${env:HOOK_TENANT}'}\n")
            )
            hook = until(lambda: _declared_headers(h := items(client)["hook"]) and h, "the edit")
        conditions = {c["type"]: c for c in hook["conditions"]}
        assert hook["ready"] and conditions["Ready"]["message"] == "generation 1 (last good version) applied"
        assert conditions["Synced"]["reason"] == "SecretMissing" and "HOOK_TENANT" in conditions["Synced"]["message"]
        assert hook["declaredSpec"]["config"]["headers"] == {"X-Tenant": "${env:HOOK_TENANT}"}
        assert not hook["spec"]["config"]["headers"], "the applied version is the one that runs"
        applied, attempted = hook["lastAppliedRevision"], hook["lastAttemptedRevision"]
        assert applied["contentHash"] != attempted["contentHash"] and hook["generation"] == 1
    finally:
        daemon.stop()


def _declared_headers(item: dict[str, Any]) -> Any:
    """The declared version's headers (None while a half-written file does not validate)."""
    return ((item["declaredSpec"] or {}).get("config") or {}).get("headers")


# --- revisions of a git work tree ----------------------------------------------------------------

EXPORT = """\
apiVersion: cms.integrations/v1
kind: Integration
id: {id}
name: {name}
type: file
config: {{url: "file://state/exports"}}
webhooks: [{{events: ["*"]}}]
"""


def test_revisions_say_when_the_work_tree_differs_from_the_commit(tmp_path, capsys, monkeypatch):
    config = tmp_path / "integrations.d"
    config.mkdir()
    (tmp_path / ".gitignore").write_text("state/\n*.log\n")
    (config / "a.yaml").write_text(EXPORT.format(id="a", name="A"))
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "a")
    first = git(tmp_path, "rev-parse", "HEAD")
    (config / "b.yaml").write_text(EXPORT.format(id="b", name="B"))  # untracked
    daemon = Daemon(tmp_path, env={"ADMIN_SECRET": SECRET})
    try:
        daemon.wait_ready()
        with admin(daemon) as client:
            found = items(client)
            assert found["a"]["lastAppliedRevision"]["commit"] == first
            assert found["a"]["lastAppliedRevision"]["dirty"] is False
            assert found["b"]["lastAppliedRevision"]["dirty"] is True, "an untracked file is not in the commit"
            daemon.wait_watching(client, config)
            # an uncommitted edit: its content is not at HEAD, and the revision says so
            (config / "a.yaml").write_text(EXPORT.format(id="a", name="A edited"))
            edited = until(lambda: (r := items(client)["a"])["name"] == "A edited" and r, "the edit applied")
            assert edited["lastAppliedRevision"]["commit"] == first and edited["lastAppliedRevision"]["dirty"]
            assert "with uncommitted changes" in {c["type"]: c for c in edited["conditions"]}["Synced"]["message"]
            monkeypatch.setenv("ADMIN_SECRET", SECRET)
            main(["status", "--server", daemon.url])
            out = capsys.readouterr().out
            assert f"at {first[:12]} with uncommitted changes to 2 files: a.yaml, b.yaml" in out, out
            # committed as they are: the same content, now at a commit that holds it
            git(tmp_path, "add", ".")
            git(tmp_path, "commit", "-qm", "b")
            second = git(tmp_path, "rev-parse", "HEAD")
            daemon.wait_watching(client, config)  # a pass after the commit (no file of the directory changed)

            def at_second() -> dict[str, dict[str, Any]] | None:
                found = items(client)
                return found if all(r["lastAppliedRevision"]["commit"] == second for r in found.values()) else None

            found = until(at_second, "revisions at the new commit")
            assert not any(r["lastAppliedRevision"]["dirty"] for r in found.values())
            assert found["a"]["generation"] == 1 + 1 and found["b"]["generation"] == 1, "a commit changes no spec"
    finally:
        daemon.stop()


def test_reading_the_revision_never_rewrites_the_index(tmp_path):
    """The daemon reads the admin's checkout while commits land in it: a `git status` that refreshed
    the index would hold index.lock, and a commit at that moment fails ("index.lock exists")."""
    from reconciler.reconcile.desired import git_state

    (tmp_path / "a.yaml").write_text(EXPORT.format(id="a", name="A"))
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "a")
    os.utime(tmp_path / "a.yaml", (1_000_000_000, 1_000_000_000))  # the index's stat data is now stale
    index = (tmp_path / ".git" / "index").read_bytes()
    state = git_state(tmp_path)
    assert state is not None and not state.changed, "same content, another mtime: not a change"
    assert (tmp_path / ".git" / "index").read_bytes() == index, "reading the revision refreshed the index"
