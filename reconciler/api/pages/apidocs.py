"""The API reference at /api/docs: the OpenAPI document rendered as a page the daemon serves itself.

Built from the very document /api/openapi.json serves (never a second description that could
drift): every operation with its parameters, body, answers and a curl line, every schema of
`components` with its properties. Server-rendered, so it reads without JavaScript; the page's
script (apidocs.js) adds a "Try it" form per operation that sends the request from the browser.
Nothing here loads from elsewhere: admins' networks often have no internet.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from reconciler.api.openapi import served

METHODS = ("get", "post", "put", "patch", "delete")
REF_PREFIX = "#/components/schemas/"
EXAMPLE_DEPTH = 4  # nested objects deeper than this are shown as {} in examples
ADMIN_SCHEMES = {"adminSecret", "bearer"}


@dataclass(frozen=True, kw_only=True)
class Parameter:
    """One parameter of an operation: in its path, query or headers."""

    name: str
    location: str  # path, query or header
    required: bool
    description: str
    type_html: Markup


@dataclass(frozen=True, kw_only=True)
class Answer:
    """One documented answer of an operation: its status, meaning and body's type."""

    status: str
    description: str
    media_type: str
    type_html: Markup


@dataclass(frozen=True, kw_only=True)
class Operation:
    """One method on one path, as the page shows it."""

    method: str
    path: str
    anchor: str
    summary: str
    description: str
    admin: bool
    parameters: list[Parameter]
    body_type: Markup | None
    body_media_type: str
    body_example: str  # JSON text, "" without a body
    answers: list[Answer]
    streams: bool  # answers with text/event-stream: the try-it form reads it as it comes


@dataclass(frozen=True, kw_only=True)
class Property:
    """One property of a component schema."""

    name: str
    required: bool
    description: str
    type_html: Markup


@dataclass(frozen=True, kw_only=True)
class SchemaEntry:
    """One schema of the document's components, with its properties."""

    name: str
    anchor: str
    description: str
    type_html: Markup
    properties: list[Property]


@dataclass(frozen=True, kw_only=True)
class Reference:
    """The whole page: operations grouped by tag, then the schemas."""

    title: str
    version: str
    description: str
    groups: list[tuple[str, list[Operation]]]  # by tag, in the document's order
    schemas: list[SchemaEntry]


def operation_anchor(method: str, path: str) -> str:
    """`get /api/integrations/{id}` -> `op-get-api-integrations-id`: stable, linkable ids."""
    return "op-" + method + "-" + re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def schema_anchor(name: str) -> str:
    return "schema-" + name


@functools.cache
def reference() -> Reference:
    """The page's model of the served document: built once, like the document itself."""
    document = served()
    schemas = document.get("components", {}).get("schemas", {})
    groups: dict[str, list[Operation]] = {}
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                operation = _operation(method, path, item[method], schemas)
                groups.setdefault((item[method].get("tags") or ["other"])[0], []).append(operation)
    info = document["info"]
    return Reference(
        title=info["title"],
        version=info["version"],
        description=info.get("description", ""),
        groups=list(groups.items()),
        schemas=[_schema_entry(name, schema) for name, schema in schemas.items()],
    )


def _operation(method: str, path: str, raw: dict[str, Any], schemas: dict[str, Any]) -> Operation:
    body: dict[str, Any] = (raw.get("requestBody") or {}).get("content") or {}
    body_media_type, body_content = next(iter(body.items()), ("", dict[str, Any]()))
    body_schema = body_content.get("schema")
    answers = [_answer(status, answer) for status, answer in sorted(raw["responses"].items())]
    return Operation(
        method=method,
        path=path,
        anchor=operation_anchor(method, path),
        summary=raw.get("summary", ""),
        description=raw.get("description", ""),
        admin=any(ADMIN_SCHEMES & set(requirement) for requirement in raw.get("security") or []),
        parameters=[_parameter(p) for p in raw.get("parameters") or []],
        body_type=type_html(body_schema) if body_schema else None,
        body_media_type=body_media_type,
        body_example=json.dumps(example(body_schema, schemas), indent=2) if body_schema else "",
        answers=answers,
        streams=any(a.media_type == "text/event-stream" for a in answers),
    )


def _parameter(raw: dict[str, Any]) -> Parameter:
    return Parameter(
        name=raw["name"],
        location=raw["in"],
        required=bool(raw.get("required")),
        description=raw.get("description", ""),
        type_html=type_html(raw.get("schema") or {}),
    )


def _answer(status: str, raw: dict[str, Any]) -> Answer:
    content: dict[str, Any] = raw.get("content") or {}
    media_type, body = next(iter(content.items()), ("", dict[str, Any]()))
    schema = body.get("schema")
    return Answer(
        status=status,
        description=raw.get("description", ""),
        media_type=media_type,
        type_html=type_html(schema) if schema else Markup(""),
    )


def _schema_entry(name: str, schema: dict[str, Any]) -> SchemaEntry:
    required = set(schema.get("required") or [])
    properties = [
        Property(
            name=prop,
            required=prop in required,
            description=(sub.get("description") or "") if isinstance(sub, dict) else "",
            type_html=type_html(sub) if isinstance(sub, dict) else Markup("any"),
        )
        for prop, sub in (schema.get("properties") or {}).items()
    ]
    return SchemaEntry(
        name=name,
        anchor=schema_anchor(name),
        description=schema.get("description", ""),
        type_html=type_html({k: v for k, v in schema.items() if k != "properties"} or {"type": "object"}),
        properties=properties,
    )


def type_html(schema: dict[str, Any] | bool) -> Markup:
    """A schema in one line: `string (date-time)`, `array of Integration` (linked), `"a" | "b"`."""
    if not isinstance(schema, dict):
        return Markup("any")
    if "$ref" in schema:
        name = str(schema["$ref"]).removeprefix(REF_PREFIX)
        return Markup('<a href="#{}">{}</a>').format(schema_anchor(name), name)
    if "const" in schema:
        return Markup("<code>{}</code>").format(json.dumps(schema["const"]))
    if "enum" in schema:
        return Markup(" | ").join(Markup("<code>{}</code>").format(json.dumps(v)) for v in schema["enum"])
    for combinator, joiner in (("oneOf", " | "), ("anyOf", " | "), ("allOf", " & ")):
        if combinator in schema:
            return Markup(joiner).join(type_html(part) for part in schema[combinator])
    kinds = schema.get("type")
    if isinstance(kinds, list):
        return Markup(" | ").join(type_html({**schema, "type": kind}) for kind in kinds)
    if kinds == "array":
        return Markup("array of ") + type_html(schema.get("items", {}))
    if kinds == "object" or (kinds is None and "properties" in schema):
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra and not schema.get("properties"):
            return Markup("map of ") + type_html(extra)
        names = list(schema.get("properties") or {})
        return Markup("object") + (Markup(" {{{}}}").format(", ".join(names)) if names else Markup(""))
    if kinds is None:
        return Markup("any")
    text = escape(kinds)
    if "format" in schema:
        text += Markup(" ({})").format(schema["format"])
    elif "pattern" in schema:
        text += Markup(" matching <code>{}</code>").format(schema["pattern"])
    return text


def example(schema: Any, schemas: dict[str, Any], depth: int = 0) -> Any:
    """A request body to start from: the schema's own example, or one built from its shape."""
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        return example(schemas.get(str(schema["$ref"]).removeprefix(REF_PREFIX)), schemas, depth)
    if "example" in schema:
        return schema["example"]
    if schema.get("examples"):
        return schema["examples"][0]
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combinator in ("oneOf", "anyOf", "allOf"):
        if schema.get(combinator):
            return example(schema[combinator][0], schemas, depth)
    kinds = schema.get("type")
    kind = next((k for k in kinds if k != "null"), None) if isinstance(kinds, list) else kinds
    if kind == "object" or (kind is None and "properties" in schema):
        if depth >= EXAMPLE_DEPTH:
            return {}
        properties = schema.get("properties") or {}
        wanted = schema.get("required") or list(properties)
        return {name: example(properties.get(name, {}), schemas, depth + 1) for name in wanted}
    if kind == "array":
        return [example(schema.get("items", {}), schemas, depth + 1)]
    if kind == "string":
        return "2026-01-01T00:00:00Z" if schema.get("format") == "date-time" else "string"
    return {"integer": 0, "number": 0, "boolean": False}.get(str(kind))


def curl(operation: Operation, base_url: str) -> str:
    """The operation as a curl command; the secret stays a shell variable, never its value."""
    command = ["curl", "-sS"]
    if operation.method != "get":
        command += ["-X", operation.method.upper()]
    path = re.sub(r"\{([^}]+)\}", r"<\1>", operation.path)  # a placeholder to replace, not curl's {a,b} glob
    words = [shlex.join(command), shlex.quote(base_url.rstrip("/") + path)]
    if operation.admin:
        words.append('-H "x-admin-secret: $ADMIN_SECRET"')
    if operation.body_example:
        words += ["-H", shlex.quote(f"content-type: {operation.body_media_type}")]
        words += ["-d", shlex.quote(json.dumps(json.loads(operation.body_example), separators=(",", ":")))]
    return " ".join(words)


__all__ = ["Reference", "curl", "example", "operation_anchor", "reference", "type_html"]
