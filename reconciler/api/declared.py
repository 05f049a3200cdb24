"""The integration guide's write routes, in a GitOps daemon: 405 and the file to commit.

Declared state lives in git. `POST /api/integrations`, `PUT` and `DELETE /api/integrations/{id}`
and `POST /api/integrations/{id}/webhooks` change nothing; they answer 405 with where to make
the change. When a body is sent, it is turned into the YAML file that makes that change in a
pull request, validated beside the files already declared, and returned with every problem.
Literal credentials in the body are replaced by secret references (never echoed back), and the
answer names the variables to set.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap
from starlette.requests import Request
from starlette.responses import Response

from reconciler.api.common import Runtime, admin_only, json_body, not_found, problem, runtime_of
from reconciler.manifests import secrets
from reconciler.manifests.checks import document_id
from reconciler.manifests.diagnostics import Diagnostic
from reconciler.manifests.edit import TOP_LEVEL_ORDER, EditError, edit_document, merge, new_document, unified_diff
from reconciler.manifests.guide import translate_integration, translate_subscription
from reconciler.manifests.loader import Document, LoadedFile, discover, load_bytes, read_file
from reconciler.manifests.modeline import modeline
from reconciler.manifests.validate import TreeValidator
from reconciler.store import IntegrationRecord

API_VERSION = "cms.integrations/v1"
MAX_CREDENTIAL_ROUNDS = 8  # each round replaces the credentials validation found


@admin_only
async def create(request: Request) -> Response:
    """`POST /api/integrations`: 405, and with a body the new file to commit."""
    return await _answer(runtime_of(request), request, None, "create")


@admin_only
async def update_or_delete(request: Request) -> Response:
    """`PUT` and `DELETE /api/integrations/{id}`: 405, and the file to change or delete."""
    action = "delete" if request.method == "DELETE" else "update"
    return await _answer(runtime_of(request), request, request.path_params["id"], action)


@admin_only
async def add_webhook(request: Request) -> Response:
    """`POST /api/integrations/{id}/webhooks`: 405, and with a body the file with the subscription added."""
    return await _answer(runtime_of(request), request, request.path_params["id"], "add-webhook")


async def _answer(runtime: Runtime, request: Request, integration_id: str | None, action: str) -> Response:
    """The 405 of a write route (the caller is an admin): where to make the change, and the file."""
    record = runtime.reconciler.snapshot.registry.get(integration_id) if integration_id else None
    if integration_id is not None and record is None:
        return not_found(integration_id)
    body = await json_body(request)
    if isinstance(body, Response):
        return body
    config_dir = runtime.reconciler.config_dir
    source = record.source_file if record and record.source_file else None
    extra: dict[str, Any] = {}
    if action == "delete":
        target = source or f"{integration_id}.yaml"
        detail = (
            f"integrations are declared in git: delete {config_dir.name}/{target} (or its document) in a pull "
            f"request; once merged, the daemon removes {integration_id!r} and finishes its queued deliveries"
        )
        extra["file"] = f"{config_dir.name}/{target}"
    elif not body:
        where = f"{config_dir.name}/{source}" if source else f"a new file in {config_dir.name}/"
        detail = (
            f"integrations are declared in git: change {where} in a pull request; send the integration as a JSON "
            "body to get the YAML file to commit, checked against the files already declared"
        )
    else:
        checker = _checker(request)
        proposal = await asyncio.to_thread(_propose, body, record, integration_id, action, runtime, checker)
        if isinstance(proposal, str):
            return problem(409, "Conflict", proposal, "conflict")
        extra = proposal.answer(config_dir.name)
        verb = "change" if proposal.before is not None else "add"
        detail = (
            f"integrations are declared in git: {verb} {config_dir.name}/{proposal.file_name} as the yaml below (the "
            "diff beside it) in a pull request" + ("" if not proposal.errors else "; fix the errors listed first")
        )
    response = problem(405, "Method not allowed", detail, "declared-in-git", **extra)
    # what this path does allow: reads (nothing at all on .../webhooks)
    response.headers["Allow"] = "" if action == "add-webhook" else "GET"
    return response


@dataclass
class _Proposal:
    """The file a write asks for: the file as it is (None: a new file) and as it would be."""

    file_name: str
    before: str | None
    text: str = ""
    index: int = 0  # the integration's document in the file
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    secrets_to_set: list[dict[str, str]] = field(default_factory=list)

    def answer(self, directory: str) -> dict[str, Any]:
        path = f"{directory}/{self.file_name}"
        return {
            "file": path,
            "yaml": self.text,
            "diff": unified_diff(self.before or "", self.text, path, new=self.before is None),
            "valid": not self.errors,
            "errors": [_located(d) for d in self.errors],
            "warnings": self.warnings,
            "secretsToSet": self.secrets_to_set,
        }


class _Checker:
    """One validator for the answers of the write routes: a declared file that has not changed
    since the previous check (or credential round) is not parsed again. Validators keep state,
    so one check runs at a time."""

    def __init__(self) -> None:
        self.validator = TreeValidator()
        self.lock = threading.Lock()


def _checker(request: Request) -> _Checker:
    checker = getattr(request.app.state, "declared_checker", None)
    if checker is None:  # set on the event loop's thread: no two requests race here
        checker = request.app.state.declared_checker = _Checker()
    assert isinstance(checker, _Checker)
    return checker


def _propose(
    body: dict[str, Any],
    record: IntegrationRecord | None,
    integration_id: str | None,
    action: str,
    runtime: Runtime,
    checker: _Checker,
) -> _Proposal | str:
    """The file to commit for this write (runs off the event loop: it reads and validates
    files), or why the declaring file cannot be edited."""
    config_dir = runtime.reconciler.config_dir
    current = _declared(config_dir, record)
    if isinstance(current, str):
        return current
    document = current[1].data if current else {}
    if action == "add-webhook":
        translation = translate_subscription(body, document)
    else:
        fields = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
        translation = translate_integration(fields, document)
    if current is None:
        ident = body.get("id") or integration_id or _slug(str(body.get("name") or "")) or None
        proposal = _Proposal(_free_name(config_dir, _slug(str(ident or "")) or "integration"), None)
        base = {"apiVersion": API_VERSION, "kind": "Integration", "id": ident}
        changes = {**base, **{k: v for k, v in translation.changes.items() if k != "id"}}
    else:
        assert record is not None and record.source_file
        proposal = _Proposal(record.source_file, current[0], index=current[1].index)
        changes = translation.changes
    proposal.warnings = [u.as_dict() for u in translation.unmapped]
    try:
        with checker.lock:
            _write_checked(proposal, changes, document, config_dir, runtime.reconciler.environ, checker.validator)
    except EditError as exc:
        return f"{config_dir.name}/{proposal.file_name} cannot be edited in place: {exc}"
    return proposal


def _free_name(config_dir: Path, stem: str) -> str:
    """`<id>.yaml`, or `<id>-2.yaml`, ... when a file of that name declares something else."""
    name, number = f"{stem}.yaml", 2
    while (config_dir / name).exists():
        name, number = f"{stem}-{number}.yaml", number + 1
    return name


def _declared(config_dir: Path, record: IntegrationRecord | None) -> tuple[str, Document] | str | None:
    """The file that declares an integration now, and its document; None when there is no
    file (a new integration); a reason when the file no longer holds it."""
    if record is None or not record.source_file:
        return None
    where = f"{config_dir.name}/{record.source_file}"
    raw = read_file(config_dir / record.source_file, record.source_file)
    if isinstance(raw, LoadedFile):
        return f"the file that declares {record.id!r}, {where}, cannot be read"
    loaded = load_bytes(raw, record.source_file)
    index = record.source_document or 0
    if index >= len(loaded.documents) or document_id(loaded.documents[index]) != record.id:
        # changed since the last pass: the next one finds where the integration is now
        return f"{where} no longer holds {record.id!r} where the last reconcile pass found it; try again shortly"
    return raw.decode("utf-8", errors="replace").removeprefix("\ufeff"), loaded.documents[index]


def _write_checked(
    proposal: _Proposal,
    changes: dict[str, Any],
    document: dict[str, Any],
    config_dir: Path,
    environ: Any,
    validator: TreeValidator,
) -> None:
    """Write the change into the file, and check it beside the other declared files; a literal
    credential becomes a reference (the file's own where it has one), and checking runs again."""
    replaced: dict[str, str] = {}

    def change(target: CommentedMap) -> None:
        merge(target, changes, TOP_LEVEL_ORDER)
        for pointer, reference in replaced.items():
            _put(target, pointer, reference)

    siblings = _other_files(config_dir, proposal.file_name)  # read once; only the proposal changes per round
    # the modeline resolves from the folder the file goes in
    header = modeline("integration.schema.json", config_dir) if proposal.before is None else ""
    for _ in range(MAX_CREDENTIAL_ROUNDS):
        if proposal.before is None:
            proposal.text = new_document(header, change)
        else:
            proposal.text = edit_document(proposal.before, proposal.index, change)
        errors, warnings = _validate(validator, proposal, siblings, config_dir, environ)
        proposal.errors = errors
        literal = [d for d in errors if _is_literal_credential(d) and d.pointer not in replaced]
        if not literal:
            break
        for diagnostic in literal:
            replaced[diagnostic.pointer] = _reference_for(diagnostic.pointer, changes, document, proposal)
    proposal.warnings += [_located(d) for d in warnings]


def _reference_for(pointer: str, changes: dict[str, Any], document: dict[str, Any], proposal: _Proposal) -> str:
    """The reference that replaces a literal credential: the one the file has there already
    (a changed secret is set outside git, under the same name), or a new variable."""
    existing = _at(document, pointer)
    sent = _at(changes, pointer)
    if isinstance(existing, str) and secrets.is_single_reference(existing):
        if not _is_redacted(sent):
            reference = secrets.parse_references(existing)[0]
            where = "variable" if reference.scheme == "env" else "file"
            proposal.secrets_to_set.append({where: reference.target, "field": pointer})
        return existing
    ident = str(changes.get("id") or document.get("id") or Path(proposal.file_name).stem)
    name = _env_name(ident, _parts(pointer))
    proposal.secrets_to_set.append({"variable": name, "field": pointer})
    return "${env:" + name + "}"


def _is_redacted(value: Any) -> bool:
    """What the API shows in place of a credential (`***`): sent back, it means "unchanged"."""
    return isinstance(value, str) and bool(_REDACTED.match(value))


_REDACTED = re.compile(r"^\s*(\*{3,}|\[?<?redacted>?\]?)\s*$", re.IGNORECASE)


def _parts(pointer: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.lstrip("/").split("/")]


def _at(data: Any, pointer: str) -> Any:
    for part in _parts(pointer):
        if isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, dict):
            data = data.get(part)
        else:
            return None
    return data


def _put(document: CommentedMap, pointer: str, value: str) -> None:
    parts = _parts(pointer)
    holder: Any = document
    for part in parts[:-1]:
        holder = holder[int(part)] if isinstance(holder, list) else holder.get(part)
        if holder is None:
            return
    if isinstance(holder, list):
        holder[int(parts[-1])] = value
    elif isinstance(holder, dict):
        holder[parts[-1]] = value


def _other_files(config_dir: Path, file_name: str) -> list[tuple[str, Any]]:
    """Every declared file but `file_name`, read: what a proposal is validated beside."""
    files, _ = discover([config_dir]) if config_dir.is_dir() else ([], [])
    sources: list[tuple[str, Any]] = []
    for path in files:
        name = Path(path).relative_to(config_dir).as_posix()
        if name != file_name:
            sources.append((name, read_file(path, name)))
    return sources


def _validate(
    validator: TreeValidator,
    proposal: _Proposal,
    siblings: list[tuple[str, Any]],
    config_dir: Path,
    environ: Any,
) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """The errors and warnings of the integration's document, checked beside the other files."""
    sources = [*siblings, (proposal.file_name, proposal.text.encode())]
    result = validator.validate_sources(sources, total=len(sources), where=str(config_dir), environ=environ)

    def ours(d: Diagnostic) -> bool:
        return d.file == proposal.file_name and d.document in (None, proposal.index)

    return [d for d in result.diagnostics if ours(d)], [d for d in result.warnings if ours(d)]


_CREDENTIAL_MESSAGES = (
    "is a literal value; credentials",
    "itself the credential",
    "literal credential",
    "literal password",
)


def _is_literal_credential(diagnostic: Diagnostic) -> bool:
    return bool(diagnostic.pointer) and any(text in diagnostic.message for text in _CREDENTIAL_MESSAGES)


def _env_name(ident: str, parts: list[str]) -> str:
    words = [ident, *[p for p in parts if not p.isdigit() and p not in ("config", "authConfig")]]
    return re.sub(r"[^A-Z0-9]+", "_", "_".join(_snake(w) for w in words).upper()).strip("_")


def _snake(word: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", word)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63]


def _located(diagnostic: Diagnostic) -> dict[str, Any]:
    return {
        "code": diagnostic.code,
        "line": diagnostic.line,
        "column": diagnostic.column,
        "pointer": diagnostic.pointer,
        "message": diagnostic.message,
        "hint": diagnostic.hint,
    }
