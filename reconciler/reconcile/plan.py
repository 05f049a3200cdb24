"""`reconciler plan`: what a change would do, before it is merged or applied.

Compares the integrations declared at a base (a git revision, or a running daemon's
registry) with a head (a git revision or the work tree): `+` added, `~` changed (field by
field), `-` removed. Specs are compared in their stored form, so credentials show only as
the names of their references.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.manifests.diagnostics import Diagnostic
from reconciler.manifests.loader import EXTENSIONS
from reconciler.manifests.validate import TreeValidator, ValidationResult
from reconciler.reconcile.desired import canonical_spec, git_state, redact
from reconciler.reconcile.diff import FieldChange, added_fields, diff_specs
from reconciler.reconcile.source import Credentials, GitSource, SourceSpec


class PlanError(RuntimeError):
    """The plan cannot be made (bad revision, not a git work tree, unreachable server)."""


@dataclass
class Side:
    """One side of a plan: integration id -> (stored spec, source file)."""

    label: str
    specs: dict[str, dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # what each file sets (defaults left out, credentials redacted): an added integration's fields
    declared: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Change:
    """One integration added, changed (with its fields) or removed by a plan."""

    kind: str  # add | change | remove
    id: str
    type: str | None
    file: str | None
    fields: list[FieldChange] = field(default_factory=list)


@dataclass
class Plan:
    """What a change would do, between two states of the files or against a running daemon."""

    base: str
    head: str
    changes: list[Change]

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind)

    @property
    def summary(self) -> str:
        if not self.changes:
            return "no changes"
        return f"{self.count('add')} to add, {self.count('change')} to change, {self.count('remove')} to remove"


def make_plan(base: Side, head: Side) -> Plan:
    changes: list[Change] = []
    for integration_id in sorted(set(base.specs) | set(head.specs)):
        old, new = base.specs.get(integration_id), head.specs.get(integration_id)
        if old is None and new is not None:
            # every field of a new integration, so a reviewer sees what it would send where
            fields = added_fields(head.declared.get(integration_id, new))
            changes.append(Change("add", integration_id, new.get("type"), head.files.get(integration_id), fields))
        elif new is None and old is not None:
            changes.append(Change("remove", integration_id, old.get("type"), base.files.get(integration_id)))
        elif old is not None and new is not None:
            fields = diff_specs(old, new)
            if fields:
                changes.append(
                    Change("change", integration_id, new.get("type"), head.files.get(integration_id), fields)
                )
    return Plan(base.label, head.label, changes)


def side_from_validation(label: str, result: ValidationResult) -> Side:
    side = Side(label, {}, diagnostics=list(result.diagnostics))
    for item in result.integrations:
        side.specs[str(item.spec.id)] = canonical_spec(item.spec)
        declared = item.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        for known in ("apiVersion", "kind", "id"):  # the plan's line already says them
            declared.pop(known, None)
        side.declared[str(item.spec.id)] = redact(declared)
        side.files[str(item.spec.id)] = item.doc.file
    return side


def side_from_work_tree(config_dir: Path) -> Side:
    result = TreeValidator().validate_paths([config_dir], root=config_dir)
    git = git_state(config_dir)
    dirty = sorted(f for f in result.hashes if git is not None and git.dirty(f))
    return side_from_validation("work tree" + _uncommitted(dirty), result)


def side_from_git(config_dir: Path, revision: str) -> Side:
    sources = git_sources(config_dir, revision)
    result = TreeValidator().validate_sources(sources, total=len(sources), where=f"{revision}:{config_dir}")
    return side_from_validation(revision, result)


def side_from_source(spec: SourceSpec, credentials: Credentials) -> Side:
    """The head of a git source's followed ref, fetched into a throwaway mirror."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="reconciler-plan-") as scratch:
        source = GitSource(spec, Path(scratch), credentials=lambda: credentials)
        source.sync_blocking()
        checkout = source.hold()
        if checkout.commit is None:
            raise PlanError(source.last_error or f"{spec.display} could not be fetched")
        result = TreeValidator().validate_paths([checkout.directory], root=checkout.directory)
        return side_from_validation(f"{spec.ref} at {checkout.commit[:12]}", result)


def side_from_server(server: str, admin_secret: str) -> Side:
    import httpx

    url = server.rstrip("/") + "/api/integrations"
    try:
        response = httpx.get(url, headers={"x-admin-secret": admin_secret}, timeout=10)
    except httpx.HTTPError as exc:
        raise PlanError(f"cannot reach {url}: {exc}") from None
    if response.status_code == 401:
        raise PlanError(f"{url} refused the admin secret: set ADMIN_SECRET (or --admin-secret-file)")
    if response.status_code != 200:
        raise PlanError(f"{url} answered {response.status_code}")
    items = response.json().get("items", [])
    dirty = sorted({str(i["sourceFile"]) for i in items if (i.get("lastAttemptedRevision") or {}).get("dirty")})
    side = Side(server + _uncommitted(dirty), {})
    for item in items:
        # what the daemon was given (applied or waiting for secrets), else what it runs: a plan
        # against a daemon says what a change to the files would declare anew
        spec = item.get("declaredSpec") or item.get("spec")
        if spec is not None:
            side.specs[item["id"]] = spec
            side.files[item["id"]] = item.get("sourceFile")
    return side


def _uncommitted(files: list[str]) -> str:
    """What a side's label says of files whose content is in no commit."""
    return f" with uncommitted changes to {len(files)} files: {', '.join(files)}" if files else ""


def git_sources(config_dir: Path, revision: str) -> list[tuple[str, bytes]]:
    """The integration files under `config_dir` at `revision`, read with one `git archive`."""
    top = _git(config_dir, "rev-parse", "--show-toplevel").decode().strip()
    relative = config_dir.resolve().relative_to(Path(top).resolve()).as_posix()
    commit = _git(config_dir, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}", what=revision)
    archive = _git(Path(top), "archive", "--format=tar", commit.decode().strip(), "--", relative, allow_empty=True)
    sources: list[tuple[str, bytes]] = []
    if not archive:
        return sources
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            name = Path(member.name)
            if not member.isfile() or not name.name.endswith(EXTENSIONS) or name.name.startswith("."):
                continue
            extracted = tar.extractfile(member)
            if extracted is not None:
                sources.append(
                    (name.relative_to(relative).as_posix() if relative != "." else name.as_posix(), extracted.read())
                )
    return sorted(sources)


def _git(cwd: Path, *args: str, what: str = "", allow_empty: bool = False) -> bytes:
    try:
        out = subprocess.run(  # a plan only reads: it never takes index.lock from a commit in progress
            ["git", "--no-optional-locks", "-C", str(cwd), *args], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PlanError(f"git failed: {exc}") from None
    if out.returncode != 0:
        if what:
            raise PlanError(f"{what!r} is not a revision of this repository")
        stderr = out.stderr.decode(errors="replace").strip().splitlines()
        if allow_empty and any("did not match any files" in line for line in stderr):
            return b""
        raise PlanError(f"git {args[0]} failed: {stderr[-1] if stderr else out.returncode}")
    return out.stdout


# --- rendering ---------------------------------------------------------------------------------

_SIGN = {"add": "+", "change": "~", "remove": "-"}
_FIELD_SIGN = {"added": "+", "removed": "-", "changed": "~"}


def _value(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _field_line(change: FieldChange) -> str:
    sign = _FIELD_SIGN[change.kind]
    if change.kind == "added":
        return f"{sign} {change.pointer}: {_value(change.new)}"
    if change.kind == "removed":
        return f"{sign} {change.pointer}: {_value(change.old)}"
    return f"{sign} {change.pointer}: {_value(change.old)} -> {_value(change.new)}"


def render_text(plan: Plan) -> str:
    lines = [f"Plan ({plan.base} -> {plan.head}): {plan.summary}."]
    for change in plan.changes:
        where = ", ".join(x for x in (change.type, change.file) if x)
        lines.append(f"{_SIGN[change.kind]} {change.id}" + (f" ({where})" if where else ""))
        lines += [f"    {_field_line(f)}" for f in change.fields]
    return "\n".join(lines)


def render_markdown(plan: Plan) -> str:
    lines = [f"### reconciler plan: {plan.summary}", "", f"`{plan.base}` → `{plan.head}`", ""]
    if plan.changes:
        lines += ["| | integration | type | file |", "| --- | --- | --- | --- |"]
        for change in plan.changes:
            lines.append(f"| {_SIGN[change.kind]} | `{change.id}` | {change.type or ''} | {change.file or ''} |")
        for change in plan.changes:
            if change.fields:
                lines += [
                    "",
                    f"<details><summary><code>{change.id}</code>: {len(change.fields)} field"
                    f"{'s' * (len(change.fields) != 1)} {'set' if change.kind == 'add' else 'changed'}</summary>",
                    "",
                    "```diff",
                ]
                lines += [_field_line(f) for f in change.fields]
                lines += ["```", "</details>"]
    return "\n".join(lines)


def render_json(plan: Plan) -> str:
    return json.dumps(
        {
            "base": plan.base,
            "head": plan.head,
            "summary": {k: plan.count(k) for k in ("add", "change", "remove")},
            "changes": [
                {
                    "kind": c.kind,
                    "id": c.id,
                    "type": c.type,
                    "file": c.file,
                    "fields": [{"pointer": f.pointer, "kind": f.kind, "old": f.old, "new": f.new} for f in c.fields],
                }
                for c in plan.changes
            ],
        },
        indent=2,
    )


RENDERERS: Mapping[str, Any] = {"text": render_text, "markdown": render_markdown, "json": render_json}
