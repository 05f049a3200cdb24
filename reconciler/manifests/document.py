"""Validate one document: its envelope (apiVersion, kind, type), which decides the model
that applies, then the model itself, its id and its secret references.

Every problem is returned, not only the first; the model only when there is none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ValidationError

from reconciler.manifests import secrets
from reconciler.manifests.diagnostics import Diagnostic
from reconciler.manifests.errors import diagnostics_from, did_you_mean
from reconciler.manifests.fields import walk_strings
from reconciler.manifests.loader import Document
from reconciler.manifests.models import (
    API_VERSION,
    ID_PATTERN,
    INTEGRATION_MODELS,
    KINDS,
    AnyIntegration,
    EventTypeDecl,
    IntegrationBase,
)


def validate_document(doc: Document) -> tuple[AnyIntegration | EventTypeDecl | None, list[Diagnostic]]:
    """Validate one document; the model is returned only when there is no problem."""
    data = doc.data
    problems = list(_reference_problems(doc))
    envelope = _envelope_problems(doc)
    if envelope:
        return None, problems + envelope
    model: type[BaseModel]
    if data["kind"] == "EventType":
        model = EventTypeDecl
    else:
        model = INTEGRATION_MODELS[data["type"]]
        problems += _id_problems(doc)
    try:
        spec = model.model_validate(data)
    except ValidationError as exc:
        problems += diagnostics_from(doc, model, exc.errors())
        return None, problems
    if isinstance(spec, IntegrationBase) and spec.id is None:
        spec.id = Path(doc.file).stem
    return (None if problems else spec), problems


def _envelope_problems(doc: Document) -> list[Diagnostic]:
    """apiVersion, kind and type decide which model applies, so they are checked first."""
    return _version_problems(doc) + _kind_problems(doc)


def _version_problems(doc: Document) -> list[Diagnostic]:
    version = doc.data.get("apiVersion")
    if version is None:
        return [doc.diagnostic((), "missing apiVersion", f"add apiVersion: {API_VERSION} at the top", "missing-field")]
    if not isinstance(version, str) or version != API_VERSION:
        return [
            doc.diagnostic(
                ("apiVersion",),
                f"unknown apiVersion {version!r}",
                f"this version of reconciler reads apiVersion: {API_VERSION}",
                "api-version",
            )
        ]
    return []


def _kind_problems(doc: Document) -> list[Diagnostic]:
    kind = doc.data.get("kind")
    if kind is None:
        return [doc.diagnostic((), "missing kind", "add kind: Integration (or kind: EventType)", "missing-field")]
    if not isinstance(kind, str) or kind not in KINDS:
        return [
            doc.diagnostic(
                ("kind",),
                f"unknown kind {kind!r}",
                did_you_mean(str(kind), KINDS, "kinds are Integration and EventType"),
                "kind",
            )
        ]
    return _type_problems(doc) if kind == "Integration" else []


def _type_problems(doc: Document) -> list[Diagnostic]:
    kind_type = doc.data.get("type")
    if kind_type is None:
        return [doc.diagnostic((), "missing type", "add type: api, webhook, database or file", "missing-field")]
    if not isinstance(kind_type, str) or kind_type not in INTEGRATION_MODELS:
        return [
            doc.diagnostic(
                ("type",),
                f"unknown type {kind_type!r}",
                did_you_mean(str(kind_type), INTEGRATION_MODELS, "types are api, webhook, database and file"),
                "type",
            )
        ]
    return []


def _id_problems(doc: Document) -> list[Diagnostic]:
    if "id" in doc.data:
        return []
    if doc.count > 1:
        return [
            doc.diagnostic(
                (),
                f"document {doc.index + 1} has no id",
                "a file with several documents needs an id in each",
                "missing-field",
            )
        ]
    stem = Path(doc.file).stem
    if not re.match(ID_PATTERN, stem):
        return [
            doc.diagnostic(
                (),
                f"no id, and the file name {stem!r} is not a valid id",
                "add id: a-slug (lowercase letters, digits, dashes) or rename the file",
                "id",
            )
        ]
    return []


def _reference_problems(doc: Document) -> Iterable[Diagnostic]:
    """Malformed secret references anywhere in the document (except an EventType's schema)."""
    for loc, text in walk_strings(doc.data):
        if loc and loc[0] in ("schema", "example") and doc.data.get("kind") == "EventType":
            continue
        if "${" not in text:
            continue
        try:
            secrets.parse_references(text)
        except secrets.ReferenceError as exc:
            yield doc.diagnostic(loc, exc.message, exc.hint, "secret-reference")
