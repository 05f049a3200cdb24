"""schemas/ is generated from the models: drift fails, and the schemas agree with the validator."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from reconciler.events.catalog import BUILTIN_EVENT_TYPES, GUIDE_EVENT_TYPES
from reconciler.manifests.schemagen import all_schemas, event_typescript
from tests.conftest import ROOT

SCHEMAS = ROOT / "schemas"


def test_committed_schemas_match_the_models():
    generated = all_schemas()
    committed = {str(p.relative_to(SCHEMAS)): json.loads(p.read_text()) for p in SCHEMAS.rglob("*.json")}
    assert sorted(committed) == sorted(generated), "run `make schemas` and commit schemas/"
    for name, schema in generated.items():
        assert committed[name] == schema, f"schemas/{name} drifted from the models: run `make schemas`"


def test_catalog_has_the_guides_thirteen_event_types_and_the_layers_own():
    assert len(GUIDE_EVENT_TYPES) == 13
    assert set(BUILTIN_EVENT_TYPES) == set(GUIDE_EVENT_TYPES) | {
        "integration.test",
        "integration.synced",
        "file.received",
    }


@pytest.mark.parametrize("name", sorted(BUILTIN_EVENT_TYPES))
def test_event_schema_accepts_its_example_and_requires_its_identifying_fields(name):
    schema = json.loads((SCHEMAS / "events" / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    example = BUILTIN_EVENT_TYPES[name].example
    assert list(validator.iter_errors(example)) == []
    assert schema["required"], "the identifying fields are required"
    assert not validator.is_valid({})
    assert validator.is_valid({**example, "somethingExtra": 1}), "additional properties are allowed"


def test_user_registered_schema_accepts_the_guides_payload():
    schema = json.loads((SCHEMAS / "events" / "user.registered.schema.json").read_text())
    guide = {
        "userId": 123,
        "email": "student@example.com",
        "name": "John Doe",
        "studentId": "IT2024001",
        "registrationDate": "2024-01-15T10:30:00.000Z",
    }
    assert jsonschema.Draft202012Validator(schema).is_valid(guide)


def test_integration_schema_accepts_every_bundled_integration():
    schema = json.loads((SCHEMAS / "integration.schema.json").read_text())
    eventtype = json.loads((SCHEMAS / "eventtype.schema.json").read_text())
    for path in sorted((ROOT / "integrations.d").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        chosen = eventtype if data["kind"] == "EventType" else schema
        errors = [e.message for e in jsonschema.Draft202012Validator(chosen).iter_errors(data)]
        assert errors == [], path.name


@pytest.mark.parametrize(
    "change",
    [
        {"type": "ftp"},
        {"authType": "bearer"},  # authConfig then required, with a token
        {"authConfig": {"token": "${env:X}"}},  # authType none takes no authConfig
        {"tmeout": "5s"},
        {"syncFrequency": -1},
        {"id": "Not An Id"},
    ],
)
def test_integration_schema_refuses_what_the_validator_refuses(change):
    schema = json.loads((SCHEMAS / "integration.schema.json").read_text())
    data = yaml.safe_load((ROOT / "integrations.d" / "slack.yaml").read_text())
    data.update(change)
    assert not jsonschema.Draft202012Validator(schema).is_valid(data)


def test_bundled_files_carry_the_editor_modeline():
    for path in (ROOT / "integrations.d").glob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema=../schemas/"), path.name
        target = (path.parent / first.split("=", 1)[1]).resolve()
        assert target.exists(), first


def test_committed_typescript_declarations_match_the_schemas():
    committed = (ROOT / "clients" / "node" / "events.d.ts").read_text(encoding="utf-8")
    assert committed == event_typescript(), (
        "clients/node/events.d.ts drifted from schemas/events/: run `make schemas` and commit it"
    )
