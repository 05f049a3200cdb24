"""pydantic's validation errors as Diagnostics: each error's location mapped onto the
document (pointer, line and column), its message in the file format's words, and a hint
("did you mean", the accepted forms, where a misplaced field belongs).

Values that may be secrets typed by mistake are never echoed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from reconciler.manifests.diagnostics import Diagnostic, pointer_of
from reconciler.manifests.fields import FieldProblem
from reconciler.manifests.loader import Document
from reconciler.manifests.models import AUTH_MODELS

# Values at these places may be secrets typed by mistake: never echo them in messages.
_SENSITIVE_TREES = ("authConfig", "headers", "storageOptions")
_SENSITIVE_FIELDS = frozenset(
    {
        "key",
        "token",
        "password",
        "clientSecret",
        "refreshToken",
        "secret",
        "signingSecret",
        "url",
        "endpoint",
        "syncEndpoint",
        "tokenUrl",
    }
)


def diagnostics_from(doc: Document, model: type[BaseModel], errors: list[Any]) -> list[Diagnostic]:
    """pydantic's errors as diagnostics: locations mapped onto the document, and the errors of
    a union's alternatives (one per accepted form) merged into one."""
    by_union: dict[tuple[str | int, ...], list[Any]] = {}
    out: list[Diagnostic] = []
    for error in errors:
        loc, in_union, at_key = _document_loc(doc.data, tuple(error["loc"]), error["type"])
        error = {**error, "loc": loc}
        if in_union and error["type"] not in ("missing", "extra_forbidden", "value_error", "spec"):
            by_union.setdefault(loc, []).append(error)
            continue
        diagnostic = _from_pydantic(doc, model, error)
        if at_key:
            line, column = doc.position(diagnostic.pointer, at_key=True)
            diagnostic = replace(diagnostic, line=line, column=column)
        out.append(diagnostic)
    for loc, alternatives in by_union.items():
        forms = sorted({_form_of(e) for e in alternatives})
        out.append(
            doc.diagnostic(
                loc, f"{_dotted(loc)}: expected {' or '.join(forms)}", "see docs/file-format.md for this field", "type"
            )
        )
    return out


def _document_loc(data: Any, loc: tuple[str | int, ...], kind: str) -> tuple[tuple[str | int, ...], bool, bool]:
    """The part of pydantic's location that exists in the document, whether pydantic named a
    union alternative on the way (`dict[str,any]`, `function-after[...]`), and whether the
    error concerns a mapping key (`[key]`)."""
    kept: list[str | int] = []
    in_union = at_key = False
    current = data
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if part == "[key]":
            at_key = True
            continue
        found, child = _child(current, part)
        if found:
            kept.append(part)
            current = child
        elif last and kind in ("missing", "extra_forbidden") and isinstance(current, dict):
            kept.append(part)  # the field that is absent, or the unknown one
        elif isinstance(part, str) and (not last or not isinstance(current, dict)):
            in_union = True  # a union alternative's label: not a place in the document
        else:
            kept.append(part)
    return tuple(kept), in_union, at_key


def _child(current: Any, part: str | int) -> tuple[bool, Any]:
    if isinstance(current, dict) and part in current:
        return True, current[part]
    if isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
        return True, current[part]
    return False, None


_FORMS = {
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "list_type": "a list",
    "string_type": "a string",
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "literal_error": "one of the listed names",
}


def _form_of(error: Any) -> str:
    return _FORMS.get(error["type"], str(error["msg"]).lower())


def _from_pydantic(doc: Document, model: type[BaseModel], error: Any) -> Diagnostic:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return _unknown_field(doc, model, loc)
    if kind == "missing":
        return _missing_field(doc, loc)
    if kind == "string_type" and _is_duration(loc):
        return doc.diagnostic(
            loc,
            f"{_dotted(loc)}: {error.get('input')!r} is not a duration",
            f"durations carry a unit: {error.get('input')}s for seconds, or 500ms, 5m",
            "type",
        )
    if kind == "value_error" and isinstance(ctx.get("error"), FieldProblem):
        problem: FieldProblem = ctx["error"]
        return doc.diagnostic(loc, problem.message, problem.hint, "invalid")
    if kind == "spec":
        return doc.diagnostic(loc, str(ctx.get("message", error["msg"])), str(ctx.get("hint", "")), "invalid")
    if kind == "literal_error":
        return _not_a_choice(doc, loc, error.get("input"), ctx.get("expected", ""))
    if kind == "string_pattern_mismatch":
        return doc.diagnostic(
            loc, _pattern_message(loc, _dotted(loc), error.get("input"), _echo(loc)), _pattern_hint(loc), "pattern"
        )
    if kind == "union_tag_invalid" or kind == "model_type" or kind == "dict_type":
        return doc.diagnostic(loc, f"{_dotted(loc)}: expected a mapping", "write it as key: value lines", "type")
    return _in_pydantic_words(doc, loc, error)


def _unknown_field(doc: Document, model: type[BaseModel], loc: tuple[str | int, ...]) -> Diagnostic:
    allowed = _allowed_fields(model, loc[:-1], doc.data)
    hint = did_you_mean(str(loc[-1]), allowed, "allowed here: " + ", ".join(sorted(allowed)))
    hint = _other_type_hint(str(loc[-1]), loc, hint)
    return doc.diagnostic(
        loc,
        f"unknown field {loc[-1]!r}" + (f" in {_dotted(loc[:-1])}" if loc[:-1] else ""),
        hint,
        "unknown-field",
        at_key=True,
    )


def _missing_field(doc: Document, loc: tuple[str | int, ...]) -> Diagnostic:
    # point at the key of the mapping that lacks the field
    line, column = doc.position(pointer_of(loc[:-1]), at_key=True)
    return Diagnostic(
        doc.file,
        line,
        column,
        f"missing required field {_dotted(loc)}",
        pointer_of(loc),
        f"add {loc[-1]}: ..." + (f" under {_dotted(loc[:-1])}" if loc[:-1] else ""),
        "missing-field",
        document=doc.index,
    )


def _not_a_choice(doc: Document, loc: tuple[str | int, ...], given: Any, expected: Any) -> Diagnostic:
    value = given if _echo(loc) else "(value not shown)"
    choices = [c.strip(" '") for c in str(expected).replace(" or ", ",").split(",")]
    return doc.diagnostic(
        loc, f"{_dotted(loc)}: {value!r} is not one of {expected}", did_you_mean(str(value), choices, ""), "enum"
    )


def _in_pydantic_words(doc: Document, loc: tuple[str | int, ...], error: Any) -> Diagnostic:
    """Any other error: pydantic's own message, with the value when it is safe to echo."""
    name = _dotted(loc)
    message = error["msg"]
    if error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    if _echo(loc) and "input" in error and isinstance(error["input"], str | int | float | bool):
        message = f"{message}, got {error['input']!r}"
    return doc.diagnostic(loc, f"{name}: {message[0].lower()}{message[1:]}" if name else message, "", error["type"])


def _is_duration(loc: tuple[str | int, ...]) -> bool:
    return bool(loc) and (loc[-1] in ("timeout", "tolerance") or "schedule" in loc)


def _echo(loc: tuple[str | int, ...]) -> bool:
    if any(part in _SENSITIVE_TREES for part in loc):
        return False
    return not any(part in _SENSITIVE_FIELDS for part in loc)


def _dotted(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _pattern_message(loc: tuple[str | int, ...], name: str, value: Any, echo: bool) -> str:
    shown = f" {value!r}" if echo else ""
    last = loc[-1] if loc else ""
    if last == "id":
        return f"id{shown} is not a valid id"
    if "events" in loc:
        return f"{name}:{shown} is not an event pattern"
    if last in ("timeout", "tolerance") or "schedule" in loc:
        return f"{name}:{shown} is not a duration"
    if last == "name" and loc == ("name",):
        return f"name{shown} is not a valid event type name"
    return f"{name}:{shown} has the wrong form"


def _pattern_hint(loc: tuple[str | int, ...]) -> str:
    last = loc[-1] if loc else ""
    if last == "id":
        return "ids are lowercase letters, digits and dashes, 1 to 63 characters (slack-notifications)"
    if "events" in loc:
        return "write an event type (grade.published), a family (grade.*) or * for all"
    if last in ("timeout", "tolerance") or "schedule" in loc:
        return "write a number with a unit: 500ms, 10s, 5m, 2h"
    if last in ("token", "key", "password", "clientSecret", "refreshToken", "secret", "signingSecret"):
        return "write a secret reference: ${env:NAME} or ${file:/path}"
    if last in ("table", "tableSchema") or "key" in loc:
        return "SQL identifiers are letters, digits and _, not starting with a digit"
    if "mapping" in loc:
        return "map a column to id, event, timestamp or data.field.path"
    if last == "event" or last == "name":
        return "event types are lowercase dotted names, such as custom.attendance.recorded"
    if last in ("rolloverSize", "maxAttachmentSize"):
        return "write a size such as 64MiB or 10MB"
    if "labels" in loc:
        return "label names are letters, digits and . _ / -"
    return ""


def _allowed_fields(model: type[BaseModel], loc: tuple[str | int, ...], data: dict[str, Any]) -> list[str]:
    """The field names allowed at `loc`, for "did you mean" hints."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if part == "authConfig":
            current = AUTH_MODELS.get(str(data.get("authType")))
            if current is None:
                return []
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(str(part))
        if info is None:
            return []
        current = _model_in(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is dict:
        return None
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


_FIELD_HOMES = {
    "receive": "receive: is for type webhook",
    "table": "table is a field of config (type database)",
    "endpoint": "endpoint is a field of config (config.endpoint)",
    "method": "method is a field of config (config.method)",
    "headers": "headers is a field of config (config.headers)",
    "batchSize": "batchSize is a field of config (config.batchSize)",
    "batchDelay": "batchDelay is a field of config (config.batchDelay)",
    "template": "template is a field of config, or of a webhooks entry",
    "events": "events belong in a webhooks entry: webhooks: [{events: [...]}]",
}


def _other_type_hint(field_name: str, loc: tuple[str | int, ...], hint: str) -> str:
    if len(loc) == 1 and field_name in _FIELD_HOMES:
        return _FIELD_HOMES[field_name]
    return hint


def did_you_mean(value: str, choices: Iterable[str], fallback: str) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else fallback
