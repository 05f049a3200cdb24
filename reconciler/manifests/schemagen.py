"""Generate the JSON Schemas in `schemas/` from the models and the event catalog.

`make schemas` writes them; a test fails when the committed files drift from the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from reconciler.events.catalog import BUILTIN_EVENT_TYPES, JSON_SCHEMA_DIALECT, SCHEMA_ID_PREFIX, data_schema_document
from reconciler.manifests.models import AUTH_MODELS, EventTypeDecl, Integration


def integration_schema() -> dict[str, Any]:
    schema = TypeAdapter(Integration).json_schema(ref_template="#/$defs/{model}")
    _add_auth_conditions(schema)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": SCHEMA_ID_PREFIX + "integration.schema.json",
        "title": "Integration",
        "description": "One integration of the course management system (kind: Integration). See docs/file-format.md.",
        **schema,
    }


def _add_auth_conditions(schema: dict[str, Any]) -> None:
    """authConfig's shape follows authType: say so to editors with if/then per integration type."""
    conditions: list[dict[str, Any]] = [
        {
            "if": {"properties": {"authType": {"const": name}}, "required": ["authType"]},
            "then": {"properties": {"authConfig": {"$ref": f"#/$defs/{model.__name__}"}}, "required": ["authConfig"]},
        }
        for name, model in AUTH_MODELS.items()
    ]
    conditions.append(
        {
            "if": {"anyOf": [{"not": {"required": ["authType"]}}, {"properties": {"authType": {"const": "none"}}}]},
            "then": {"not": {"required": ["authConfig"]}},
        }
    )
    for definition in schema.get("$defs", {}).values():
        if "authType" in definition.get("properties", {}):
            definition["allOf"] = conditions


def eventtype_schema() -> dict[str, Any]:
    schema = EventTypeDecl.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": SCHEMA_ID_PREFIX + "eventtype.schema.json",
        "title": "EventType",
        **schema,
    }


def all_schemas() -> dict[str, dict[str, Any]]:
    out = {
        "integration.schema.json": integration_schema(),
        "eventtype.schema.json": eventtype_schema(),
    }
    for name, event in BUILTIN_EVENT_TYPES.items():
        out[f"events/{name}.schema.json"] = data_schema_document(event)
    return out


def schema_named(name: str) -> dict[str, Any] | None:
    """One schema by its name: `integration.schema.json`, `events/user.registered.schema.json`, or
    the same without `.schema.json`; None when there is none."""
    schemas = all_schemas()
    return schemas.get(name) or schemas.get(name + ".schema.json")


def dumps(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def write_schemas(target: Path) -> list[Path]:
    written = []
    for relative, schema in all_schemas().items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        text = dumps(schema)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    stale = {p for p in target.rglob("*.schema.json")} - set(written)
    for path in stale:
        path.unlink()
    return written
