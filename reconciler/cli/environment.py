"""`reconciler run`'s settings from environment variables: every flag `--some-flag` is also
RECONCILER_SOME_FLAG, and a flag given on the command line wins over its variable.

A container or a unit file sets the daemon up without a command line to template. The
variables are the daemon's own settings: integration files may never read them
(`${env:RECONCILER_*}` is refused, see reconciler.manifests.secrets).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

PREFIX = "RECONCILER_"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


class SettingError(ValueError):
    """A variable's value does not fit its flag: the message names both and the fix."""


def variable_of(action: argparse.Action) -> str:
    """RECONCILER_CONFIG_DIR for --config-dir."""
    return PREFIX + action.dest.upper()


def settable(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's flags that a variable may set (all options but --help and the global ones)."""
    return [
        action
        for action in parser._actions
        if action.option_strings and action.dest not in ("help", "color") and action.default is not argparse.SUPPRESS
    ]


class Unset:
    """The default of a flag a variable may set: tells "not given" from "given as the default"."""

    def __init__(self, default: object) -> None:
        self.default = default

    def __repr__(self) -> str:
        return repr(self.default)


def bind_variables(parser: argparse.ArgumentParser) -> None:
    """Let each flag of `parser` come from its variable: `[env RECONCILER_X]` in its help, the rule
    once in the epilog, and defaults that apply_variables can tell from given values."""
    for action in settable(parser):
        action.help = f"{action.help or ''} [env {variable_of(action)}]".strip()
        if not isinstance(action, argparse._AppendAction):  # an empty list already says "not given"
            action.default = Unset(action.default)
    parser.epilog = (
        "Every flag can also be set by its environment variable, shown in brackets; a flag on the command "
        f"line wins over the variable. A repeatable flag's variable takes a list separated by '{os.pathsep}'."
    )


def apply_variables(
    parser: argparse.ArgumentParser, args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> None:
    """Each flag the command line did not give: from its variable if set, else its default."""
    env = os.environ if environ is None else environ
    for action in settable(parser):
        current = getattr(args, action.dest)
        given = not isinstance(current, Unset) and current != []
        if given:
            continue
        name = variable_of(action)
        if name in env:
            setattr(args, action.dest, _value(action, name, env[name]))
        elif isinstance(current, Unset):
            setattr(args, action.dest, current.default)


def _value(action: argparse.Action, name: str, raw: str) -> object:
    if action.nargs == 0:  # a switch such as --metrics-auth
        word = raw.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise SettingError(f"{name}={raw!r}: use true or false (for {action.option_strings[0]})")
    if isinstance(action, argparse._AppendAction):
        return [part for part in raw.split(os.pathsep) if part]
    converted: object = raw
    if callable(action.type):
        try:
            converted = action.type(raw)
        except (TypeError, ValueError):
            raise SettingError(
                f"{name}={raw!r} is not a valid value for {action.option_strings[0]} (default {action.default!r})"
            ) from None
    if action.choices is not None and converted not in action.choices:
        raise SettingError(f"{name}={raw!r}: choose one of {', '.join(map(str, action.choices))}")
    return converted
