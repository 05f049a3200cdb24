"""The bundled integrations.d/ and the integration guide's JSON examples."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.manifests.scaffold import scaffolds
from reconciler.manifests.validate import validate_paths
from tests.conftest import ROOT

GUIDE = Path(__file__).parent / "data" / "guide"
BUNDLED = ROOT / "integrations.d"
# Which scaffolding template each bundled file comes from.
BUNDLED_FROM = {
    "slack.yaml": "slack",
    "google-sheets.yaml": "google-sheets",
    "sis.yaml": "sis",
    "teams.yaml": "teams",
    "discord.yaml": "discord",
    "postgres-reporting.yaml": "postgres-reporting",
    "s3-export.yaml": "s3-export",
    "inbound-partner.yaml": "inbound-partner",
    "local-export.yaml": "local-export",
    "event-types.yaml": "event-type",
}


def test_bundled_directory_validates():
    result = validate_paths([BUNDLED])
    assert [d.as_text() for d in result.diagnostics] == []
    types = {i.spec.type for i in result.integrations}  # type: ignore[attr-defined]
    assert types == {"api", "webhook", "database", "file"}


def test_every_bundled_file_is_its_scaffold():
    available = scaffolds()
    assert sorted(p.name for p in BUNDLED.iterdir()) == sorted(BUNDLED_FROM)
    for file, template in BUNDLED_FROM.items():
        scaffold = available[template]
        assert (BUNDLED / file).read_text() == scaffold.render(scaffold.default_id), file


def test_every_scaffold_with_a_new_id_validates(tmp_path):
    for name, scaffold in scaffolds().items():
        (tmp_path / f"{name}.yaml").write_text(
            scaffold.render(f"my-{name}" if name != "event-type" else "my.custom.event")
        )
    # the partner webhook emits the event type declared by the event-type scaffold
    (tmp_path / "event-type.yaml").write_text(scaffolds()["event-type"].render("partner.roster.updated"))
    result = validate_paths([tmp_path])
    assert [d.as_text() for d in result.diagnostics] == []


def guide_example(name: str, **edits: object) -> dict:
    data = json.loads((GUIDE / f"{name}.json").read_text())
    return {"apiVersion": "cms.integrations/v1", "kind": "Integration", "id": name, **data, **edits}


def write_json(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def test_guide_batch_example_validates_as_it_stands(tmp_path):
    assert validate_paths([write_json(tmp_path, "batch", guide_example("batch"))]).diagnostics == []


def test_guide_slack_example_validates_once_its_webhook_url_is_a_reference(tmp_path):
    data = guide_example("slack")
    data["config"]["endpoint"] = "${env:SLACK_WEBHOOK_URL}"
    assert validate_paths([write_json(tmp_path, "slack", data)]).diagnostics == []


def test_guide_slack_example_with_its_literal_webhook_url_is_refused(tmp_path):
    """A Slack incoming-webhook URL carries its credential in the path: it is a token too."""
    [problem] = validate_paths([write_json(tmp_path, "slack", guide_example("slack"))]).diagnostics
    assert (problem.line, problem.pointer) == (9, "/config/endpoint")
    assert "whose path is itself the credential" in problem.message


def test_guide_sis_example_validates_once_its_key_is_a_reference(tmp_path):
    data = guide_example("sis")
    data["authConfig"]["key"] = "${env:SIS_API_KEY}"
    assert validate_paths([write_json(tmp_path, "sis", data)]).diagnostics == []


def test_guide_sis_example_with_its_literal_key_is_refused(tmp_path):
    result = validate_paths([write_json(tmp_path, "sis", guide_example("sis"))])
    [problem] = result.diagnostics
    assert (problem.line, problem.pointer) == (17, "/authConfig/key")
    assert "literal" in problem.message


def test_guide_sheets_example_validates_once_edited(tmp_path):
    data = guide_example("google-sheets")
    data["authConfig"]["token"] = "${env:GOOGLE_ACCESS_TOKEN}"
    data["config"]["endpoint"] = (
        "https://sheets.googleapis.com/v4/spreadsheets/1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"
        "/values/Sheet1!A1:append"
    )
    assert validate_paths([write_json(tmp_path, "google-sheets", data)]).diagnostics == []


def test_guide_sheets_example_unedited_reports_placeholders_and_token(tmp_path):
    result = validate_paths([write_json(tmp_path, "google-sheets", guide_example("google-sheets"))])
    found = sorted((d.line, d.pointer, d.message.split(" ")[-1]) for d in result.diagnostics)
    assert found == [
        (9, "/config/endpoint", "{spreadsheetId}"),
        (16, "/authConfig/token", "git"),
    ]
