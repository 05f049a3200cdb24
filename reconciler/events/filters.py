"""CEL filters on subscriptions, such as `data.priority == "high"`.

A filter sees the envelope's fields as variables: `id`, `event`, `timestamp`, `data`.
It is compiled once per applied generation. A field missing from an event's data makes the
filter not match (rather than fail the delivery), so optional fields need no `has()` guard.
"""

from __future__ import annotations

import functools
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


class FilterError(ValueError):
    """A filter that does not compile or cannot be evaluated."""


@dataclass(frozen=True)
class CompiledFilter:
    """A subscription's CEL filter, compiled once per applied version."""

    source: str
    program: Any

    def evaluate(self, envelope: dict[str, Any]) -> bool:
        """True when the event passes; raise FilterError when the filter itself is wrong."""
        context = {name: envelope.get(name) for name in FILTER_VARIABLES}
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
    return CompiledFilter(source, program)


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
