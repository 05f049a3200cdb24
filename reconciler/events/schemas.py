"""JSON Schemas of event data: checked once, compiled once, never fetching anything.

Event schemas come from pull requests (`kind: EventType`), so they may reference only their
own parts (`#/...`): a `$ref` to a URL or a file would make the validator and the daemon
fetch it. Patterns that can backtrack catastrophically are refused, since the course
system's data is checked against them on every event.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import referencing
import referencing.exceptions

# A group with a quantifier inside and another after it, such as (a+)+ or (\w*)*: the
# classic shape of catastrophic backtracking.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)[+*{]")
MAX_PATTERN_CHARS = 1000


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why this schema cannot be used for event data, or None."""
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "(root)"
        return f"not a valid JSON Schema at {where}: {exc.message}"
    for where, key, value in _walk(schema, ""):
        if key == "$ref" and isinstance(value, str) and not value.startswith("#"):
            return f"$ref {value!r} at {where or '/'} points outside the schema; only #/... references are allowed"
        if key == "pattern" and isinstance(value, str):
            problem = _pattern_problem(value)
            if problem:
                return f"pattern at {where}: {problem}"
        if key == "patternProperties" and isinstance(value, dict):
            for pattern in value:
                problem = _pattern_problem(pattern)
                if problem:
                    return f"patternProperties key at {where}: {problem}"
    try:
        validator(schema).is_valid({})  # resolves every local $ref that validation would follow
    except referencing.exceptions.Unresolvable as exc:
        return f"a $ref does not resolve: {exc}"
    return None


def validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    # an empty registry: nothing outside the schema is ever retrieved
    return cls(schema, format_checker=cls.FORMAT_CHECKER, registry=referencing.Registry())


def _pattern_problem(pattern: str) -> str | None:
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"longer than {MAX_PATTERN_CHARS} characters"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"not a regular expression: {exc}"
    if _NESTED_QUANTIFIER.search(pattern):
        return "a quantified group inside a quantifier, such as (a+)+, can take exponential time; simplify it"
    return None


def _walk(value: Any, where: str) -> Iterator[tuple[str, str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield where, str(key), item
            yield from _walk(item, f"{where}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{where}/{index}")


# --- a fast path for the common case ---------------------------------------------------------------
#
# jsonschema takes about 0.1 ms per event, half of intake's CPU. Event schemas are mostly
# "an object with these required fields of these types", so such schemas are also compiled
# into plain Python checks: a valid event passes those alone, and only an invalid one (or a
# schema using more of JSON Schema) goes through jsonschema, which then explains every reason.

_ANNOTATIONS = frozenset(
    {"$schema", "$id", "title", "description", "examples", "default", "$comment", "deprecated", "readOnly", "writeOnly"}
)
_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
Check = Any  # Callable[[Any], bool]


def compile_fast(schema: Any) -> Check | None:
    """A predicate equivalent to the schema for valid instances, or None when the schema uses
    keywords this fast path does not know."""
    if schema is True or schema == {}:
        return lambda _value: True
    if not isinstance(schema, dict):
        return None
    known = _ANNOTATIONS | {
        "type",
        "required",
        "properties",
        "additionalProperties",
        "enum",
        "format",
        "minimum",
        "maximum",
        "items",
    }
    if set(schema) - known or schema.get("additionalProperties", True) is not True:
        return None
    checks: list[Check] = []
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else kinds
        if not all(n in _TYPES for n in names):
            return None
        tests = [_TYPES[n] for n in names]
        checks.append(lambda v: any(t(v) for t in tests))
    if "enum" in schema:
        allowed = list(schema["enum"])
        checks.append(lambda v: any(v == a and type(v) is type(a) for a in allowed))
    if "format" in schema:
        fmt = schema["format"]
        checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
        checks.append(lambda v: checker.conforms(v, fmt))
    for bound, compare in (("minimum", lambda v, b: v >= b), ("maximum", lambda v, b: v <= b)):
        if bound in schema:
            limit = schema[bound]
            checks.append(lambda v, limit=limit, compare=compare: not _TYPES["number"](v) or compare(v, limit))
    required = list(schema.get("required", []))
    if required:
        checks.append(lambda v: not isinstance(v, dict) or all(k in v for k in required))
    properties = {}
    for name, sub in schema.get("properties", {}).items():
        compiled = compile_fast(sub)
        if compiled is None:
            return None
        properties[name] = compiled
    if properties:
        checks.append(
            lambda v: (
                not isinstance(v, dict) or all(name not in v or check(v[name]) for name, check in properties.items())
            )
        )
    if "items" in schema:
        item = compile_fast(schema["items"])
        if item is None:
            return None
        checks.append(lambda v: not isinstance(v, list) or all(item(x) for x in v))
    return lambda v: all(check(v) for check in checks)
