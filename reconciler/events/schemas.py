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
