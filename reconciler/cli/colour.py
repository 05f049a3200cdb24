"""Colour on terminals: status words, the + ~ - of a plan, errors.

`--color auto` (the default) colours a stream only when it is a terminal, NO_COLOR is unset or
empty, and TERM is not `dumb`; `--color always` and `--color never` decide regardless (a flag
given on the command line wins over NO_COLOR, as no-color.org asks). Output piped into a file
or another program never carries escape codes unless asked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TextIO

CHOICES = ("auto", "always", "never")
RESET = "\033[0m"
RED, GREEN, YELLOW, BOLD_RED = "\033[31m", "\033[32m", "\033[33m", "\033[1;31m"

# Words the API and the CLI print for states, by what they mean to an operator.
GOOD = frozenset({"ok", "active", "delivered", "true", "ready", "applied", "add"})
WAITING = frozenset({"pending", "suspended", "inactive", "removing", "degraded", "failed", "retrying", "test"})
BAD = frozenset({"failing", "dead", "error", "false", "refused", "unavailable", "remove"})


def wanted(stream: TextIO, choice: str = "auto", environ: Mapping[str, str] | None = None) -> bool:
    """Whether to colour what is written to `stream`."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Palette:
    """Paints text when enabled, and returns it untouched when not."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def of(cls, stream: TextIO, choice: str = "auto") -> Palette:
        return cls(wanted(stream, choice))

    def paint(self, text: str, code: str) -> str:
        return f"{code}{text}{RESET}" if self.enabled and text else text

    def status(self, word: str) -> str:
        """A status word in the colour of what it means (the word itself is never changed)."""
        key = word.strip().lower()
        if key in GOOD:
            return self.paint(word, GREEN)
        if key in BAD:
            return self.paint(word, RED)
        if key in WAITING:
            return self.paint(word, YELLOW)
        return word

    def error(self, text: str) -> str:
        return self.paint(text, BOLD_RED)

    def plan_line(self, line: str) -> str:
        """A line of `reconciler plan`'s text: + green, - red, ~ yellow, by its first visible character."""
        marker = line.lstrip()[:1]
        code = {"+": GREEN, "-": RED, "~": YELLOW}.get(marker)
        return self.paint(line, code) if code else line
