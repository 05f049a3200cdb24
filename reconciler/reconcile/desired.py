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

from reconciler.manifests import secrets
from reconciler.manifests.checks import document_id
from reconciler.manifests.diagnostics import Diagnostic
from reconciler.manifests.fields import looks_like_credential_name, walk_strings
from reconciler.manifests.models import AnyIntegration, DatabaseIntegration
from reconciler.manifests.validate import ValidationResult
from reconciler.registry import Resolved, substitute
from reconciler.store.own_store import is_own_store

REDACTED = "***"


@dataclass
class DesiredIntegration:
    """One version of an integration as a file declares it (valid or not): a claimant of its id."""

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
    """Every integration the files declare, by id (more than one claimant: a duplicate id)."""

    integrations: dict[str, list[DesiredIntegration]]  # id -> claimants (more than one: a duplicate id)
    result: ValidationResult


def desired_state(result: ValidationResult) -> DesiredState:
    by_doc = {(item.doc.file, item.doc.index): item.spec for item in result.integrations}
    problems_by_file: dict[str, list[Diagnostic]] = defaultdict(list)
    for diagnostic in result.diagnostics:
        problems_by_file[diagnostic.file].append(diagnostic)
    integrations: dict[str, list[DesiredIntegration]] = defaultdict(list)
    for doc in result.integration_docs:
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
    return DesiredState(dict(integrations), result)


def canonical_spec(spec: AnyIntegration) -> dict[str, Any]:
    """The spec as stored and compared: JSON types, defaults filled, credentials redacted."""
    dumped: dict[str, Any] = spec.model_dump(mode="json", by_alias=True)
    return redact(dumped)


def spec_hash(spec: dict[str, Any]) -> str:
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# Where credentials live in a dumped spec: (path to a mapping, the keys in it that hold one).
_CREDENTIAL_PLACES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("authConfig",), ("key", "token", "password", "clientSecret", "refreshToken")),
    (("config",), ("signingSecret",)),
    (("receive",), ("secret",)),
    (("receive", "verify"), ("secret",)),
)


def redact(spec: dict[str, Any]) -> dict[str, Any]:
    """Credential fields keep their references (names) and lose any literal value.

    The models already refuse literal credentials; this is the second line of defence for
    anything stored or shown. It touches only the known credential fields, so a database
    `key` column or a template's text stays as written.
    """
    for path, keys in _CREDENTIAL_PLACES:
        holder: Any = spec
        for part in path:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if isinstance(holder, dict):
            for key in keys:
                value = holder.get(key)
                if isinstance(value, str) and not secrets.is_single_reference(value):
                    holder[key] = REDACTED
    options = spec.get("config", {}).get("storageOptions") if isinstance(spec.get("config"), dict) else None
    if isinstance(options, dict):
        for loc, value in walk_strings(options):
            if looks_like_credential_name(str(loc[-1])) and not secrets.has_reference(value):
                container: Any = options
                for step in loc[:-1]:
                    container = container[step]
                container[loc[-1]] = REDACTED
    return spec


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


def resolve_secrets(
    spec: AnyIntegration, environ: Mapping[str, str] | None = None, scope: secrets.SecretScope = secrets.ANYWHERE
) -> tuple[Resolved | None, str]:
    """Resolve every reference in the spec; (None, reason) names every one that fails, so that
    one restart after setting them all is enough."""
    values: dict[str, str] = {}
    failures: list[secrets.ReferenceError] = []
    for reference in references_of(spec):
        try:
            values[str(reference)] = secrets.resolve_reference(reference, environ, scope)
        except secrets.ReferenceError as exc:
            failures.append(exc)
    if failures:
        return None, secrets.describe_failures(failures)
    receive = getattr(spec, "receive", None)
    if receive is not None and len(values.get(receive.secret, receive.secret)) < secrets.MIN_PATH_SECRET_CHARS:
        # the path secret is the only thing between the internet and this event type
        return None, (
            f"receive.secret ({receive.secret}) is shorter than {secrets.MIN_PATH_SECRET_CHARS} characters; "
            "use a long random value, such as the output of: openssl rand -hex 24"
        )
    return Resolved(values, _fingerprint(values)), ""


def own_store_refusal(spec: AnyIntegration, resolved: Resolved, store_url: str | None) -> str:
    """Why a database integration cannot be applied because its URL (resolved) is the daemon's
    own store, or "" when it can. Refused when applied, so its status says why instead of every
    event dead-lettering; the sink checks again at each attempt (a link can be repointed later)."""
    if not isinstance(spec, DatabaseIntegration) or not store_url:
        return ""
    if not is_own_store(substitute(spec.config.url, resolved), spec.config.tableSchema, store_url):
        return ""
    return (
        "config.url (resolved) is the daemon's own store: rows written there could forge its audit entries "
        "and deliveries; point config.url at another database, or config.tableSchema at another schema"
    )


def secrets_fingerprint(
    spec: AnyIntegration, environ: Mapping[str, str] | None = None, scope: secrets.SecretScope = secrets.ANYWHERE
) -> str:
    """Changes when any referenced value appears, disappears or changes; reveals none of them."""
    resolved, why = resolve_secrets(spec, environ, scope)
    return resolved.fingerprint if resolved is not None else "missing:" + why


def _fingerprint(values: Mapping[str, str]) -> str:
    # Compared in memory only, within one process: Python's (salted) hash is enough and cheap.
    return format(hash(tuple(sorted(values.items()))) & 0xFFFFFFFFFFFFFFFF, "016x")


@dataclass(frozen=True)
class GitState:
    """The commit a config directory is checked out at, and which of its files differ from it."""

    commit: str
    changed: frozenset[str]  # paths relative to the directory: modified, staged, untracked or ignored
    changed_dirs: tuple[str, ...] = ()  # directories git lists whole (relative, ending in /)

    def dirty(self, file: str) -> bool:
        """Whether the file's content is not the one at `commit` (so the commit alone does not name it)."""
        return file in self.changed or any(file.startswith(d) for d in self.changed_dirs)


def git_state(directory: Path) -> GitState | None:
    """HEAD and the files of `directory` that differ from it, with one `git status` for the whole
    tree (not one call per file); None outside a git work tree or before its first commit."""
    head = _git_text(directory, "rev-parse", "--show-prefix", "HEAD")
    if head is None:
        return None
    lines = head.split("\n")
    prefix, commit = (lines[0], lines[1]) if len(lines) >= 2 else ("", lines[0])
    if len(commit) < 40:
        return None
    status = _git_text(
        directory, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=matching", "--", "."
    )
    if status is None:
        return None
    changed: set[str] = set()
    fields = iter(status.split("\0"))
    for entry in fields:
        if len(entry) < 4:
            continue
        code, path = entry[:2], entry[3:]
        if "R" in code or "C" in code:
            next(fields, None)  # the path it was renamed or copied from
        if path.startswith(prefix):  # porcelain paths are relative to the repository's top
            changed.add(path[len(prefix) :])
    dirs = tuple(sorted(p for p in changed if p.endswith("/")))
    return GitState(commit, frozenset(changed), dirs)


def _git_text(directory: Path, *args: str) -> str | None:
    # --no-optional-locks: `git status` would otherwise refresh the index under index.lock, and an
    # admin's (or git-sync's) commit at that moment fails with "index.lock exists". The daemon only reads.
    try:
        out = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip("\n") if out.returncode == 0 else None


def git_commit(directory: Path) -> str | None:
    """The HEAD commit of the git work tree holding `directory`, or None outside git."""
    commit = _git_text(directory, "rev-parse", "HEAD")
    return commit if commit is not None and len(commit) >= 40 else None
