"""`reconciler plan` between git revisions, against the work tree, and against a running daemon."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.cli.main import main
from tests.conftest import ROOT
from tests.test_daemon import SECRET, Daemon

BUNDLED = ROOT / "integrations.d"


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=t@example.org", "-c", "user.name=t", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    config = tmp_path / "integrations.d"
    config.mkdir()
    for name in ("slack.yaml", "teams.yaml", "sis.yaml"):
        (config / name).write_text((BUNDLED / name).read_text())
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "base")
    return tmp_path


def change_files(config: Path) -> None:
    slack = (config / "slack.yaml").read_text().replace("template: slack ", "template: discord ")
    (config / "slack.yaml").write_text(slack.replace("name: Slack Notifications", "name: Slack"))
    (config / "teams.yaml").unlink()
    (config / "discord.yaml").write_text((BUNDLED / "discord.yaml").read_text())


def plan(repo: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plan", "--config-dir", str(repo / "integrations.d"), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_no_change_exits_0(repo, capsys):
    code, out, _ = plan(repo, capsys, "--base", "HEAD")
    assert code == 0 and "no changes" in out


def test_work_tree_against_a_base_revision(repo, capsys):
    change_files(repo / "integrations.d")
    code, out, _ = plan(repo, capsys, "--base", "HEAD")
    assert code == 1
    assert out.splitlines() == [
        "Plan (HEAD -> work tree with uncommitted changes to 2 files: discord.yaml, slack.yaml): "
        "1 to add, 1 to change, 1 to remove.",
        "+ discord-reminders (webhook, discord.yaml)",
        # every field an added integration sets, references by name: what it sends where
        '    + /config/endpoint: "${env:DISCORD_WEBHOOK_URL}"',
        "    + /config/rateLimit/perSecond: 1.0",
        '    + /config/template: "discord"',
        '    + /name: "Discord Reminders"',
        '    + /type: "webhook"',
        '    + /webhooks/0/events/0: "test.reminder"',
        '    + /webhooks/0/events/1: "assignment.reminder"',
        '    + /webhooks/0/events/2: "note.uploaded"',
        "~ slack-notifications (webhook, slack.yaml)",
        '    ~ /config/template: "slack" -> "discord"',
        '    ~ /name: "Slack Notifications" -> "Slack"',
        "- teams-notifications (webhook, teams.yaml)",
    ]


def test_between_two_revisions_as_markdown(repo, capsys):
    base = git(repo, "rev-parse", "HEAD")
    change_files(repo / "integrations.d")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "change")
    (repo / "integrations.d" / "sis.yaml").unlink()  # the work tree is not the head here
    code, out, _ = plan(repo, capsys, "--base", base, "--head", "HEAD", "--format", "markdown")
    assert code == 1
    assert out.startswith("### reconciler plan: 1 to add, 1 to change, 1 to remove")
    assert "| - | `teams-notifications` | webhook | teams.yaml |" in out
    assert "student-information-system" not in out
    assert '```diff\n~ /config/template: "slack" -> "discord"' in out


def test_json_format(repo, capsys):
    change_files(repo / "integrations.d")
    code, out, _ = plan(repo, capsys, "--base", "HEAD", "--format", "json")
    report = json.loads(out)
    assert report["summary"] == {"add": 1, "change": 1, "remove": 1}
    assert {c["id"]: c["kind"] for c in report["changes"]}["teams-notifications"] == "remove"


def test_secrets_show_only_as_reference_names(repo, capsys):
    sis = repo / "integrations.d" / "sis.yaml"
    sis.write_text(sis.read_text().replace("${env:SIS_API_KEY}", "${env:SIS_API_KEY_V2}"))
    code, out, _ = plan(repo, capsys, "--base", "HEAD", "--format", "json")
    [change] = json.loads(out)["changes"]
    assert change["fields"] == [
        {"pointer": "/authConfig/key", "kind": "changed", "old": "${env:SIS_API_KEY}", "new": "${env:SIS_API_KEY_V2}"}
    ]


def test_invalid_head_is_an_error_with_its_diagnostics(repo, capsys):
    (repo / "integrations.d" / "slack.yaml").write_text("name: [broken\n")
    code, out, err = plan(repo, capsys, "--base", "HEAD")
    assert code == 2
    assert "slack.yaml:2:1: error: YAML syntax error" in err
    assert "does not validate" in err


def test_bad_revision_or_arguments_exit_2(repo, capsys):
    assert plan(repo, capsys, "--base", "no-such-rev")[0] == 2
    assert plan(repo, capsys)[0] == 2
    assert main(["plan", "--config-dir", str(repo / "missing"), "--base", "HEAD"]) == 2


def test_base_revision_without_the_directory_adds_everything(repo, capsys):
    first = git(repo, "rev-list", "--max-parents=0", "HEAD")
    (repo / "README").write_text("x")
    git(repo, "add", "README")
    git(repo, "commit", "-qm", "readme")
    git(repo, "checkout", "-q", "--orphan", "empty")
    git(repo, "rm", "-rq", "--cached", ".")
    (repo / "only.txt").write_text("x")
    git(repo, "add", "only.txt")
    git(repo, "commit", "-qm", "no integrations here")
    empty = git(repo, "rev-parse", "HEAD")
    code, out, _ = plan(repo, capsys, "--base", empty, "--head", first)
    assert code == 1 and "3 to add" in out


def test_against_a_running_daemon(repo, tmp_path, capsys, monkeypatch):
    deployed = tmp_path / "deployed"  # the daemon runs on its own checkout; the plan reads the work tree
    shutil.copytree(repo / "integrations.d", deployed / "integrations.d")
    daemon = Daemon(
        deployed,
        env={
            "ADMIN_SECRET": SECRET,
            "SIS_API_KEY": "k",
            "SLACK_WEBHOOK_URL": "https://h.example.org/x",
            "TEAMS_WEBHOOK_URL": "https://t.example.org/x",
        },
    )
    try:
        daemon.wait_ready()
        monkeypatch.setenv("ADMIN_SECRET", SECRET)
        code, out, _ = plan(repo, capsys, "--server", daemon.url)
        assert code == 0, out
        # the daemon's checkout is not committed (untracked in this repository): the plan says so
        assert f"Plan ({daemon.url} with uncommitted changes to 3 files: sis.yaml, slack.yaml, teams.yaml -> " in out
        change_files(repo / "integrations.d")
        code, out, _ = plan(repo, capsys, "--server", daemon.url)
        assert code == 1 and "1 to add, 1 to change, 1 to remove" in out
        monkeypatch.setenv("ADMIN_SECRET", "wrong-secret-value-000")
        code, _, err = plan(repo, capsys, "--server", daemon.url)
        assert code == 2 and "refused the admin secret" in err
    finally:
        daemon.stop()
