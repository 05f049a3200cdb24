"""The operator's command line against a real daemon: get, describe, suspend, resume, deliveries,
run settings from the environment, finding the admin secret, following logs, colour, completion,
and the README's examples printed as the commands print them."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reconciler import __version__
from reconciler.cli.main import _parser
from reconciler.cli.secret import NoAdminSecret, find_admin_secret
from tests.conftest import ROOT
from tests.polling import until
from tests.test_cli import drain_pty
from tests.test_daemon import SECRET, Daemon

README = (ROOT / "README.md").read_text()
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
PARTNER_TOKEN = "partner-token-value-never-printed"
# grade.published is never emitted here, so nothing is ever sent to the partner's endpoint
PARTNER = """\
apiVersion: cms.integrations/v1
kind: Integration
id: partner
name: Partner
type: api
authType: bearer
authConfig:
  token: ${env:PARTNER_TOKEN}
config:
  endpoint: http://127.0.0.1:9/hook
  allowPrivateNetwork: true
webhooks:
  - events: [grade.published]
"""
USER = '{"userId": 123, "email": "student@example.com", "name": "John Doe"}'


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the settings these tests give explicitly."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RECONCILER_") and k not in ("ADMIN_SECRET", "NO_COLOR", "SLACK_WEBHOOK_URL")
    }
    return {**keep, "PYTHONPATH": str(ROOT), **extra}


def cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env if env is not None else clean_env(ADMIN_SECRET=SECRET),
    )


def on_terminal(*args: str, env: dict[str, str]) -> bytes:
    """What the command writes to its standard output when that is a terminal."""
    primary, secondary = pty.openpty()
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=ROOT,
        stdout=secondary,
        stderr=subprocess.PIPE,
        timeout=60,
        env=env,
    )
    os.close(secondary)
    seen = drain_pty(primary)
    assert proc.returncode == 0, proc.stderr
    return seen


@pytest.fixture
def in_process(monkeypatch, capsys):  # type: ignore[no-untyped-def]
    """The CLI's main() in this process (quicker than a process per command), with the daemon's secret
    in ADMIN_SECRET: called as `cli` is, answering (returncode, stdout, stderr) likewise."""
    from reconciler.cli.main import main

    for name in list(os.environ):
        if name.startswith("RECONCILER_") or name == "NO_COLOR":
            monkeypatch.delenv(name)
    monkeypatch.setenv("ADMIN_SECRET", SECRET)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse refusing the command line
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    return run


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon over the bundled local-export and slack files (no SLACK_WEBHOOK_URL) and a partner
    whose bearer token is a reference."""
    config = tmp_path / "integrations.d"
    config.mkdir()
    for name in ("local-export.yaml", "slack.yaml"):
        shutil.copy(ROOT / "integrations.d" / name, config / name)
    (config / "partner.yaml").write_text(PARTNER)
    daemon = Daemon(tmp_path, env=clean_env(ADMIN_SECRET=SECRET, PARTNER_TOKEN=PARTNER_TOKEN))
    try:
        daemon.wait_ready()
        with httpx.Client(base_url=daemon.url, headers={"x-admin-secret": SECRET}, timeout=10) as api:
            until(lambda: len(api.get("/api/integrations").json()["items"]) == 3, "the first pass")
        yield daemon
    finally:
        if daemon.process.poll() is None:
            daemon.stop()


def test_get_describe_suspend_resume_and_deliveries(running, in_process):
    cli = in_process
    server = ["--server", running.url]
    accepted = cli("trigger", "user.registered", "--data", USER, *server)
    assert accepted.returncode == 0, accepted.stderr
    until(lambda: "delivered" in cli("deliveries", "local-export", "--status", "delivered", *server).stdout, "delivery")

    listing = cli("get", *server)
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()]
    assert rows[0] == ["ID", "STATUS", "TYPE", "READY", "GEN", "REVISION", "FILE"]
    assert {row[0]: row[1] for row in rows[1:]} == {
        "local-export": "active",
        "partner": "active",
        "slack-notifications": "pending",
    }
    assert cli("get", "-o", "name", *server).stdout.split() == ["local-export", "partner", "slack-notifications"]
    assert json.loads(cli("get", "partner", "-o", "json", *server).stdout)["id"] == "partner"
    missing = cli("get", "nope", *server)
    assert missing.returncode == 2 and "404" in missing.stderr and "nope" in missing.stderr

    described = cli("describe", "partner", *server)
    assert described.returncode == 0, described.stderr
    text = described.stdout
    for expected in ("Status:      active", "Conditions:", "Ready", "Applied", "Recent attempts:", "Audit trail"):
        assert expected in text, expected
    assert "token: ${env:PARTNER_TOKEN}" in text, "secrets show as their references"
    assert PARTNER_TOKEN not in text and PARTNER_TOKEN not in cli("describe", "partner", "-o", "yaml", *server).stdout
    export = cli("describe", "local-export", *server).stdout
    assert re.search(r"user\.registered\s+1\s+delivered", export), export
    assert "1 delivered" in export

    suspended = cli("suspend", "partner", "--reason", "partner outage", *server)
    assert (
        suspended.returncode == 0 and suspended.stdout.strip() == "partner suspended: status suspended (partner outage)"
    )
    view = json.loads(cli("get", "partner", "-o", "json", *server).stdout)
    assert view["status"] == "suspended" and view["drift"]["reason"] == "partner outage"
    assert RFC3339.match(view["drift"]["at"]), view["drift"]
    assert all(RFC3339.match(entry["at"]) for entry in view["auditTrail"])
    assert "Drift:       suspended at runtime by admin" in cli("describe", "partner", *server).stdout
    assert cli("suspend", "partner", *server).returncode == 2, "--reason is required"
    resumed = cli("resume", "partner", "-o", "yaml", *server)
    assert resumed.returncode == 0 and "status: active" in resumed.stdout and "drift: null" in resumed.stdout

    pending = cli("deliveries", "local-export", *server)
    assert pending.returncode == 0 and "no pending/failed/dead deliveries for local-export" in pending.stderr
    delivered = cli("deliveries", "local-export", "--status", "delivered", "--limit", "5", "-o", "json", *server)
    [item] = json.loads(delivered.stdout)["items"]
    assert item["status"] == "delivered" and item["event"] == "user.registered"


def test_status_words_are_coloured_on_a_terminal_only_and_never_with_no_color(running):
    args = ("get", "--server", running.url)
    green_active = b"\033[32mactive"
    assert green_active in on_terminal(*args, env=clean_env(ADMIN_SECRET=SECRET))
    assert b"\033[" not in on_terminal(*args, env=clean_env(ADMIN_SECRET=SECRET, NO_COLOR="1"))
    assert b"\033[" not in on_terminal(*args, "--color", "never", env=clean_env(ADMIN_SECRET=SECRET))
    assert "\033[" not in cli(*args).stdout, "never when the output is not a terminal"
    assert "\033[32mactive" in cli(*args, "--color", "always").stdout
    assert "\033[32mactive" in cli("--color", "always", *args).stdout, "before the command as well"


def test_the_readme_examples_are_what_the_commands_print(tmp_path):
    config = tmp_path / "integrations.d"
    config.mkdir()
    for name in ("local-export.yaml", "slack.yaml"):
        shutil.copy(ROOT / "integrations.d" / name, config / name)
    daemon = Daemon(tmp_path, env=clean_env(ADMIN_SECRET=SECRET))
    try:
        daemon.wait_ready()
        server = ["--server", daemon.url]
        until(lambda: "slack-notifications" in cli("get", *server).stdout, "the first pass")

        shown = re.search(r"\$ (?:bin/)?reconciler trigger user\.registered --data '(.*)'\n(.*)\n", README)
        assert shown, "the README's trigger example"
        printed = cli("trigger", "user.registered", "--data", shown.group(1), *server)
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout.count("\n") == 1, "one line"

        def shape(line: str) -> str:
            return re.sub(r'"(evt_[^"]*|\d{4}-[^"]*)"', '"X"', line.strip())

        assert shape(printed.stdout) == shape(shown.group(2))
        refused_example = re.search(
            r"\$ (?:bin/)?reconciler trigger user\.registered --data '(\{\"userId\": 123\})'\n((?:  .*\n|r.*\n)+)",
            README,
        )
        assert refused_example, "the README's refused trigger example"
        refused = cli("trigger", "user.registered", "--data", refused_example.group(1), *server)
        assert refused.returncode == 1 and refused.stderr == refused_example.group(2)

        until(lambda: "delivered" in cli("deliveries", "local-export", "--status", "delivered", *server).stdout, "it")
        table = re.search(r"\$ (?:bin/)?reconciler get +#.*\n((?:[^$\n].*\n)+)", README)
        assert table, "the README's get example"
        assert cli("get", *server).stdout == table.group(1)

        log = re.search(r"\$ (?:bin/)?reconciler logs local-export --limit 2 +#.*\n((?:[^$\n].*\n)+)", README)
        assert log, "the README's logs example"

        def times_left_out(text: str) -> str:
            text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "T", text)
            return re.sub(r"\d+(\.\d+)? ms", "N ms", text)

        printed_log = cli("logs", "local-export", "--limit", "2", *server).stdout
        assert times_left_out(printed_log) == times_left_out(log.group(1))
    finally:
        daemon.stop()


def test_run_takes_its_settings_from_the_environment_and_flags_win(tmp_path):
    config = tmp_path / "conf"
    config.mkdir()
    shutil.copy(ROOT / "integrations.d" / "local-export.yaml", config / "local-export.yaml")
    env = clean_env(
        RECONCILER_LISTEN="127.0.0.1:0",
        RECONCILER_CONFIG_DIR="conf",
        RECONCILER_STORE="sqlite:///data/reconciler.db",
        RECONCILER_METRICS_AUTH="true",
        RECONCILER_LOG_FORMAT="text",  # the flag the helper passes (--log-format json) wins
    )
    daemon = Daemon(tmp_path, env=env, listen=None)
    try:
        daemon.wait_ready()  # reads the JSON "starting" line: --log-format json won over the variable
        assert (tmp_path / "data" / "reconciler.db").exists() and (tmp_path / "data" / "admin-secret").exists()
        assert httpx.get(f"{daemon.url}/metrics", timeout=10).status_code == 401, "RECONCILER_METRICS_AUTH"
        # the commands find the generated secret beside RECONCILER_STORE's database, as the daemon keeps it
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        found = cli(
            "get",
            "-o",
            "name",
            "--server",
            daemon.url,
            cwd=elsewhere,
            env={**env, "RECONCILER_STORE": str("sqlite:///" + str(tmp_path / "data" / "reconciler.db"))},
        )
        assert found.returncode == 0 and found.stdout.split() == ["local-export"], found.stderr
    finally:
        daemon.stop()
    bad = cli("run", cwd=tmp_path, env={**env, "RECONCILER_MAX_CONNECTIONS": "many"})
    assert bad.returncode == 2
    assert "RECONCILER_MAX_CONNECTIONS='many' is not a valid value for --max-connections" in bad.stderr
    wrong_choice = cli("run", cwd=tmp_path, env={**env, "RECONCILER_LOG_FORMAT": "xml"})
    assert wrong_choice.returncode == 2 and "choose one of auto, json, text" in wrong_choice.stderr


def test_run_help_names_the_variable_of_every_flag():
    run = _parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    text = cli("run", "--help").stdout
    flags = [a for a in run._actions if a.option_strings and a.dest not in ("help", "color")]
    assert len(flags) >= 13
    for action in flags:
        assert f"RECONCILER_{action.dest.upper()}" in re.sub(r"\s+", "", text), action.dest


def test_logs_follow_says_the_daemon_went_away_and_exits_2(running):
    follower = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "logs", "local-export", "--follow", "--server", running.url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(ADMIN_SECRET=SECRET),
    )
    try:
        assert "added from local-export.yaml" in follower.stdout.readline()  # type: ignore[union-attr]
        running.stop()
        _, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 2, err
    assert f"the daemon at {running.url} went away" in err


def test_without_a_secret_the_commands_say_none_was_sent_and_how_to_give_one(running, tmp_path):
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    sent_none = cli("status", "--server", running.url, cwd=nowhere, env=clean_env())
    assert sent_none.returncode == 2
    message = sent_none.stderr
    assert "no admin secret to send" in message and "refused" not in message
    assert "ADMIN_SECRET" in message and "--admin-secret-file" in message and "state/admin-secret" in message
    assert str(nowhere / "state" / "admin-secret") in message, "it says where it looked"
    trigger = cli("trigger", "user.login", "--server", running.url, cwd=nowhere, env=clean_env())
    assert trigger.returncode == 2 and "no admin secret to send" in trigger.stderr
    wrong = cli("status", "--server", running.url, env=clean_env(ADMIN_SECRET="not-the-daemons-secret-at-all"))
    assert wrong.returncode == 2 and "the daemon refused the admin secret from ADMIN_SECRET" in wrong.stderr


def test_the_generated_secret_is_found_from_any_directory_of_the_checkout(tmp_path):
    (tmp_path / "integrations.d").mkdir()
    shutil.copy(ROOT / "integrations.d" / "local-export.yaml", tmp_path / "integrations.d" / "local-export.yaml")
    daemon = Daemon(tmp_path, env=clean_env())  # generates state/admin-secret, as under `make run`
    try:
        daemon.wait_ready()
        below = cli("get", "-o", "name", "--server", daemon.url, cwd=tmp_path / "integrations.d", env=clean_env())
        assert below.returncode == 0 and below.stdout.split() == ["local-export"], below.stderr
    finally:
        daemon.stop()


def test_secret_lookup_order(tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "admin-secret").write_text("beside-the-store\n")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "admin-secret").write_text("beside-the-config\n")
    (tmp_path / "given").write_text("given-file\n")
    work = tmp_path / "work"
    work.mkdir()
    store = {"RECONCILER_STORE": "sqlite:///../db/reconciler.db"}
    assert find_admin_secret(str(tmp_path / "given"), {"ADMIN_SECRET": "x" * 16}, work).value == "given-file"
    assert find_admin_secret(None, {"ADMIN_SECRET": "from-env", **store}, work).value == "from-env"
    assert find_admin_secret(None, store, work).value == "beside-the-store"
    assert find_admin_secret(None, {"RECONCILER_CONFIG_DIR": "../integrations.d"}, work).value == "beside-the-config"
    assert find_admin_secret(None, {}, work).value == "beside-the-config", "from the directory above"
    with pytest.raises(NoAdminSecret):
        find_admin_secret(None, {}, Path("/"))


def test_version_flags():
    for flag in ("--version", "-V"):
        printed = cli(flag)
        assert printed.returncode == 0 and printed.stdout.strip() == f"reconciler {__version__}"


def complete(script: str, *words: str) -> list[str]:
    """What bash completes after `words` (the last is the one being typed), with the script loaded."""
    program = (
        f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\nCOMP_CWORD={len(words) - 1}\n"
        '_reconciler\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_completion_scripts():
    bash = cli("completion", "bash")
    assert bash.returncode == 0
    checked = subprocess.run(["bash", "-n"], input=bash.stdout, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    assert complete(bash.stdout, "reconciler", "des") == ["describe"]
    assert complete(bash.stdout, "reconciler", "--color", "never", "sus") == ["suspend"]
    assert complete(bash.stdout, "reconciler", "run", "--log-format", "") == ["auto", "json", "text"]
    assert "--output" in complete(bash.stdout, "reconciler", "get", "--o")
    assert "--reason" in complete(bash.stdout, "reconciler", "suspend", "x", "--")
    zsh = cli("completion", "zsh").stdout
    assert zsh.startswith("#compdef reconciler\n") and bash.stdout in zsh
    if shutil.which("zsh"):
        assert subprocess.run(["zsh", "-n"], input=zsh, text=True, timeout=30).returncode == 0
    fish = cli("completion", "fish").stdout
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        assert f"-n __fish_use_subcommand -a {name} " in fish, name
    assert "complete -c reconciler -n '__fish_seen_subcommand_from run' -l config-dir -r -F" in fish
    if shutil.which("fish"):
        assert subprocess.run(["fish", "--no-execute"], input=fish, text=True, timeout=30).returncode == 0
    assert cli("completion", "tcsh").returncode == 2


def test_colour_rules_and_aligned_coloured_tables(capsys):
    import io

    from reconciler.cli.colour import Palette, wanted
    from reconciler.cli.integrations import table

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert wanted(Terminal(), "auto", {}) and not wanted(io.StringIO(), "auto", {})
    assert not wanted(Terminal(), "auto", {"NO_COLOR": "1"}) and wanted(Terminal(), "auto", {"NO_COLOR": ""})
    assert not wanted(Terminal(), "auto", {"TERM": "dumb"})
    assert wanted(io.StringIO(), "always", {"NO_COLOR": "1"}) and not wanted(Terminal(), "never", {})
    palette = Palette(True)
    assert palette.plan_line("+ slack (api, slack.yaml)").startswith("\033[32m+")
    assert palette.plan_line("    - config.timeout: 5s").startswith("\033[31m")
    assert palette.plan_line("Plan (a -> b): no changes.") == "Plan (a -> b): no changes."
    assert Palette(False).status("dead") == "dead"
    table([("ID", "STATUS", "X"), ("a", "dead", "1"), ("bb", "active", "2")], {1: palette.status})
    lines = [re.sub(r"\033\[[\d;]*m", "", line) for line in capsys.readouterr().out.splitlines()]
    assert lines == ["ID  STATUS  X", "a   dead    1", "bb  active  2"]
