"""What every part of the file format shares: the `Strict` base model, the string forms
(durations, header names, templates, secret references) and the checks of single values
that several models apply.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo

from reconciler.manifests.durations import DURATION_PATTERN, format_duration, parse_duration
from reconciler.manifests.fields import FieldProblem, require_reference

HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
DURATION_FIELD = Field(pattern=DURATION_PATTERN, json_schema_extra={"format": "duration-string"})

Duration = Annotated[str, DURATION_FIELD]
Template = Annotated[
    str | dict[str, Any] | list[Any],
    Field(
        description="a built-in template name (slack, teams, discord, sheets) or an inline "
        "JSON structure whose strings are Jinja2 templates"
    ),
]
Credential = Annotated[
    str,
    Field(
        description="a secret reference: ${env:NAME} or ${file:/path}",
        pattern=r"^\s*\$\{(env:[A-Za-z_][A-Za-z0-9_]*|file:/[^}\s]+)\}\s*$",
    ),
]


class Strict(BaseModel):
    """Unknown fields are errors (with a "did you mean" hint from the validator)."""

    # strict: a quoted "60" is a string, not a number; YAML's types are the file's types
    model_config = ConfigDict(extra="forbid", strict=True)


def check_credential(value: Any, info: ValidationInfo) -> Any:
    """A `before` validator of `Credential` fields: a literal secret is refused with a hint."""
    # Only strings can be literal credentials; anything else gets pydantic's type error.
    if not isinstance(value, str):
        return value
    return require_reference(value, info.field_name or "the value")


def bounded_duration(value: str, what: str, low: float, high: float) -> str:
    """`value` (already a well-formed duration) when it lies between `low` and `high` seconds."""
    seconds = parse_duration(value)
    if not low <= seconds <= high:
        raise FieldProblem(
            f"{what} {value} is out of range",
            f"use a value between {_human(low)} and {_human(high)}",
        )
    return value


def _human(seconds: float) -> str:
    return "0s" if seconds == 0 else format_duration(seconds)
