"""`reconciler completion bash|zsh|fish`: a shell completion script generated from the argparse tree.

Generated, not written by hand, so a new command or flag completes as soon as it exists. It
completes commands, flags, the values of flags with choices, files for flags that take a path,
and integration ids (asked of the daemon with `reconciler get -o name`) for commands taking an ID.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field

SHELLS = ("bash", "zsh", "fish")
# Positional arguments completed with the ids of a running daemon's integrations.
ID_ARGUMENTS = frozenset({"id"})
EMPTY = '""'  # the case pattern of "no command yet"
PATH_METAVARS = frozenset({"FILE", "DIR", "PATH", "JSON|@FILE|@-"})


@dataclass
class Flag:
    """A flag as a completion script needs it: its names, whether it takes a value, and which."""

    names: list[str]
    help: str
    takes_value: bool
    choices: list[str]
    path: bool


@dataclass
class Command:
    """A command with its flags, and whether it takes an integration id."""

    name: str
    help: str
    flags: list[Flag] = field(default_factory=list)
    takes_id: bool = False


def describe(parser: argparse.ArgumentParser) -> tuple[list[Flag], list[Command]]:
    """The global flags and the commands, with their flags, of a parser."""
    commands: list[Command] = []
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {choice.dest: choice.help or "" for s in subparsers for choice in s._choices_actions}
    for sub in subparsers:
        for name, child in sub.choices.items():
            positional = {a.dest for a in child._actions if not a.option_strings}
            commands.append(Command(name, helps.get(name, ""), _flags(child), bool(positional & ID_ARGUMENTS)))
    return _flags(parser), commands


def _flags(parser: argparse.ArgumentParser) -> list[Flag]:
    flags = []
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        choices = [str(c) for c in action.choices] if action.choices else []
        flags.append(
            Flag(
                list(action.option_strings),
                _one_line(action.help or ""),
                action.nargs != 0,
                choices,
                str(action.metavar or "") in PATH_METAVARS,
            )
        )
    return flags


def _one_line(text: str) -> str:
    return " ".join(text.split()).split(" [env ")[0]


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell` (one of SHELLS)."""
    global_flags, commands = describe(parser)
    prog = parser.prog
    if shell == "fish":
        return _fish(prog, global_flags, commands)
    bash = _bash(prog, global_flags, commands)
    if shell == "zsh":
        # zsh runs bash completion functions through bashcompinit
        return f"#compdef {prog}\nautoload -U +X bashcompinit && bashcompinit\n{bash}"
    return bash


def _bash(prog: str, global_flags: list[Flag], commands: list[Command]) -> str:
    function = "_" + prog.replace("-", "_")
    names = " ".join(c.name for c in commands)
    id_commands = " ".join(c.name for c in commands if c.takes_id)
    value_cases = []
    for command in [Command("", "", global_flags), *commands]:
        for flag in command.flags:
            if not flag.takes_value:
                continue
            pattern = "|".join(f"{command.name}:{n}" for n in flag.names)
            if flag.choices:
                reply = f'COMPREPLY=($(compgen -W {shlex.quote(" ".join(flag.choices))} -- "$cur"))'
            elif flag.path:
                reply = 'COMPREPLY=($(compgen -f -- "$cur"))'
            else:
                reply = "COMPREPLY=()"
            value_cases.append(f"        {pattern}) {reply}; return ;;")
    flag_cases = [
        f"        {c.name or EMPTY}) flags={shlex.quote(' '.join(n for f in c.flags for n in f.names))} ;;"
        for c in [Command("", "", global_flags), *commands]
    ]
    lines = [
        f'# {prog} completion for bash: eval "$({prog} completion bash)", or save it under',
        "# ~/.local/share/bash-completion/completions/" + prog,
        f"{function}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" cmd="" word i flags',
        f'    local commands="{names}"',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        word="${COMP_WORDS[i]}"',
        '        case " $commands " in *" $word "*) cmd="$word"; break ;; esac',
        "    done",
        '    case "$cmd:$prev" in',
        *value_cases,
        "    esac",
        '    case "$cmd" in',
        *flag_cases,
        "    esac",
        '    if [[ -z "$cmd" && "$cur" != -* ]]; then',
        '        COMPREPLY=($(compgen -W "$commands" -- "$cur"))',
        '    elif [[ "$cur" == -* ]]; then',
        '        COMPREPLY=($(compgen -W "$flags" -- "$cur"))',
        f'    elif [[ " {id_commands} " == *" $cmd "* ]]; then',
        f'        COMPREPLY=($(compgen -W "$({prog} get -o name 2>/dev/null)" -- "$cur"))',
        "    else",
        '        COMPREPLY=($(compgen -f -- "$cur"))',
        "    fi",
        "}",
        f"complete -F {function} {prog}",
        "",
    ]
    return "\n".join(lines)


def _fish(prog: str, global_flags: list[Flag], commands: list[Command]) -> str:
    lines = [
        f"# {prog} completion for fish: {prog} completion fish > ~/.config/fish/completions/{prog}.fish",
        f"complete -c {prog} -f",
    ]
    for command in commands:
        lines.append(f"complete -c {prog} -n __fish_use_subcommand -a {command.name} -d {_fish_quote(command.help)}")
    for flag in global_flags:
        lines.append(f"complete -c {prog} -n __fish_use_subcommand{_fish_flag(flag)}")
    for command in commands:
        condition = shlex.quote(f"__fish_seen_subcommand_from {command.name}")
        for flag in command.flags:
            lines.append(f"complete -c {prog} -n {condition}{_fish_flag(flag)}")
        if command.takes_id:
            lines.append(f"complete -c {prog} -n {condition} -a '({prog} get -o name 2>/dev/null)'")
    return "\n".join(lines) + "\n"


def _fish_flag(flag: Flag) -> str:
    parts = []
    for name in flag.names:
        parts.append(f" -l {name[2:]}" if name.startswith("--") else f" -s {name[1:]}")
    if flag.choices:
        parts.append(f" -x -a {_fish_quote(' '.join(flag.choices))}")
    elif flag.path:
        parts.append(" -r -F")
    elif flag.takes_value:
        parts.append(" -x")
    if flag.help:
        parts.append(f" -d {_fish_quote(flag.help)}")
    return "".join(parts)


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
