"""Desired state: what the files declare, integration by integration, with what is wrong.

A pass validates the whole tree, then splits the result per integration, so that one broken
file refuses only the integrations it declares (and, for a duplicate id, both claimants).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.spec import secrets
from reconciler.spec.checks import document_id
from reconciler.spec.diagnostics import Diagnostic
from reconciler.spec.models import AnyIntegration
from reconciler.spec.validate import ValidationResult

# Fields whose values are credentials: shown only when they are references (names, not values).
CREDENTIAL_FIELDS = frozenset({"key", "token", "password", "clientSecret", "refreshToken", "signingSecret", "secret"})
REDACTED = "***"


@dataclass
class DesiredIntegration:
    id: str
    source_file: str
    source_document: int
    content_hash: str
    spec: AnyIntegration | None  # None: this version does not validate
    problems: list[Diagnostic] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.spec is not None and not self.problems


@dataclass
class DesiredState:
    integrations: dict[str, list[DesiredIntegration]]  # id -> claimants (more than one: a duplicate id)
    broken_files: dict[str, list[Diagnostic]]  # files that yielded no documents at all
    result: ValidationResult


def desired_state(result: ValidationResult) -> DesiredState:
    by_doc = {(item.doc.file, item.doc.index): item.spec for item in result.integrations}
    problems_by_file: dict[str, list[Diagnostic]] = defaultdict(list)
    for diagnostic in result.diagnostics:
        problems_by_file[diagnostic.file].append(diagnostic)
    integrations: dict[str, list[DesiredIntegration]] = defaultdict(list)
    files_with_docs = set()
    for doc in result.integration_docs:
        files_with_docs.add(doc.file)
        problems = [d for d in problems_by_file.get(doc.file, []) if d.document in (None, doc.index)]
        spec = by_doc.get((doc.file, doc.index))
        integrations[document_id(doc)].append(
            DesiredIntegration(
                id=document_id(doc),
                source_file=doc.file,
                source_document=doc.index,
                content_hash=result.hashes.get(doc.file, ""),
                spec=spec if not problems else None,
                problems=problems,
            )
        )
    for event_type in result.event_types:
        files_with_docs.add(event_type.doc.file)
    broken = {
        file: problems
        for file, problems in problems_by_file.items()
        if file not in files_with_docs and file in result.hashes
    }
    return DesiredState(dict(integrations), broken, result)


def canonical_spec(spec: AnyIntegration) -> dict[str, Any]:
    """The spec as stored and compared: JSON types, defaults filled, credentials redacted."""
    dumped = spec.model_dump(mode="json", by_alias=True)
    return {k: redact(v, k) if k in _CREDENTIAL_HOMES else v for k, v in dumped.items()}


def spec_hash(spec: dict[str, Any]) -> str:
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# Subtrees where credentials can be: the rest (templates, subscriptions) is left as it is.
_CREDENTIAL_HOMES = ("authConfig", "config", "receive")
_NOT_CREDENTIAL_HOMES = frozenset({"template", "mapping", "webhooks"})


def redact(value: Any, key: str = "") -> Any:
    """Credential fields keep their references (names) and lose any literal value.

    The models already refuse literal credentials; this is the second line of defence for
    anything stored or shown.
    """
    if isinstance(value, dict):
        return {k: v if k in _NOT_CREDENTIAL_HOMES else redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if key in CREDENTIAL_FIELDS and isinstance(value, str) and not secrets.is_single_reference(value):
        return REDACTED
    return value


@dataclass(frozen=True)
class Resolved:
    """The secrets behind an integration's references: held in memory only, never stored."""

    values: Mapping[str, str]  # reference text -> value
    fingerprint: str  # changes when any value changes (a rotated secret file), reveals nothing


def references_of(spec: AnyIntegration) -> tuple[secrets.Reference, ...]:
    """The distinct secret references of a spec, computed once per spec object."""
    cached = _REFERENCES.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    # One JSON dump and a regex beat walking the tree; a dump has no comments to mislead it.
    references = tuple({str(r): r for r in secrets.parse_references(spec.model_dump_json())}.values())
    if len(_REFERENCES) > _REFERENCES_MAX:
        _REFERENCES.clear()
    _REFERENCES[id(spec)] = (spec, references)
    return references


_REFERENCES: dict[int, tuple[AnyIntegration, tuple[secrets.Reference, ...]]] = {}
_REFERENCES_MAX = 100_000


def resolve_secrets(spec: AnyIntegration, environ: Mapping[str, str] | None = None) -> tuple[Resolved | None, str]:
    """Resolve every reference in the spec; (None, reason) names the first that fails."""
    values: dict[str, str] = {}
    for reference in references_of(spec):
        try:
            values[str(reference)] = secrets.resolve_reference(reference, environ)
        except secrets.ReferenceError as exc:
            return None, exc.message
    return Resolved(values, _fingerprint(values)), ""


def secrets_fingerprint(spec: AnyIntegration, environ: Mapping[str, str] | None = None) -> str:
    """Changes when any referenced value appears, disappears or changes; reveals none of them."""
    resolved, why = resolve_secrets(spec, environ)
    return resolved.fingerprint if resolved is not None else "missing:" + why


def _fingerprint(values: Mapping[str, str]) -> str:
    # Compared in memory only, within one process: Python's (salted) hash is enough and cheap.
    return format(hash(tuple(sorted(values.items()))) & 0xFFFFFFFFFFFFFFFF, "016x")


def git_commit(directory: Path) -> str | None:
    """The HEAD commit of the git work tree holding `directory`, or None outside git."""
    try:
        out = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) >= 40 else None
