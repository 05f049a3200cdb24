"""The `reconciler` command as CI and people run it: exit codes, formats, scaffolding."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from reconciler.cli.main import main
from tests.conftest import HEADER, ROOT

BAD = HEADER + "name: A\ntype: api\nconfig:\n  endpoint: https://a.example.org\n  tmeout: 5s\n"


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_validate_exit_codes_valid_invalid_and_could_not_run(tmp_path):
    assert run("validate", "integrations.d").returncode == 0
    (tmp_path / "bad.yaml").write_text(BAD)
    invalid = run("validate", str(tmp_path))
    assert invalid.returncode == 1
    assert f"{tmp_path}/bad.yaml:7:3: error: unknown field 'tmeout' in config (/config/tmeout)" in invalid.stdout
    assert "hint: did you mean 'timeout'?" in invalid.stdout
    missing = run("validate", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr
    assert run("validate", "--format", "xml").returncode == 2


def test_validate_defaults_to_integrations_d(tmp_path):
    (tmp_path / "integrations.d").mkdir()
    (tmp_path / "integrations.d" / "bad.yaml").write_text(BAD)
    assert run("validate", cwd=tmp_path).returncode == 1


def test_json_format_is_machine_readable(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text(BAD)
    assert main(["validate", "--format", "json", str(tmp_path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False and report["errors"] == 1
    [diagnostic] = report["diagnostics"]
    assert (diagnostic["line"], diagnostic["column"], diagnostic["pointer"], diagnostic["code"]) == (
        7,
        3,
        "/config/tmeout",
        "unknown-field",
    )


def test_github_format_emits_workflow_annotations(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text(BAD)
    assert main(["validate", "--format", "github", str(tmp_path)]) == 1
    line = capsys.readouterr().out.strip()
    assert line.startswith(
        f"::error file={tmp_path}/bad.yaml,line=7,col=3,title=reconciler validate%3A unknown-field::"
    )
    assert "%0Ahint: did you mean 'timeout'?" in line


def test_progress_line_on_a_terminal_for_large_trees(tmp_path):
    template = (ROOT / "integrations.d" / "slack.yaml").read_text()
    for i in range(250):
        (tmp_path / f"s{i}.yaml").write_text(template.replace("id: slack-notifications", f"id: s{i}"))
    primary, secondary = pty.openpty()
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=secondary,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    os.close(secondary)
    seen = drain_pty(primary)
    assert proc.returncode == 0
    assert b"validating 200/250 files" in seen and b"250 files, 250 integrations: valid" in seen


def test_new_lists_templates_and_scaffolds_a_valid_file(tmp_path, capsys):
    assert main(["new"]) == 0
    listing = capsys.readouterr().out
    assert "slack" in listing and "inbound-partner" in listing
    target = tmp_path / "my-slack.yaml"
    assert main(["new", "slack", "my-slack", "--output", str(target)]) == 0
    assert yaml.safe_load(target.read_text())["id"] == "my-slack"
    assert main(["validate", str(target)]) == 0
    assert main(["new", "slack", "again", "--output", str(target)]) == 2, "never overwrites"


def test_new_refuses_an_unknown_template_or_a_bad_id(capsys):
    assert main(["new", "slak", "x"]) == 2
    assert "unknown template 'slak'" in capsys.readouterr().err
    assert main(["new", "slack", "Bad Id"]) == 2


def test_schemas_command_writes_the_committed_schemas(tmp_path):
    assert main(["schemas", "--output", str(tmp_path)]) == 0
    assert (tmp_path / "integration.schema.json").read_text() == (
        ROOT / "schemas" / "integration.schema.json"
    ).read_text()


def test_pre_commit_hook_runs_the_validator():
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    [hook] = hooks
    assert hook["id"] == "reconciler-validate"
    assert hook["entry"].startswith("reconciler validate")
    assert hook["pass_filenames"] is False, "cross-file checks need the whole directory"


def test_validating_one_file_sees_the_event_types_of_its_siblings(tmp_path):
    config = tmp_path / "integrations.d"
    config.mkdir()
    for name in ("inbound-partner.yaml", "event-types.yaml"):
        shutil.copy(ROOT / "integrations.d" / name, config / name)
    (config / "broken.yaml").write_text(BAD)  # a sibling's own errors are not this file's
    alone = run("validate", str(config / "inbound-partner.yaml"))
    assert (alone.returncode, alone.stdout) == (0, ""), alone.stdout
    assert "1 file, 1 integration: valid" in alone.stderr
    elsewhere = tmp_path / "partner.yaml"
    shutil.copy(config / "inbound-partner.yaml", elsewhere)
    assert run("validate", str(elsewhere)).returncode == 1, "no sibling declares the event type"
    assert run("validate", "--config-dir", str(config), str(elsewhere)).returncode == 0
    # a type declared twice is reported in the file validated, never in the sibling
    twice = config / "twice.yaml"
    twice.write_text((config / "event-types.yaml").read_text())
    dup = run("validate", str(twice))
    assert dup.returncode == 1 and f"{twice}:5:7: error: event type partner.roster.updated is also" in dup.stdout
    assert not any(line.startswith(str(config / "event-types.yaml")) for line in dup.stdout.splitlines())


def test_validate_reads_standard_input_as_stdin(tmp_path):
    text = (ROOT / "integrations.d" / "inbound-partner.yaml").read_text()
    alone = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "-"],
        input=text,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert alone.returncode == 1
    assert alone.stdout.startswith("<stdin>:15:10: error: receive.event 'partner.roster.updated' is not a known")
    with_dir = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "--config-dir", str(ROOT / "integrations.d"), "-"],
        input=text,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert (with_dir.returncode, with_dir.stdout) == (0, ""), with_dir.stdout


def test_a_warning_is_shown_but_the_file_is_valid(tmp_path, capsys):
    quiet = HEADER + "name: Quiet\ntype: webhook\nconfig: {endpoint: https://a.example.org/hook}\n"
    (tmp_path / "quiet.yaml").write_text(quiet)
    assert main(["validate", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{tmp_path}/quiet.yaml:1:1: warning: integration 'quiet' is active but subscribes to no")
    assert "1 file, 1 integration: valid, 1 warning" in err
    assert main(["validate", "--format", "json", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["valid"], report["errors"], report["warnings"]) == (True, 0, 1)
    assert main(["validate", "--quiet", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""


def drain_pty(primary: int) -> bytes:
    """Everything written to a pseudo-terminal's other end, until it closes (EOF or EIO)."""
    seen = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(primary)
    return seen
