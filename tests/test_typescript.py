"""The JSON Schema to TypeScript converter behind `reconciler schemas --typescript`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reconciler.manifests.typescript import UnsupportedSchema, interface_name, typescript_declarations
from tests.conftest import ROOT


def declare(properties: dict[str, object], required: list[str] | None = None, **extra: object) -> str:
    schema = {"type": "object", "properties": properties, "required": required or [], **extra}
    return typescript_declarations({"custom.thing": schema})


def test_interface_names_follow_the_event_type():
    assert interface_name("user.registered") == "UserRegisteredData"
    assert interface_name("custom.partner-pushed") == "CustomPartnerPushedData"


def test_required_and_optional_properties_with_their_types():
    text = declare(
        {
            "id": {"type": ["integer", "string"]},
            "score": {"type": "number"},
            "passed": {"type": "boolean"},
            "note": {"type": ["string", "null"]},
            "kind": {"type": "string", "enum": ["test", "exam"]},
            "version": {"const": 2},
            "tags": {"type": "array", "items": {"type": "string"}},
            "anything": {},
            "bad-name": {"type": "string"},
        },
        required=["id", "kind"],
    )
    assert "export interface CustomThingData {\n" in text
    for line in [
        "  id: number | string;\n",
        "  score?: number;\n",
        "  passed?: boolean;\n",
        "  note?: string | null;\n",
        '  kind: "test" | "exam";\n',
        "  version?: 2;\n",
        "  tags?: Array<string>;\n",
        "  anything?: unknown;\n",
        '  "bad-name"?: string;\n',
        "  [key: string]: unknown;\n",  # additionalProperties defaults to allowed
    ]:
        assert line in text, line
    assert '  "custom.thing": CustomThingData;\n' in text


def test_additional_properties_false_nested_objects_and_maps():
    text = declare(
        {
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
            "changes": {"type": "object"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
        additionalProperties=False,
    )
    assert "  address?: {\n    city: string;\n  };\n" in text
    assert "  changes?: Record<string, unknown>;\n" in text
    assert "  counts?: Record<string, number>;\n" in text
    assert "[key: string]" not in text


def test_descriptions_and_formats_become_doc_comments():
    text = declare({"at": {"type": "string", "format": "date-time", "description": "when it happened"}})
    assert "  /** when it happened Format: date-time. */\n  at?: string;\n" in text


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}}, "$ref at /properties/a"),
        ({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}]}}}, "anyOf at /properties/a"),
        ({"type": "string"}, '"type": "object"'),
    ],
)
def test_a_construct_it_cannot_express_is_refused_naming_the_file_and_the_place(schema, named):
    with pytest.raises(UnsupportedSchema) as refused:
        typescript_declarations({"custom.thing": schema})
    assert "schemas/events/custom.thing.schema.json" in str(refused.value)
    assert named in str(refused.value)


def test_the_cli_writes_the_declarations(tmp_path):
    target = tmp_path / "out" / "events.d.ts"
    command = ["schemas", "--output", str(tmp_path / "schemas"), "--typescript", str(target)]
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", *command],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert target.read_text() == (ROOT / "clients" / "node" / "events.d.ts").read_text()
    assert (tmp_path / "schemas" / "events" / "user.registered.schema.json").is_file()
