"""JSON the daemon takes from outside: parsed with a depth cap, and with its text checked.

`json.loads` recurses once per level of nesting, so a body a thousand levels deep raises
RecursionError (a 500) and one a few hundred deep still costs every later step (validation,
templates, serialization) its own recursion. Nothing the integration layer carries needs more
than MAX_JSON_DEPTH levels, so deeper is refused when the text is read.

A JSON string may also hold what no UTF-8 store or sink can take: a lone UTF-16 surrogate
(`"\\ud800"` parses, and fails only when the text is encoded), or a NUL character, which
PostgreSQL text and most files refuse. `problem_in` finds either, with the JSON pointer of
where it is, so the refusal names the field.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON_DEPTH = 64  # objects and arrays within each other, the outermost one counted
# the escapes that can make a lone surrogate (\ud800-\udfff) or a NUL (\u0000): other text
# (plain UTF-8, or \u00e9 from an ASCII-only encoder) has neither, and is not walked
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_SUSPECT_ESCAPE_BYTES = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


class UnfitJson(ValueError):
    """JSON that parses but cannot be taken; `pointer` says where (RFC 6901, "" for the whole)."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(f"{message} at {pointer}" if pointer else message)
        self.pointer = pointer
        self.message = message


def loads(raw: bytes | str, *, nul: bool) -> Any:
    """`json.loads`, refusing nesting deeper than MAX_JSON_DEPTH and lone surrogates (and NUL
    characters unless `nul`) with UnfitJson; text that is not JSON raises ValueError as before."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise UnfitJson("", too_deep()) from None
    # The full walk (with pointers) costs a visit per value: it runs only when a cheap look
    # at the text or a depth count says there is something to find.
    if _suspect(raw) or (_brackets(raw) > MAX_JSON_DEPTH and deeper_than_cap(value)):
        found = problem_in(value, nul=nul)
        if found is not None:
            raise UnfitJson(*found)
    return value


def _suspect(raw: bytes | str) -> bool:
    """Whether the text has an escape that can make a lone surrogate or a NUL. Bytes with a NUL
    in them are UTF-16 or UTF-32 (which json.loads reads too), where the escapes look different:
    always looked at."""
    if isinstance(raw, bytes):
        return b"\x00" in raw or _SUSPECT_ESCAPE_BYTES.search(raw) is not None
    return _SUSPECT_ESCAPE.search(raw) is not None


def _brackets(raw: bytes | str) -> int:
    """Opening brackets in the text: at most MAX_JSON_DEPTH of them cannot nest deeper."""
    if isinstance(raw, bytes):
        return raw.count(b"{") + raw.count(b"[")
    return raw.count("{") + raw.count("[")


def deeper_than_cap(value: Any) -> bool:
    """Whether objects and arrays nest deeper than MAX_JSON_DEPTH in `value`: level by level over
    the containers only, about a tenth of what the full walk costs (a roster of a hundred
    records in some 60 µs), since payloads with many records are common and deep ones are not."""
    level = [value]
    depth = 0
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            return True
        below = []
        for node in level:
            for item in node.values() if type(node) is dict else node:
                kind = type(item)
                if kind is dict or kind is list:
                    below.append(item)
        level = below
    return False


def too_deep() -> str:
    return (
        f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels of objects and arrays; "
        "flatten it, or send a reference (a URL) to the document"
    )


def problem_in(value: Any, *, nul: bool, base: str = "") -> tuple[str, str] | None:
    """The first thing in `value` that cannot be taken, as (JSON pointer under `base`, message):
    nesting deeper than MAX_JSON_DEPTH, a lone surrogate, or (when `nul`) a NUL character, in a
    key or a string. None when there is none. Iterative: a deep value cannot overflow the stack."""
    stack: list[tuple[Any, str, int]] = [(value, base, 1)]
    while stack:
        node, pointer, depth = stack.pop()
        if isinstance(node, dict):
            if depth > MAX_JSON_DEPTH:
                return pointer, too_deep()
            children = []
            for key, item in node.items():
                here = f"{pointer}/{shown(str(key)).replace('~', '~0').replace('/', '~1')}"
                if isinstance(key, str) and (message := text_problem(key, nul, "a key")):
                    return here, message
                children.append((item, here, depth + 1))
            stack.extend(reversed(children))  # the first problem in document order is reported
        elif isinstance(node, list):
            if depth > MAX_JSON_DEPTH:
                return pointer, too_deep()
            stack.extend(reversed([(item, f"{pointer}/{n}", depth + 1) for n, item in enumerate(node)]))
        elif isinstance(node, str) and (message := text_problem(node, nul, "the text")):
            return pointer, message
    return None


def text_problem(text: str, nul: bool, what: str) -> str | None:
    """Why a string cannot be stored or sent as UTF-8 text, or None."""
    if nul and "\x00" in text:
        return (
            f"{what} holds a NUL character (\\u0000), which databases and files downstream cannot "
            "store; remove it, or send binary content base64-encoded"
        )
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = text[exc.start : exc.end]
            return (
                f"{what} holds a lone UTF-16 surrogate ({shown(bad)}), which is not Unicode text; "
                "send the character as a surrogate pair or as UTF-8"
            )
    return None


def shown(text: str) -> str:
    """`text` as it can be shown in a message or a JSON answer: lone surrogates and NUL as
    `\\uXXXX` escapes (either would make the answer itself fail to encode, or hide)."""
    if text.isascii() and "\x00" not in text:
        return text
    out = []
    for char in text:
        code = ord(char)
        out.append(f"\\u{code:04x}" if code == 0 or 0xD800 <= code <= 0xDFFF else char)
    return "".join(out)
