"""The reconcile loop with the real watcher on a temporary directory, on both stores.

Each test reads like a timeline: files change, and the registry converges.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from reconciler.reconcile.conditions import ConditionType, Reason, condition
from reconciler.reconcile.loop import Reconciler
from reconciler.reconcile.watch import watch
from reconciler.store import AsyncStore, IntegrationRecord, open_store
from tests.conftest import ROOT

CONVERGE_SECONDS = 20.0  # generous for a loaded CI machine; typical convergence is well under a second
WATCH_PROBE = "watch-probe"  # no extension: the watcher reports it, the loader skips it
EXPORT = """\
apiVersion: cms.integrations/v1
kind: Integration
name: {name}
type: file
config:
  url: file://state/exports
webhooks:
  - events: ["{events}"]
"""


def export(name: str = "Export", events: str = "*") -> str:
    return EXPORT.format(name=name, events=events)


class Harness:
    """A reconciler and its watcher running on `config`, with helpers to wait for the registry."""

    def __init__(self, config: Path, store_url: str, environ: dict[str, str] | None = None) -> None:
        self.config = config
        self.store_url = store_url
        self.environ = environ if environ is not None else {}

    async def __aenter__(self) -> Harness:
        self.daemon_store = AsyncStore(open_store(self.store_url))
        self.store = open_store(self.store_url)  # the test's own reads, beside the reconciler's
        self.reconciler = Reconciler(self.daemon_store, self.config, environ=self.environ, resync_seconds=3600)
        self.stop = asyncio.Event()
        self.tasks = [
            asyncio.create_task(self.reconciler.run(self.stop)),
            asyncio.create_task(watch(self.config, self.reconciler.trigger, self.stop)),
        ]
        await self.until(lambda: self.reconciler.passes >= 1)
        await self.until_watching()
        return self

    async def until_watching(self) -> None:
        """Return once the watcher reports file events.

        watchfiles does not say when its watches are in place, so the harness touches a probe
        file until a file event makes a "watch" pass, then removes the probe and waits for a
        "watch" pass after that. The probe has no extension: the watcher passes it on (it could
        be a folder) and the loader skips it, so these passes change nothing. A probe write still
        in flight when the first pass comes can make one more such pass later; it is as harmless.
        """
        probe = self.config / WATCH_PROBE
        deadline = time.monotonic() + CONVERGE_SECONDS
        before = self.reconciler.passes
        patience = 0.05
        while not self._watch_pass_since(before):
            assert time.monotonic() < deadline, "the watcher reported no file event"
            probe.write_text(str(time.monotonic()))
            touched = time.monotonic()
            while not self._watch_pass_since(before) and time.monotonic() - touched < patience:
                await asyncio.sleep(0.01)
            patience = min(patience * 2, 1.0)  # touch again, less often, until the watcher is up
        before = self.reconciler.passes
        probe.unlink()
        await self.until(lambda: self._watch_pass_since(before), "a watch pass after removing the probe")

    def _watch_pass_since(self, passes: int) -> bool:
        last = self.reconciler.last_pass
        return self.reconciler.passes > passes and last is not None and last.trigger == "watch"

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), timeout=10)
        await self.daemon_store.close()
        self.store.close()

    def record(self, integration_id: str) -> IntegrationRecord | None:
        return self.reconciler.snapshot.registry.get(integration_id)

    async def until(self, check: Callable[[], object], what: str = "") -> None:
        deadline = time.monotonic() + CONVERGE_SECONDS
        while time.monotonic() < deadline:
            if check():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"did not converge: {what or check}; registry: {self.reconciler.snapshot.registry}")

    async def until_generation(self, integration_id: str, generation: int) -> IntegrationRecord:
        await self.until(
            lambda: (r := self.record(integration_id)) is not None and r.generation == generation,
            f"{integration_id} at generation {generation}",
        )
        record = self.record(integration_id)
        assert record is not None
        return record


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def status(record: IntegrationRecord | None, type_: ConditionType) -> tuple[str, str]:
    assert record is not None
    found = condition(record.conditions, type_)
    assert found is not None
    return found["status"], found["reason"]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    folder = tmp_path / "integrations.d"
    folder.mkdir()
    return folder


def test_create_edit_rename_and_delete_converge(config, store_url):
    async def scenario() -> None:
        async with Harness(config, store_url) as h:
            (config / "export.yaml").write_text(export())
            record = await h.until_generation("export", 1)
            assert status(record, ConditionType.READY) == ("True", Reason.APPLIED)
            assert status(record, ConditionType.SYNCED) == ("True", Reason.UP_TO_DATE)
            assert record.source_file == "export.yaml" and record.spec["name"] == "Export"

            (config / "export.yaml").write_text(export(name="Export v2"))
            record = await h.until_generation("export", 2)
            assert record.spec["name"] == "Export v2"
            trail = h.store.audit_trail("export")
            assert [e.action for e in trail[:2]] == ["change", "add"]
            assert trail[0].details == {"fields": ["/name"]}

            # a rename moves the file; the id comes from the file name, so one goes and one comes
            (config / "export.yaml").rename(config / "renamed.yaml")
            await h.until(lambda: h.record("export") is None and h.record("renamed") is not None)
            assert next(e.action for e in h.store.audit_trail("export")) == "remove"

            (config / "renamed.yaml").unlink()
            await h.until(lambda: h.record("renamed") is None)
            assert h.store.list_integrations() == []

    run(scenario)


def test_editor_atomic_save_is_picked_up(config, store_url):
    async def scenario() -> None:
        async with Harness(config, store_url) as h:
            (config / "export.yaml").write_text(export())
            await h.until_generation("export", 1)
            # what vim and many editors do: write a temporary file, then rename it over the original
            temporary = config / ".export.yaml.swp"
            temporary.write_text(export(name="Saved atomically"))
            os.replace(temporary, config / "export.yaml")
            record = await h.until_generation("export", 2)
            assert record.spec["name"] == "Saved atomically"

    run(scenario)


def test_broken_edit_keeps_the_last_good_version(config, store_url):
    async def scenario() -> None:
        async with Harness(config, store_url) as h:
            (config / "export.yaml").write_text(export())
            (config / "other.yaml").write_text(export(name="Other"))
            await h.until_generation("export", 1)
            # a schema error (an unknown field), not a YAML one: the file parses, the model refuses it
            (config / "export.yaml").write_text(
                export().replace("  url: file://state/exports", "  url: file://x\n  bogus: 1")
            )
            await h.until(lambda: status(h.record("export"), ConditionType.SYNCED)[0] == "False")
            record = h.record("export")
            assert record is not None and record.generation == 1 and record.spec["name"] == "Export"
            assert status(record, ConditionType.READY) == ("True", Reason.APPLIED)
            synced = condition(record.conditions, ConditionType.SYNCED)
            assert synced is not None and synced["reason"] == Reason.VALIDATION_FAILED
            assert synced["message"].startswith("export.yaml:")
            assert "export" in h.reconciler.snapshot.applied, "the last good version still runs"
            # the other file applies normally meanwhile
            (config / "other.yaml").write_text(export(name="Other v2"))
            await h.until_generation("other", 2)
            # the fix is picked up
            (config / "export.yaml").write_text(export(name="Fixed"))
            record = await h.until_generation("export", 2)
            assert status(record, ConditionType.SYNCED) == ("True", Reason.UP_TO_DATE)
            assert [e.action for e in h.store.audit_trail("export")][:2] == ["change", "refuse"]

    run(scenario)


def test_yaml_syntax_error_keeps_the_integration_and_names_the_line(config, store_url):
    async def scenario() -> None:
        async with Harness(config, store_url) as h:
            (config / "export.yaml").write_text(export())
            await h.until_generation("export", 1)
            (config / "export.yaml").write_text("name: [unclosed\n")
            await h.until(lambda: status(h.record("export"), ConditionType.SYNCED)[0] == "False")
            synced = condition(h.record("export").conditions, ConditionType.SYNCED)  # type: ignore[union-attr]
            assert synced is not None and synced["message"].startswith("export.yaml:2:1: YAML syntax error")

    run(scenario)


def test_duplicate_id_refuses_the_new_file_not_the_running_one(config, store_url):
    async def scenario() -> None:
        async with Harness(config, store_url) as h:
            (config / "a.yaml").write_text("id: shared\n" + export(name="A"))
            await h.until_generation("shared", 1)
            (config / "b.yaml").write_text("id: shared\n" + export(name="B"))
            await h.until(lambda: status(h.record("shared"), ConditionType.SYNCED)[0] == "False")
            record = h.record("shared")
            assert record is not None and record.spec["name"] == "A" and record.source_file == "a.yaml"
            synced = condition(record.conditions, ConditionType.SYNCED)
            assert synced is not None and "duplicate id 'shared'" in synced["message"]
            (config / "b.yaml").unlink()
            await h.until(lambda: status(h.record("shared"), ConditionType.SYNCED)[0] == "True")
            assert h.record("shared").generation == 1  # type: ignore[union-attr]

    run(scenario)


def test_daemon_started_on_a_broken_directory_recovers_when_fixed(config, store_url):
    (config / "export.yaml").write_text(export().replace("type: file", "type: fil"))

    async def scenario() -> None:
        async with Harness(config, store_url) as h:
            record = h.record("export")
            assert status(record, ConditionType.READY) == ("False", Reason.NEVER_APPLIED)
            assert h.reconciler.last_pass is not None and h.reconciler.last_pass.files_refused == ["export.yaml"]
            (config / "export.yaml").write_text(export())
            record = await h.until_generation("export", 1)
            assert status(record, ConditionType.READY) == ("True", Reason.APPLIED)

    run(scenario)


def test_missing_secret_blocks_that_integration_only(config, store_url):
    slack = (ROOT / "integrations.d" / "slack.yaml").read_text()
    (config / "slack.yaml").write_text(slack)
    (config / "export.yaml").write_text(export())

    async def scenario() -> None:
        async with Harness(config, store_url, environ={}) as h:
            record = h.record("slack-notifications")
            assert status(record, ConditionType.READY) == ("False", Reason.SECRET_MISSING)
            ready = condition(record.conditions, ConditionType.READY)  # type: ignore[union-attr]
            assert ready is not None and "SLACK_WEBHOOK_URL" in ready["message"]
            assert status(h.record("export"), ConditionType.READY) == ("True", Reason.APPLIED)
        # set the variable: the next daemon applies it
        async with Harness(config, store_url, environ={"SLACK_WEBHOOK_URL": "https://hooks.example.org/x"}) as h:
            assert status(h.record("slack-notifications"), ConditionType.READY) == ("True", Reason.APPLIED)
            assert h.reconciler.snapshot.applied["slack-notifications"].resolved is not None

    run(scenario)


def test_unchanged_integrations_are_not_reapplied(config, store_url):
    (config / "export.yaml").write_text(export())

    async def scenario() -> None:
        async with Harness(config, store_url) as h:
            (config / "other.yaml").write_text(export(name="Other"))
            await h.until_generation("other", 1)
            await h.reconciler.reconcile_once("test")
            assert h.record("export").generation == 1  # type: ignore[union-attr]
            assert [e.action for e in h.store.audit_trail("export")] == ["add"]

    run(scenario)


def test_restart_keeps_registry_and_suspensions(config, store_url):
    (config / "export.yaml").write_text(export())

    async def scenario() -> None:
        async with Harness(config, store_url) as h:
            record = await h.reconciler.suspend("export", "alice", "partner outage")
            assert status(record, ConditionType.SUSPENDED) == ("True", Reason.SUSPENDED_BY_OPERATOR)
            assert status(record, ConditionType.READY) == ("False", Reason.SUSPENDED_BY_OPERATOR)
            assert not h.reconciler.snapshot.applied["export"].delivering
        async with Harness(config, store_url) as h:
            record = h.record("export")
            assert record is not None and record.generation == 1
            suspended = condition(record.conditions, ConditionType.SUSPENDED)
            assert suspended is not None and suspended["message"] == "suspended by alice: partner outage"
            assert h.reconciler.snapshot.applied["export"].suspended
            record = await h.reconciler.resume("export", "bob", "partner back")
            assert status(record, ConditionType.READY) == ("True", Reason.APPLIED)
            assert [(e.action, e.actor) for e in h.store.audit_trail("export")][:2] == [
                ("resume", "bob"),
                ("suspend", "alice"),
            ]

    run(scenario)


def test_last_good_version_survives_a_restart_with_a_broken_file(config, store_url):
    (config / "export.yaml").write_text(export())

    async def scenario() -> None:
        async with Harness(config, store_url) as h:
            await h.until_generation("export", 1)
        (config / "export.yaml").write_text("name: [broken\n")
        async with Harness(config, store_url) as h:
            assert "export" in h.reconciler.snapshot.applied
            assert status(h.record("export"), ConditionType.READY) == ("True", Reason.APPLIED)
            assert status(h.record("export"), ConditionType.SYNCED) == ("False", Reason.VALIDATION_FAILED)

    run(scenario)


def test_missing_config_directory_changes_nothing(config, store_url):
    (config / "export.yaml").write_text(export())

    async def scenario() -> None:
        async with Harness(config, store_url) as h:
            moved = config.with_name("elsewhere")
            shutil.move(config, moved)
            result = await h.reconciler.reconcile_once("test")
            assert result.error is not None and "does not exist" in result.error
            assert h.record("export") is not None
            shutil.move(moved, config)

    run(scenario)


def test_revision_is_the_git_commit_when_in_a_work_tree(config, store_url):
    import subprocess

    git = ["git", "-C", str(config), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (config / "export.yaml").write_text(export())
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "add export"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()

    async def scenario() -> None:
        async with Harness(config, store_url) as h:
            record = h.record("export")
            assert record is not None and record.last_applied_revision is not None
            assert record.last_applied_revision["commit"] == head
            assert record.last_applied_revision["contentHash"].startswith("sha256:")

    run(scenario)


HOOK = """\
apiVersion: cms.integrations/v1
kind: Integration
name: Hook
type: webhook
config:
  endpoint: ${env:HOOK_URL}
  signingSecret: ${env:SIGNING}
webhooks:
  - events: ["*"]
"""
HOOK_ENV = {"HOOK_URL": "https://hooks.example.org/x", "SIGNING": "whsec_c2VjcmV0"}


def test_restart_restores_http_integrations_with_optional_fields_unset(config, store_url):
    (config / "hook.yaml").write_text(HOOK.replace("  signingSecret: ${env:SIGNING}\n", ""))

    async def scenario() -> None:
        async with Harness(config, store_url, environ=HOOK_ENV) as h:
            assert h.record("hook").spec["config"]["signingSecret"] is None  # type: ignore[index]
        (config / "hook.yaml").write_text("name: [broken\n")
        async with Harness(config, store_url, environ=HOOK_ENV) as h:
            assert "hook" in h.reconciler.snapshot.applied, "the stored last good version runs again"

    run(scenario)


def test_a_kind_typo_in_a_multi_document_file_keeps_the_running_integration(config, store_url):
    two = "id: a\n" + export(name="A") + "---\nid: b\n" + export(name="B")
    (config / "two.yaml").write_text(two)

    async def scenario() -> None:
        async with Harness(config, store_url) as h:
            (config / "two.yaml").write_text(
                two.replace(
                    "---\nid: b\napiVersion: cms.integrations/v1\nkind: Integration",
                    "---\nid: b\napiVersion: cms.integrations/v1\nkind: Integraton",
                )
            )
            await h.until(lambda: status(h.record("b"), ConditionType.SYNCED)[0] == "False")
            assert h.record("b").generation == 1 and "b" in h.reconciler.snapshot.applied  # type: ignore[union-attr]

    run(scenario)


def test_resume_does_not_make_an_integration_ready_that_is_not(config, store_url):
    (config / "hook.yaml").write_text(HOOK)  # its secrets are not set: it never applied

    async def scenario() -> None:
        async with Harness(config, store_url, environ={}) as h:
            assert status(h.record("hook"), ConditionType.READY) == ("False", Reason.SECRET_MISSING)
            await h.reconciler.suspend("hook", "alice", "")
            record = await h.reconciler.resume("hook", "alice", "")
            assert status(record, ConditionType.READY) == ("False", Reason.SECRET_MISSING)
            for _ in range(2):
                await h.reconciler.reconcile_once("test")
            assert status(h.record("hook"), ConditionType.READY) == ("False", Reason.SECRET_MISSING)
            assert [e.message for e in h.store.audit_trail("hook")][:2] == ["resumed", "suspended"]

    run(scenario)


def test_git_declaring_active_false_lifts_the_override(config, store_url):
    (config / "export.yaml").write_text(export())

    async def scenario() -> None:
        async with Harness(config, store_url) as h:
            await h.reconciler.suspend("export", "alice", "outage")
            (config / "export.yaml").write_text(export().replace("name: Export", "name: Export\nactive: false"))
            await h.until(lambda: "export" not in h.reconciler.snapshot.overrides)
            assert h.store.overrides() == {}
            messages = [e.message for e in h.store.audit_trail("export")]
            assert "override lifted: git now declares active: false" in messages

    run(scenario)


def test_removal_lifts_the_override_so_a_new_integration_starts_clean(config, store_url):
    (config / "export.yaml").write_text(export())

    async def scenario() -> None:
        async with Harness(config, store_url) as h:
            await h.reconciler.suspend("export", "alice", "outage")
            (config / "export.yaml").unlink()
            await h.until(lambda: h.record("export") is None)
            assert h.store.overrides() == {}
            (config / "export.yaml").write_text(export())
            await h.until(lambda: h.record("export") is not None)
            assert status(h.record("export"), ConditionType.SUSPENDED)[0] == "False"

    run(scenario)


def test_a_commit_that_changes_no_file_rewrites_nothing(config, store_url):
    import subprocess

    git = ["git", "-C", str(config), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (config / "export.yaml").write_text(export())
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)

    async def scenario() -> None:
        async with Harness(config, store_url) as h:
            before = h.record("export")
            (config / "README.md").write_text("docs")
            subprocess.run([*git, "add", "."], check=True)
            subprocess.run([*git, "commit", "-qm", "docs only"], check=True)
            await h.reconciler.reconcile_once("test")
            assert h.record("export") is before, "the integration was not re-converged"
            assert [e.action for e in h.store.audit_trail("export")] == ["add"]

    run(scenario)


def test_a_rotated_secret_file_reaches_the_running_integration(config, store_url, tmp_path):
    (tmp_path / "secrets").mkdir()  # beside the config directory: where secret files are read by default
    secret = tmp_path / "secrets" / "hook-url"
    secret.write_text("https://hooks.example.org/one\n")
    (config / "hook.yaml").write_text(HOOK.replace("${env:HOOK_URL}", f"${{file:{secret}}}"))

    async def scenario() -> None:
        async with Harness(config, store_url, environ=HOOK_ENV) as h:
            reference = f"${{file:{secret}}}"
            assert h.reconciler.snapshot.applied["hook"].resolved.values[reference] == "https://hooks.example.org/one"  # type: ignore[union-attr]
            secret.write_text("https://hooks.example.org/two\n")
            await h.reconciler.reconcile_once("resync")
            assert h.reconciler.snapshot.applied["hook"].resolved.values[reference] == "https://hooks.example.org/two"  # type: ignore[union-attr]
            assert h.record("hook").generation == 1, "the spec did not change, only the secret"  # type: ignore[union-attr]

    run(scenario)


def test_database_key_column_is_not_mistaken_for_a_credential(config, store_url):
    (config / "db.yaml").write_text("""\
apiVersion: cms.integrations/v1
kind: Integration
name: DB
type: database
config:
  url: ${env:DB_URL}
  table: events
  mode: upsert
  key: [event_id]
webhooks: [{events: ["*"]}]
""")

    async def scenario() -> None:
        async with Harness(config, store_url, environ={"DB_URL": "sqlite:///x.db"}) as h:
            assert h.record("db").spec["config"]["key"] == ["event_id"]  # type: ignore[index]

    run(scenario)


def test_a_never_applied_integration_survives_its_file_breaking(config, store_url):
    (config / "hook.yaml").write_text(HOOK)  # waits for its secrets

    async def scenario() -> None:
        async with Harness(config, store_url, environ={}) as h:
            assert h.record("hook").source_file == "hook.yaml"  # type: ignore[union-attr]
            (config / "hook.yaml").write_text("broken: yes\n")
            await h.until(lambda: status(h.record("hook"), ConditionType.SYNCED)[1] == Reason.VALIDATION_FAILED)
            assert h.record("hook") is not None

    run(scenario)


def test_a_short_inbound_path_secret_keeps_the_integration_from_applying(config, store_url):
    """The path secret is all that guards an inbound route: a short one is refused at apply
    time with the rule, never echoed, instead of a route that answers 404 to everyone."""
    (config / "inbound.yaml").write_text((ROOT / "integrations.d" / "inbound-partner.yaml").read_text())
    (config / "event-types.yaml").write_text((ROOT / "integrations.d" / "event-types.yaml").read_text())
    signing = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LTMyYnl0ZXMtbG9uZw=="
    short = {"PARTNER_INBOUND_SECRET": "tooshort", "PARTNER_SIGNING_SECRET": signing}
    long_enough = {"PARTNER_INBOUND_SECRET": "a-long-random-path-secret-0123", "PARTNER_SIGNING_SECRET": signing}

    async def scenario() -> None:
        async with Harness(config, store_url, environ=short) as h:
            record = h.record("partner-webhook")
            assert status(record, ConditionType.READY) == ("False", Reason.SECRET_MISSING)
            ready = condition(record.conditions, ConditionType.READY)
            assert ready is not None and "shorter than 16 characters" in ready["message"]
            assert "tooshort" not in str(record.conditions)
            assert (
                "partner-webhook" not in h.reconciler.snapshot.applied
                or h.reconciler.snapshot.applied["partner-webhook"].resolved is None
            )
        async with Harness(config, store_url, environ=long_enough) as h:
            assert status(h.record("partner-webhook"), ConditionType.READY) == ("True", Reason.APPLIED)

    run(scenario)


@pytest.mark.parametrize(
    ("reference", "why"),
    [
        ("${env:ADMIN_SECRET}", "names one of the daemon's own settings"),
        ("${env:RECONCILER_STORE}", "names one of the daemon's own settings"),
        ("${file:/proc/self/environ}", "secret references never read"),
        ("${file:OUTSIDE}", "is outside the directories secrets are read from"),
    ],
)
def test_secret_references_read_only_within_their_scope(config, store_url, tmp_path, reference, why):
    """The daemon's settings, /proc, /sys, /dev and files outside the secret directories are never
    read, so an endpoint cannot be made to carry them out (the test endpoint would send them)."""
    outside = tmp_path / "elsewhere" / "hook-url"
    outside.parent.mkdir()
    outside.write_text("https://hooks.example.org/one\n")
    reference = reference.replace("OUTSIDE", str(outside))
    (config / "hook.yaml").write_text(HOOK.replace("${env:HOOK_URL}", reference))
    environ = {**HOOK_ENV, "ADMIN_SECRET": "https://hooks.example.org/x", "RECONCILER_STORE": "https://h.example.org/"}

    async def scenario() -> None:
        async with Harness(config, store_url, environ=environ) as h:
            await h.until(lambda: h.record("hook") is not None, "hook in the registry")
            record = h.record("hook")
            assert record is not None and "hook" not in h.reconciler.snapshot.applied
            assert status(record, ConditionType.READY) == ("False", Reason.SECRET_MISSING)
            ready = next(c for c in record.conditions if c["type"] == "Ready")
            assert why in ready["message"], ready["message"]

    run(scenario)
