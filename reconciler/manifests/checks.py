"""Checks that need more than one field or one document.

Unique ids and inbound secrets across files, event patterns against the catalog and the
declared event types, CEL filters and templates run against a sample event of every
subscribed type, and (with --check-env) that every secret reference resolves.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.events.catalog import (
    BUILTIN_EVENT_TYPES,
    CUSTOM_PREFIX,
    EventType,
    sample_envelope,
)
from reconciler.events.filters import CompiledFilter, FilterError, compile_filter
from reconciler.events.patterns import EVENT_NAME, is_valid_pattern, matches
from reconciler.events.templates import (
    CompiledTemplate,
    TemplateProblem,
    compile_template,
    render_context,
)
from reconciler.manifests import secrets
from reconciler.manifests.diagnostics import Diagnostic, Severity, pointer_of
from reconciler.manifests.fields import FieldProblem, check_public_host, check_url, walk_strings
from reconciler.manifests.loader import Document
from reconciler.manifests.models import (
    DATABASE_SCHEMES,
    HOST_PROTOCOLS,
    AnyIntegration,
    DatabaseConfig,
    FileConfig,
    HttpConfig,
)

if TYPE_CHECKING:
    from reconciler.manifests.validate import ValidationResult, ValidIntegration


def check_across_documents(
    result: ValidationResult,
    *,
    check_env: bool = False,
    environ: Mapping[str, str] | None = None,
    memo: dict[tuple[str, str, int, str], list[Diagnostic]] | None = None,
) -> list[Diagnostic]:
    """Checks over the raw data of every Integration document, valid or not, so that one run
    reports these problems beside the schema errors of the same file.

    `memo` keeps each document's subscription checks across runs (the reconciler's passes),
    keyed by file, content hash, document and the declared event types.
    """
    catalog = event_catalog(result)
    out: list[Diagnostic] = []
    out += _duplicate_ids(result.integration_docs)
    out += _duplicate_receive_secrets(result.integration_docs)
    out += _event_type_names(result)
    subscribed = _Subscribed(catalog)
    catalog_key = json.dumps([[e.name, e.schema, e.example] for e in catalog.values() if not e.builtin], sort_keys=True)
    memo = {} if memo is None else memo
    fresh: dict[tuple[str, str, int, str], list[Diagnostic]] = {}
    for doc in result.integration_docs:
        key = (doc.file, result.hashes.get(doc.file, ""), doc.index, catalog_key)
        found = memo.get(key)
        if found is None:
            found = list(_subscriptions(doc, catalog, subscribed))
        fresh[key] = found
        out += found
    memo.clear()
    memo.update(fresh)
    if check_env:
        for item in result.integrations:
            out += _resolve_references(item, environ)
    return out


def never_delivering(integrations: Iterable[ValidIntegration]) -> Iterator[Diagnostic]:
    """Warnings: an active integration that subscribes to no event never delivers one.

    Not for one that has other work: receiving a partner's webhooks (`receive:`), fetching a
    `syncEndpoint` or listing a file `source` every `syncFrequency` seconds."""
    for item in integrations:
        spec = item.spec
        if not spec.active or spec.webhooks or _works_without_events(spec):
            continue
        diagnostic = item.doc.diagnostic(
            ("webhooks",),
            f"integration {spec.id!r} is active but subscribes to no event: it will never deliver",
            "add webhooks: [{events: [user.registered]}] (see `reconciler new`), or set active: false",
            "no-subscriptions",
            at_key=True,
        )
        yield dataclasses.replace(diagnostic, severity=Severity.WARNING)


def _works_without_events(spec: AnyIntegration) -> bool:
    config = spec.config
    if getattr(spec, "receive", None) is not None:
        return True  # inbound: it emits events rather than taking them
    if spec.syncFrequency > 0 and isinstance(config, HttpConfig) and config.syncEndpoint:
        return True  # a scheduled sync emits integration.synced
    return spec.syncFrequency > 0 and isinstance(config, FileConfig) and config.source is not None


def event_catalog(result: ValidationResult) -> dict[str, EventType]:
    """Built-in event types plus those declared by `kind: EventType` files."""
    catalog = dict(BUILTIN_EVENT_TYPES)
    for declared in result.event_types:
        spec = declared.spec
        if spec.name not in catalog:
            catalog[spec.name] = EventType(
                spec.name, spec.description or "", spec.schema_, spec.example or {}, builtin=False
            )
    return catalog


def document_id(doc: Document) -> str:
    """The id a document declares, or the one it gets from its file name."""
    ident = doc.data.get("id")
    return ident if isinstance(ident, str) else Path(doc.file).stem


def _where(doc: Document, loc: tuple[str | int, ...]) -> str:
    line, column = doc.position(pointer_of(loc))
    return f"{doc.file}:{line}:{column}"


def _duplicates(
    docs: list[Document],
    key: Callable[[Document], str | None],
    loc: tuple[str | int, ...],
    message: Callable[[str, str], str],
    hint: str,
    code: str,
) -> Iterator[Diagnostic]:
    groups: dict[str, list[Document]] = defaultdict(list)
    for doc in docs:
        value = key(doc)
        if value is not None:
            groups[value].append(doc)
    for value, group in groups.items():
        if len(group) < 2:
            continue
        for doc in group:
            others = ", ".join(_where(o, loc) for o in group if o is not doc)
            yield doc.diagnostic(loc, message(value, others), hint, code)


def _duplicate_ids(docs: list[Document]) -> Iterator[Diagnostic]:
    return _duplicates(
        docs,
        document_id,
        ("id",),
        lambda ident, others: f"duplicate id {ident!r}: also declared at {others}",
        "ids are unique across all files; rename one of them",
        "duplicate-id",
    )


def _receive_secret(doc: Document) -> str | None:
    receive = doc.data.get("receive")
    secret = receive.get("secret") if isinstance(receive, dict) else None
    return secret.strip() if isinstance(secret, str) else None


def _duplicate_receive_secrets(docs: list[Document]) -> Iterator[Diagnostic]:
    return _duplicates(
        docs,
        _receive_secret,
        ("receive", "secret"),
        lambda _secret, others: f"inbound secret reference is also used at {others}",
        "every inbound integration needs its own secret: it selects the integration",
        "duplicate-secret",
    )


def _event_type_names(result: ValidationResult) -> Iterator[Diagnostic]:
    seen: dict[str, str] = {}
    for declared in result.event_types:
        name = declared.spec.name
        if name in BUILTIN_EVENT_TYPES:
            yield declared.doc.diagnostic(
                ("name",),
                f"event type {name} is built in",
                "declare only new event types; use a custom. prefix",
                "duplicate-event-type",
            )
        elif name in seen:
            yield declared.doc.diagnostic(
                ("name",),
                f"event type {name} is also declared at {seen[name]}",
                "declare each event type once",
                "duplicate-event-type",
            )
        else:
            seen[name] = _where(declared.doc, ("name",))


def subscribed_types(patterns: Iterable[str], catalog: Mapping[str, EventType]) -> list[EventType]:
    return [event for name, event in catalog.items() if any(matches(p, name) for p in patterns)]


class _Subscribed:
    """subscribed_types, memoised per pattern list for one catalog (one validation run)."""

    def __init__(self, catalog: Mapping[str, EventType]) -> None:
        self.catalog = catalog
        self.memo: dict[tuple[str, ...], list[EventType]] = {}

    def __call__(self, patterns: Iterable[str]) -> list[EventType]:
        key = tuple(patterns)
        if key not in self.memo:
            self.memo[key] = subscribed_types(key, self.catalog)
        return self.memo[key]


def _subscriptions(doc: Document, catalog: dict[str, EventType], subscribed: _Subscribed) -> Iterator[Diagnostic]:
    webhooks = doc.data.get("webhooks")
    all_types: dict[str, EventType] = {}
    for s_index, sub in enumerate(webhooks if isinstance(webhooks, list) else []):
        if not isinstance(sub, dict):
            continue
        base = ("webhooks", s_index)
        raw_events = sub.get("events")
        patterns = (
            [p for p in raw_events if isinstance(p, str) and is_valid_pattern(p)]
            if isinstance(raw_events, list)
            else []
        )
        for p_index, pattern in enumerate(raw_events if isinstance(raw_events, list) else []):
            if pattern in patterns and not pattern.startswith(CUSTOM_PREFIX) and not subscribed([pattern]):
                yield doc.diagnostic(
                    (*base, "events", p_index),
                    f"event pattern {pattern!r} matches no known event type",
                    _pattern_hint(pattern, catalog),
                    "unknown-event",
                )
        types = subscribed(patterns)
        all_types.update((t.name, t) for t in types)
        if isinstance(sub.get("filter"), str):
            yield from _filter_runs(doc, (*base, "filter"), sub["filter"], types)
        if _is_template(sub.get("template")):
            yield from _template_renders(doc, (*base, "template"), sub["template"], types)
    config = doc.data.get("config")
    config = config if isinstance(config, dict) else {}
    if _is_template(config.get("template")):
        yield from _template_renders(doc, ("config", "template"), config["template"], list(all_types.values()))
    receive = doc.data.get("receive")
    event = receive.get("event") if isinstance(receive, dict) else None
    if (
        isinstance(event, str)
        and EVENT_NAME.match(event)
        and event not in catalog
        and not event.startswith(CUSTOM_PREFIX)
    ):
        yield doc.diagnostic(
            ("receive", "event"),
            f"receive.event {event!r} is not a known event type",
            _pattern_hint(event, catalog),
            "unknown-event",
        )


def _is_template(value: Any) -> bool:
    return isinstance(value, str | dict | list)


def _pattern_hint(pattern: str, catalog: Mapping[str, EventType]) -> str:
    close = difflib.get_close_matches(pattern, list(catalog), n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "declare it with kind: EventType, or use the custom. prefix for ad-hoc events"


@functools.lru_cache(maxsize=4096)
def _filter(source: str) -> CompiledFilter:
    return compile_filter(source)


def _filter_runs(
    doc: Document, loc: tuple[str | int, ...], source: str, types: list[EventType]
) -> Iterator[Diagnostic]:
    try:
        compiled = _filter(source)
    except FilterError:
        return  # the model reports filters that do not compile
    for event in types:
        try:
            compiled.evaluate(sample_envelope(event))
        except FilterError as exc:
            yield doc.diagnostic(
                loc,
                f"the filter fails on a sample {event.name} event: {exc}",
                "a filter sees id, event, timestamp and data, and must return true or false",
                "filter",
            )
            return


@functools.lru_cache(maxsize=4096)
def _template(key: str) -> CompiledTemplate:
    return compile_template(json.loads(key))


def _template_renders(
    doc: Document, loc: tuple[str | int, ...], source: Any, types: list[EventType]
) -> Iterator[Diagnostic]:
    try:
        compiled = _template(json.dumps(source, sort_keys=True))
    except TemplateProblem as exc:
        where = (*loc, *exc.where) if not isinstance(source, str) else loc
        suffix = f" (line {exc.line} of the template)" if exc.line and exc.line > 1 else ""
        yield doc.diagnostic(
            where,
            exc.message + suffix,
            "templates use Jinja2: {{ data.name }}, {% if ... %}; see docs/templates.md",
            "template",
        )
        return
    config = doc.data.get("config")
    size = config.get("batchSize", 1) if isinstance(config, dict) else 1
    batched = isinstance(size, int) and size > 1
    for event in types:
        message = _render_problem(compiled, event, batched)
        if message is not None:
            yield doc.diagnostic(
                loc,
                f"the template fails on a sample {event.name} event: {message}",
                "check the fields the template reads against the event's schema in schemas/events/",
                "template",
            )
            return


_SAMPLE_INTEGRATION = {"id": "sample-integration", "name": "Sample Integration"}


@functools.lru_cache(maxsize=65536)
def _render_problem(compiled: CompiledTemplate, event: EventType, batched: bool) -> str | None:
    """Why the template fails on a sample event (and a batch of two), or None; cached because
    thousands of files share a handful of templates."""
    envelopes = [sample_envelope(event)] * (2 if batched else 1)
    try:
        json.dumps(compiled.render(render_context(envelopes, _SAMPLE_INTEGRATION)))
    except TemplateProblem as exc:
        return exc.message
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def _outbound(item: ValidIntegration, loc: tuple[str | int, ...], value: str) -> bool:
    """Whether the field at `loc` is a URL the daemon connects to (besides the HTTP endpoints):
    a token endpoint, a storage URL that names a host, a storage endpoint_url."""
    config = item.spec.config
    if isinstance(config, HttpConfig):
        return loc == ("authConfig", "tokenUrl")
    if isinstance(config, FileConfig):
        if loc == ("config", "url"):
            return value.split("://", 1)[0].lower() in HOST_PROTOCOLS
        return loc in (
            ("config", "storageOptions", "endpoint_url"),
            ("config", "storageOptions", "client_kwargs", "endpoint_url"),
        )
    return False


def _resolve_references(item: ValidIntegration, environ: Mapping[str, str] | None) -> Iterator[Diagnostic]:
    """--check-env: every reference resolves; URLs that were whole references are checked again."""
    for loc, text in walk_strings(item.doc.data):
        if not secrets.has_reference(text):
            continue
        try:
            value = secrets.resolve_string(text, environ)
        except secrets.ReferenceError as exc:
            yield item.doc.diagnostic(loc, exc.message, exc.hint, "unresolved-secret")
            continue
        if loc in (("config", "endpoint"), ("config", "syncEndpoint")) and isinstance(item.spec.config, HttpConfig):
            try:
                check_url(
                    value,
                    schemes=("https", "http"),
                    allow_insecure_http=item.spec.config.allowInsecureHttp,
                    allow_private_network=item.spec.config.allowPrivateNetwork,
                    what=f"config.{loc[-1]} (resolved)",
                    echo=False,  # the value is a secret now
                )
            except FieldProblem as problem:
                yield item.doc.diagnostic(loc, problem.message, problem.hint, "invalid")
        # other URLs the daemon connects to, under the same private-network rule
        if _outbound(item, loc, value) and not getattr(item.spec.config, "allowPrivateNetwork", True):
            where = ".".join(map(str, loc[1:] if loc[0] == "config" else loc))
            try:
                check_public_host(value, f"{where} (resolved)", echo=False)
            except FieldProblem as problem:
                yield item.doc.diagnostic(loc, problem.message, problem.hint, "invalid")
        # the resolved value may carry its password: only its scheme is checked, and never echoed
        if loc == ("config", "url") and isinstance(item.spec.config, DatabaseConfig):
            scheme = value.split("://", 1)[0].strip().lower() if "://" in value else ""
            if scheme not in DATABASE_SCHEMES:
                yield item.doc.diagnostic(
                    loc,
                    f"config.url (resolved) has a scheme not in: {', '.join(DATABASE_SCHEMES)}",
                    "set it to a URL such as postgresql://user:password@host:5432/dbname",
                    "invalid",
                )
