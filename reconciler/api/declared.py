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
from pathlib import Path
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import Response

from reconciler.api.common import Runtime, admin_only, json_body, not_found, problem, runtime_of
from reconciler.manifests.diagnostics import Diagnostic
from reconciler.manifests.loader import discover, read_file
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
        document = await _document(body, integration_id, action, runtime, record)
        if isinstance(document, Response):
            return document
        file_name = source or f"{document.get('id') or 'integration'}.yaml"
        text, secrets_to_set, diagnostics = await asyncio.to_thread(
            _checked_file, document, file_name, config_dir, runtime.reconciler.environ
        )
        extra = {
            "file": f"{config_dir.name}/{file_name}",
            "yaml": text,
            "valid": not diagnostics,
            "errors": [_error(d) for d in diagnostics],
            "secretsToSet": secrets_to_set,
        }
        verb = "replace" if source else "add"
        detail = (
            f"integrations are declared in git: {verb} {config_dir.name}/{file_name} with the yaml below in a pull "
            "request" + ("" if not diagnostics else "; fix the errors listed first")
        )
    response = problem(405, "Method not allowed", detail, "declared-in-git", **extra)
    # what this path does allow: reads (nothing at all on .../webhooks)
    response.headers["Allow"] = "" if action == "add-webhook" else "GET"
    return response


async def _document(
    body: dict[str, Any],
    integration_id: str | None,
    action: str,
    runtime: Runtime,
    record: IntegrationRecord | None,
) -> dict[str, Any] | Response:
    """The YAML document this request asks for: the body in the file format, with its id."""
    if action == "add-webhook":
        assert integration_id is not None
        current = await asyncio.to_thread(_declared, runtime.reconciler.config_dir, record)  # a file read
        if current is None:
            return problem(409, "Conflict", f"the file that declares {integration_id!r} cannot be read", "conflict")
        subscription = {k: v for k, v in body.items() if k != "url"}  # the guide's url is the integration's
        current.setdefault("webhooks", [])
        if not isinstance(current["webhooks"], list):
            current["webhooks"] = []
        current["webhooks"].append(subscription)
        return current
    document = {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "id")}
    ident = body.get("id") or integration_id or _slug(str(body.get("name") or ""))
    return {"apiVersion": API_VERSION, "kind": "Integration", "id": ident or None, **document}


def _declared(config_dir: Path, record: IntegrationRecord | None) -> dict[str, Any] | None:
    """The document that declares an integration now, as written in its file."""
    if record is None or not record.source_file:
        return None
    path = config_dir / record.source_file
    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    index = record.source_document or 0
    if index >= len(documents) or not isinstance(documents[index], dict):
        return None
    document: dict[str, Any] = documents[index]
    return document


def _checked_file(
    document: dict[str, Any], file_name: str, config_dir: Path, environ: Any
) -> tuple[str, list[dict[str, str]], list[Diagnostic]]:
    """The YAML text of the document, its literal credentials replaced by references, and the
    problems it has beside the other declared files."""
    secrets_to_set: list[dict[str, str]] = []
    diagnostics: list[Diagnostic] = []
    header = modeline("integration.schema.json", config_dir)  # resolves from the folder the file goes in
    for _ in range(MAX_CREDENTIAL_ROUNDS):
        text = header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
        diagnostics = _validate(text, file_name, config_dir, environ)
        replaced = False
        for diagnostic in diagnostics:
            if _is_literal_credential(diagnostic) and _replace(document, diagnostic.pointer, secrets_to_set):
                replaced = True
        if not replaced:
            break
    return text, secrets_to_set, diagnostics


def _validate(text: str, file_name: str, config_dir: Path, environ: Any) -> list[Diagnostic]:
    files, _ = discover([config_dir]) if config_dir.is_dir() else ([], [])
    sources: list[tuple[str, Any]] = []
    for path in files:
        name = Path(path).relative_to(config_dir).as_posix()
        if name != file_name:
            sources.append((name, read_file(path, name)))
    sources.append((file_name, text.encode()))
    result = TreeValidator().validate_sources(sources, total=len(sources), where=str(config_dir), environ=environ)
    return [d for d in result.diagnostics if d.file == file_name]


_CREDENTIAL_MESSAGES = (
    "is a literal value; credentials",
    "itself the credential",
    "literal credential",
    "literal password",
)


def _is_literal_credential(diagnostic: Diagnostic) -> bool:
    return bool(diagnostic.pointer) and any(text in diagnostic.message for text in _CREDENTIAL_MESSAGES)


def _replace(document: dict[str, Any], pointer: str, secrets_to_set: list[dict[str, str]]) -> bool:
    """Put an environment reference where a literal credential was; note the variable to set."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.lstrip("/").split("/")]
    holder: Any = document
    for part in parts[:-1]:
        holder = holder[int(part)] if isinstance(holder, list) else holder.get(part)
        if holder is None:
            return False
    last: Any = int(parts[-1]) if isinstance(holder, list) else parts[-1]
    try:
        value = holder[last]
    except (KeyError, IndexError, TypeError):
        return False
    if not isinstance(value, str):
        return False
    name = _env_name(str(document.get("id") or "integration"), parts)
    holder[last] = "${env:" + name + "}"
    secrets_to_set.append({"variable": name, "field": pointer})
    return True


def _env_name(ident: str, parts: list[str]) -> str:
    words = [ident, *[p for p in parts if not p.isdigit() and p not in ("config", "authConfig")]]
    return re.sub(r"[^A-Z0-9]+", "_", "_".join(_snake(w) for w in words).upper()).strip("_")


def _snake(word: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", word)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63]


def _error(diagnostic: Diagnostic) -> dict[str, Any]:
    return {
        "line": diagnostic.line,
        "column": diagnostic.column,
        "pointer": diagnostic.pointer,
        "message": diagnostic.message,
        "hint": diagnostic.hint,
    }
