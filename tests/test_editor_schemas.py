"""Editors get the schemas from anywhere: `reconciler new -o FILE` writes a modeline that
resolves where FILE is (a relative path within its repository, else a running daemon's
/schemas/ URL), the daemon serves the schemas without the admin secret, and `reconciler
schemas --print` prints one."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import jsonschema
import yaml

from reconciler.cli.main import main
from reconciler.events.catalog import SCHEMA_ID_PREFIX
from tests.conftest import ROOT
from tests.test_daemon import Daemon

SCHEMAS = ROOT / "schemas"
MODELINE = "# yaml-language-server: $schema="


def repository(path: Path) -> Path:
    """A folder that is the top of a git repository (as far as the modeline's search cares)."""
    (path / ".git").mkdir(parents=True)
    return path


def schema_location(file: Path) -> str:
    first = file.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(MODELINE), first
    return first.removeprefix(MODELINE)


def test_new_points_at_the_schemas_of_the_files_repository(tmp_path, capsys):
    repo = repository(tmp_path / "elsewhere")
    assert main(["schemas", "--output", str(repo / "schemas")]) == 0
    for target, expected in (
        (repo / "integrations.d" / "slack.yaml", "../schemas/integration.schema.json"),
        (repo / "teams" / "ops" / "integrations.d" / "slack.yaml", "../../../schemas/integration.schema.json"),
        (repo / "sis.yaml", "schemas/integration.schema.json"),
    ):
        target.parent.mkdir(parents=True, exist_ok=True)
        assert main(["new", "slack", "my-slack", "--output", str(target)]) == 0
        location = schema_location(target)
        assert location == expected
        schema = json.loads((target.parent / location).read_text(encoding="utf-8"))
        jsonschema.validate(yaml.safe_load(target.read_text(encoding="utf-8")), schema)
    event_type = repo / "integrations.d" / "course-archived.yaml"
    assert main(["new", "event-type", "course.archived", "--output", str(event_type)]) == 0
    assert schema_location(event_type) == "../schemas/eventtype.schema.json"


def test_new_outside_a_repository_with_schemas_points_at_the_daemon(tmp_path, monkeypatch):
    # a schemas/ folder above the repository is not used: the path would not resolve in a clone
    assert main(["schemas", "--output", str(tmp_path / "schemas")]) == 0
    repo = repository(tmp_path / "other")
    (repo / "integrations.d").mkdir()
    daemon = Daemon(repo)
    try:
        daemon.wait_ready()
        monkeypatch.setenv("RECONCILER_SERVER", daemon.url)
        target = repo / "integrations.d" / "slack.yaml"
        assert main(["new", "slack", "my-slack", "--output", str(target)]) == 0
        location = schema_location(target)
        assert location == f"{daemon.url}/schemas/integration.schema.json"
        answer = httpx.get(location, timeout=10)  # no admin secret: the file format is open
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/schema+json"
        assert answer.text == (SCHEMAS / "integration.schema.json").read_text(encoding="utf-8")
        jsonschema.validate(yaml.safe_load(target.read_text(encoding="utf-8")), answer.json())
        event = httpx.get(f"{daemon.url}/schemas/events/user.registered.schema.json", timeout=10)
        assert event.json() == json.loads((SCHEMAS / "events" / "user.registered.schema.json").read_text())
        missing = httpx.get(f"{daemon.url}/schemas/integrations.schema.json", timeout=10)
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert "integration.schema.json" in missing.json()["detail"], "the 404 lists the schemas there are"
    finally:
        daemon.stop()


def test_schemas_print_writes_one_schema_to_standard_output(capsys):
    assert main(["schemas", "--print", "integration"]) == 0
    assert capsys.readouterr().out == (SCHEMAS / "integration.schema.json").read_text(encoding="utf-8")
    assert main(["schemas", "--print", "events/user.registered.schema.json"]) == 0
    assert json.loads(capsys.readouterr().out)["$id"] == SCHEMA_ID_PREFIX + "events/user.registered.schema.json"
    assert main(["schemas", "--print", "integrations"]) == 2
    error = capsys.readouterr().err
    assert "no schema 'integrations'" in error and "eventtype" in error and "events/user.registered" in error


def test_each_schema_id_names_its_path():
    for path in SCHEMAS.rglob("*.schema.json"):
        document = json.loads(path.read_text(encoding="utf-8"))
        assert document["$id"] == SCHEMA_ID_PREFIX + path.relative_to(SCHEMAS).as_posix()
