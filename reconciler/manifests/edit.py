"""Edit a declared file the way a person would: change one document's fields, keep the rest.

The API's write routes answer with the file to commit. A reviewer reads the diff of that
file, so it must differ from the file in git only where the change is: comments, key order,
flow or block style, quoting and the other documents of a multi-document file stay as they
are. PyYAML drops comments and reorders nothing it does not drop; ruamel.yaml's round-trip
mode keeps them (docs/decisions.md). Only the edited document is parsed and written again;
the text of the others is copied byte for byte.

Changes are merge patches (RFC 7396) in the file format: a key absent from the patch is
kept, `None` removes it, a mapping merges into the mapping it replaces, anything else
replaces the value. Subscriptions have their own two operations (`EventList`,
`AddedSubscription`), because the guide names events where the file groups them.
"""

from __future__ import annotations

import difflib
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

# The order of a new document's keys, and where a key added to an existing one goes: after the
# nearest key before it in this order (the bundled files' order).
TOP_LEVEL_ORDER = (
    "apiVersion",
    "kind",
    "id",
    "name",
    "description",
    "type",
    "authType",
    "authConfig",
    "active",
    "labels",
    "config",
    "receive",
    "syncFrequency",
    "webhooks",
    "retry",
)
# The bundled files indent a block sequence under its key by two: `webhooks:\n  - events: [...]`.
NEW_FILE_SEQUENCE_INDENT = 4
NEW_FILE_SEQUENCE_OFFSET = 2
_MARKER = re.compile(r"^---[ \t]*(#.*)?\r?\n?$")  # a document start line with nothing else on it
_NOTHING = re.compile(r"^\s*(#.*)?$|^\.\.\.\s*$")  # blank, comment, or a document end marker


class EditError(ValueError):
    """The file cannot be edited in place: it changed, or is not what the registry says."""


@dataclass(frozen=True)
class EventList:
    """The guide's `webhooks: [event, ...]`: which events the integration receives, not how
    the file groups them. Merged so that existing entries keep their filters and templates."""

    patterns: tuple[str, ...]


@dataclass(frozen=True)
class AddedSubscription:
    """`POST .../webhooks`: one subscription added to those the file already has."""

    subscription: Mapping[str, Any]


def yaml_round_trip(text: str = "") -> YAML:
    """A round-trip YAML reader and writer laid out like `text` (or like the bundled files)."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long filter or URL that was on one line
    sequence, offset = NEW_FILE_SEQUENCE_INDENT, NEW_FILE_SEQUENCE_OFFSET
    if text.strip():
        try:
            _, guessed_sequence, guessed_offset = load_yaml_guess_indent(text)
        except YAMLError:
            guessed_sequence = guessed_offset = None
        if guessed_sequence is not None and guessed_offset is not None:
            sequence, offset = guessed_sequence, guessed_offset
    yaml.indent(mapping=2, sequence=sequence, offset=offset)
    return yaml


def edit_document(text: str, index: int, change: Callable[[CommentedMap], None]) -> str:
    """`text` with its `index`th document (0-based, blank documents not counted, as the loader
    counts them) changed by `change`; everything else in the file is left as it was."""
    lines = text.splitlines(keepends=True)
    spans = _document_spans(lines)
    if index >= len(spans):
        raise EditError(f"the file holds {len(spans)} document(s), not {index + 1}")
    start, end = spans[index]
    segment = "".join(lines[start:end])
    yaml = yaml_round_trip(segment)
    try:
        document = yaml.load(segment)
    except YAMLError as exc:
        raise EditError(f"the document does not parse: {exc}") from None
    if not isinstance(document, CommentedMap):
        raise EditError("the document is not a mapping")
    change(document)
    out = io.StringIO()
    yaml.dump(document, out)
    edited = out.getvalue()
    if end < len(lines) and not edited.endswith("\n"):
        edited += "\n"
    return "".join(lines[:start]) + edited + "".join(lines[end:])


def new_document(header: str, change: Callable[[CommentedMap], None]) -> str:
    """A new file: `header` (comment lines), then the document `change` fills in."""
    document = CommentedMap()
    change(document)
    out = io.StringIO()
    yaml_round_trip().dump(document, out)
    return header + out.getvalue()


def _document_spans(lines: Sequence[str]) -> list[tuple[int, int]]:
    """The line ranges of the documents that hold something, split at `---` lines."""
    cuts = [i for i, line in enumerate(lines) if _MARKER.match(line)]
    bounds = [(0 if n == 0 else cuts[n - 1] + 1, cut) for n, cut in enumerate(cuts)]
    bounds.append((cuts[-1] + 1 if cuts else 0, len(lines)))
    return [(a, b) for a, b in bounds if any(not _NOTHING.match(line) for line in lines[a:b])]


def unified_diff(before: str, after: str, path: str, *, new: bool = False) -> str:
    """The change as `git apply` and `patch -p1` take it (empty when nothing changes)."""
    diff = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        "/dev/null" if new else f"a/{path}",
        f"b/{path}",
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in diff)


def merge(target: CommentedMap, patch: Mapping[str, Any], order: Sequence[str] = ()) -> None:
    """Apply a merge patch to a document, reusing every node the patch does not change."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
            continue
        current = target.get(key)
        if isinstance(value, EventList):
            _set(target, key, _merge_event_list(current, value.patterns), order)
        elif isinstance(value, AddedSubscription):
            _set(target, key, _add_subscription(current, value.subscription), order)
        elif isinstance(value, Mapping) and isinstance(current, CommentedMap):
            merge(current, value)
        elif isinstance(value, Mapping):
            _set(target, key, node(_without_nulls(value)), order)
        elif isinstance(value, list) and isinstance(current, CommentedSeq):
            _replace_items(current, value)
        elif current != value or isinstance(current, bool) != isinstance(value, bool):  # 1 == True
            _set(target, key, node(value), order)


def _without_nulls(value: Mapping[str, Any]) -> dict[str, Any]:
    """A new mapping from a patch: its nulls remove nothing, so they are not written (RFC 7396)."""
    return {k: _without_nulls(v) if isinstance(v, Mapping) else v for k, v in value.items() if v is not None}


def _set(target: CommentedMap, key: str, value: Any, order: Sequence[str]) -> None:
    """Set `key`; a new key goes after the nearest key that comes before it in `order`."""
    if key in target or key not in order:
        target[key] = value
        return
    before = order[: order.index(key)]
    keys = list(target)
    positions = [keys.index(k) for k in before if k in target]
    target.insert(max(positions) + 1 if positions else 0, key, value)


def node(value: Any) -> Any:
    """A plain value as the bundled files write it: mappings in block style, lists of
    scalars in flow style (`events: [a, b]`)."""
    if isinstance(value, CommentedMap | CommentedSeq):
        return value
    if isinstance(value, Mapping):
        mapping = CommentedMap()
        for k, v in value.items():
            mapping[k] = node(v)
        return mapping
    if isinstance(value, list | tuple):
        seq = CommentedSeq(node(v) for v in value)
        if value and all(not isinstance(v, Mapping | list | tuple) for v in value):
            seq.fa.set_flow_style()
        return seq
    return value


def _replace_items(current: CommentedSeq, values: list[Any]) -> None:
    """Make `current` hold `values`, keeping the nodes (comments, style) of equal items."""
    if list(current) == values:
        return
    remaining = list(current)
    items = []
    for value in values:
        same = next((i for i, old in enumerate(remaining) if old == value), None)
        items.append(remaining.pop(same) if same is not None else node(value))
    del current[:]
    current.extend(items)


def _plain_entries(webhooks: CommentedSeq) -> list[CommentedMap]:
    """Subscriptions that are only an event list (no filter, no template)."""
    return [e for e in webhooks if isinstance(e, CommentedMap) and set(e) == {"events"} and _events(e) is not None]


def _events(entry: Any) -> CommentedSeq | None:
    events = entry.get("events") if isinstance(entry, CommentedMap) else None
    return events if isinstance(events, CommentedSeq) else None


def _merge_event_list(current: Any, patterns: tuple[str, ...]) -> Any:
    """The file's subscriptions narrowed to `patterns`, and widened by the ones it lacks.

    An entry keeps its filter and template with the patterns of it that are still asked for
    (an entry left with none goes); a pattern no entry has joins the first entry without a
    filter or template, or a new entry."""
    if not isinstance(current, CommentedSeq):
        return node([{"events": list(patterns)}]) if patterns else CommentedSeq()
    wanted = list(dict.fromkeys(patterns))
    covered: set[str] = set()
    for entry in list(current):
        events = _events(entry)
        if events is None:
            continue
        kept = [p for p in events if p in wanted]
        if not kept:
            current.remove(entry)
            continue
        _replace_items(events, kept)
        covered.update(kept)
    missing = [p for p in wanted if p not in covered]
    if missing:
        _add_subscription(current, {"events": missing})
    return current


def _add_subscription(current: Any, subscription: Mapping[str, Any]) -> Any:
    """`subscription` added: a plain event list joins the first plain entry (patterns it has
    already are not repeated); one with a filter or template is a new entry, unless the file
    has the same one."""
    if not isinstance(current, CommentedSeq):
        return node([dict(subscription)])
    events = subscription.get("events")
    plain = _plain_entries(current)
    names = isinstance(events, list) and all(isinstance(p, str) for p in events)
    if set(subscription) == {"events"} and names and plain:
        assert isinstance(events, list)
        target = _events(plain[0])
        assert target is not None
        known = {p for entry in plain for p in (_events(entry) or [])}
        target.extend(p for p in dict.fromkeys(events) if p not in known)
    elif not any(entry == dict(subscription) for entry in current):
        current.append(node(dict(subscription)))
    return current
