"""CEL filters on subscriptions, such as `data.priority == "high"`.

A filter sees the envelope's fields as variables: `id`, `event`, `timestamp`, `data`.
It is compiled once per applied generation. A field missing from an event's data makes the
filter not match (rather than fail the delivery), so optional fields need no `has()` guard.
"""

from __future__ import annotations

import functools
import re
import sys
import types
from dataclasses import dataclass
from typing import Any

# The `cel` package imports its interactive CLI (prompt_toolkit, rich) on import, which
# costs about 0.4 s at every start of `reconciler`. Registering an empty `cel.cli` first
# skips it; the compiler itself is the Rust extension `cel.cel`.
sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))
import cel  # noqa: E402

FILTER_VARIABLES = ("id", "event", "timestamp", "data")
# A filter is a condition, not a program; the CEL compiler crashes on very long expressions.
MAX_FILTER_CHARS = 2000

# The cost budget. The Rust evaluator holds the GIL and cannot be interrupted (not even by
# SIGTERM), so what bounds an evaluation must be known before it starts. Only the
# comprehension macros iterate; their cost is (items iterated) ** (nesting depth), so the
# nesting depth and the count of comprehensions are limited when the filter is compiled, and
# the items they can iterate (the event data's list items and map entries) when it runs.
COMPREHENSION_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
MAX_COMPREHENSION_DEPTH = 2  # `tags.exists(a, tags.exists(b, ...))`, never a third level
MAX_COMPREHENSIONS = 8  # in one filter, nested or not
MAX_FILTER_ITERATIONS = 100_000  # items ** depth: 100,000 items at depth 1, 316 at depth 2


class FilterError(ValueError):
    """A filter that does not compile or cannot be evaluated."""


class FilterBudgetError(FilterError):
    """A filter over its cost budget: statically (nesting, count) or for one event's data."""


@dataclass(frozen=True)
class CompiledFilter:
    """A subscription's CEL filter, compiled once per applied version."""

    source: str
    program: Any
    depth: int = 0  # how deep its comprehensions nest (0: it does not iterate)

    @property
    def max_items(self) -> int | None:
        """The most list items and map entries an event's data may hold for this filter to be
        evaluated on it; None when the filter does not iterate."""
        return round(MAX_FILTER_ITERATIONS ** (1 / self.depth)) if self.depth else None

    def evaluate(self, envelope: dict[str, Any]) -> bool:
        """True when the event passes; raise FilterError when the filter itself is wrong, and
        FilterBudgetError, before evaluating, when the event's data is too large for it."""
        context = {name: envelope.get(name) for name in FILTER_VARIABLES}
        limit = self.max_items
        if limit is not None and _items_over(context, limit):
            raise FilterBudgetError(
                f"the event's data holds more than {limit:,} list items and map entries, more than a filter"
                f" whose comprehensions nest {self.depth} deep may iterate (at most {MAX_FILTER_ITERATIONS:,}"
                " steps); nest fewer comprehensions or filter on a field that is not a list"
            )
        try:
            result = self.program.execute(context)
        except KeyError:
            return False  # a field the event does not carry: no match
        except (RuntimeError, TypeError, ValueError) as exc:
            raise FilterError(_first_line(str(exc))) from None
        except BaseException as exc:  # a panic in the extension must not take the daemon down
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            raise FilterError(f"the filter failed: {type(exc).__name__}") from None
        if not isinstance(result, bool):
            raise FilterError(f"the filter returned {type(result).__name__} {result!r}, not a bool")
        return result


@functools.lru_cache(maxsize=4096)
def compile_filter(source: str) -> CompiledFilter:
    """Compiled once per distinct expression: routers rebuilt after a change reuse them."""
    if len(source) > MAX_FILTER_CHARS:
        raise FilterError(f"the filter has {len(source):,} characters; the limit is {MAX_FILTER_CHARS:,}")
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError) as exc:
        raise FilterError(_compile_message(str(exc))) from None
    except BaseException as exc:  # the Rust extension panics (pyo3 PanicException) on some inputs
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise FilterError(f"the filter cannot be compiled: {type(exc).__name__}") from None
    depth, count = comprehension_shape(source)
    if depth > MAX_COMPREHENSION_DEPTH:
        raise FilterBudgetError(
            f"the filter nests comprehensions ({', '.join(sorted(COMPREHENSION_MACROS))}) {depth} deep;"
            f" the limit is {MAX_COMPREHENSION_DEPTH}, as each level multiplies the work by the list's length"
        )
    if count > MAX_COMPREHENSIONS:
        raise FilterBudgetError(f"the filter has {count} comprehensions; the limit is {MAX_COMPREHENSIONS}")
    return CompiledFilter(source, program, depth)


def _items_over(value: Any, limit: int) -> bool:
    """Whether the lists and maps inside `value` hold more than `limit` items in all, counted
    without recursion and stopping as soon as the limit is passed."""
    remaining = limit
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            remaining -= len(item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            remaining -= len(item)
            stack.extend(item)
        else:
            continue
        if remaining < 0:
            return True
    return False


_TOKEN = re.compile(
    r"(?P<skip>\s+|//[^\n]*)"
    r"""|(?P<string>[rRbB]{0,2}(?:'''|\"\"\"|'|"))"""
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>.)",
    re.DOTALL,
)


def comprehension_shape(source: str) -> tuple[int, int]:
    """How deep the comprehension macros of a (compiled) CEL expression nest, and how many
    there are. The `cel` package gives no syntax tree, so this reads the tokens: a macro is
    `.name(` with name one of COMPREHENSION_MACROS, and its arguments run to the matching `)`."""
    depth = deepest = count = 0
    stack: list[bool] = []  # one entry per open parenthesis: whether it opened a macro's arguments
    recent: list[str] = []  # the last two significant tokens
    position = 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        assert match is not None  # `punct` matches any character
        position = match.end()
        kind = match.lastgroup
        if kind == "skip":
            continue
        if kind == "string":
            position = _string_end(source, position, match.group())
            token = '""'
        else:
            token = match.group()
        if token == "(":
            opens_macro = len(recent) == 2 and recent[0] == "." and recent[1] in COMPREHENSION_MACROS
            stack.append(opens_macro)
            if opens_macro:
                count += 1
                depth += 1
                deepest = max(deepest, depth)
        elif token == ")" and stack and stack.pop():
            depth -= 1
        recent = [*recent[-1:], token]
    return deepest, count


def _string_end(source: str, position: int, opener: str) -> int:
    """The index after the string literal whose opening (prefix and quotes) ends at `position`."""
    quote = opener.lstrip("rRbB")
    raw = "r" in opener[: len(opener) - len(quote)].lower()
    while position < len(source):
        if not raw and source[position] == "\\":
            position += 2
            continue
        if source.startswith(quote, position):
            return position + len(quote)
        position += 1
    return position


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "evaluation failed"


def _compile_message(text: str) -> str:
    """The CEL parser's message without its `Failed to parse expression '...':` preamble,
    keeping the caret picture that shows the column."""
    _, sep, rest = text.partition("ERROR: <input>:")
    if not sep:
        return _first_line(text)
    first = rest.strip().splitlines()[0]
    # the parser's list of expected tokens is long and rarely helps a person
    first = first.split(" expecting ", 1)[0]
    return f"at column {first.split(':', 2)[1]}: {first.split(':', 2)[2].strip()}" if first.count(":") >= 2 else first
