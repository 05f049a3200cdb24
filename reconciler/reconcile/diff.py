"""Field-level differences between two specs, for plans and the audit trail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.manifests.diagnostics import pointer_of

_ABSENT = object()


@dataclass(frozen=True)
class FieldChange:
    """One field that differs between two versions of a spec."""

    pointer: str  # JSON pointer of the field
    old: Any  # _ABSENT-free: None with `added` for a new field
    new: Any
    kind: str  # added | removed | changed


def diff_specs(old: Any, new: Any, loc: tuple[str | int, ...] = ()) -> list[FieldChange]:
    """Leaf-level changes from `old` to `new`; lists compare element by element."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[FieldChange] = []
        for key in sorted(set(old) | set(new), key=str):
            changes += diff_specs(old.get(key, _ABSENT), new.get(key, _ABSENT), (*loc, key))
        return changes
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [c for i, (a, b) in enumerate(zip(old, new, strict=True)) for c in diff_specs(a, b, (*loc, i))]
    if old is _ABSENT and new is _ABSENT:
        return []
    if old is _ABSENT:
        return [FieldChange(pointer_of(loc), None, new, "added")]
    if new is _ABSENT:
        return [FieldChange(pointer_of(loc), old, None, "removed")]
    return [] if old == new else [FieldChange(pointer_of(loc), old, new, "changed")]


def added_fields(spec: Any, loc: tuple[str | int, ...] = ()) -> list[FieldChange]:
    """Every field an added spec sets, leaf by leaf (unset and empty ones left out): what a
    reviewer must see of a new integration, since it says what is sent where. Secret
    references appear as written, by name."""
    if isinstance(spec, dict):
        return [c for key in sorted(spec, key=str) for c in added_fields(spec[key], (*loc, key))]
    if isinstance(spec, list):
        return [c for index, item in enumerate(spec) for c in added_fields(item, (*loc, index))]
    if spec is None:
        return []
    return [FieldChange(pointer_of(loc), None, spec, "added")]
