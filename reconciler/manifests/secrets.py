"""Secret references: `${env:NAME}` and `${file:/path}`.

References are resolved after parsing (never inside comments), at apply time, so the
files in git hold only names. A reference may stand alone or inside a longer string
(a URL with a secret path segment, say).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Anything that opens like a reference, well formed or not, up to the closing brace.
# What reads as an attempt at a reference: `${word:...`, closed or not. Other `${` text, such
# as a price in a template ("${{ data.amount }}"), is not a reference.
_ANY_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*:[^}]*)\}?")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WELL_FORMED = re.compile(r"\$\{(env:[A-Za-z_][A-Za-z0-9_]*|file:/[^}\s]+)\}")
_SINGLE = re.compile(r"^\s*" + _WELL_FORMED.pattern + r"\s*$")
# Files read by `${file:...}` are secrets, not documents: refuse anything bigger.
MAX_SECRET_FILE_BYTES = 64 * 1024

MIN_PATH_SECRET_CHARS = 16  # an inbound path secret is a capability, like the admin secret

# What a reference may never read, whoever configures what: the daemon's own settings (its
# admin secret, anything it is configured with), and the kernel's views of processes, devices
# and the system (`/proc/self/environ` is the whole environment).
DAEMON_SETTINGS = frozenset({"ADMIN_SECRET"})
DAEMON_SETTINGS_PREFIX = "RECONCILER_"
NEVER_READ = (Path("/proc"), Path("/sys"), Path("/dev"))
DEFAULT_SECRET_DIRS = (Path("/run/secrets"),)  # where Docker and Kubernetes mount secrets


@dataclass(frozen=True)
class Reference:
    """A secret reference, `${env:NAME}` or `${file:/path}`."""

    scheme: str  # "env" or "file"
    target: str  # variable name or absolute path

    def __str__(self) -> str:
        return f"${{{self.scheme}:{self.target}}}"


class ReferenceError(ValueError):
    """A malformed or unresolvable reference; the message names it, never a value."""

    def __init__(self, message: str, hint: str, missing: Reference | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.missing = missing  # set when the variable is unset or the file absent: nothing else is wrong


@dataclass(frozen=True)
class SecretScope:
    """Where secret references may read from.

    `${file:...}` reads only files under `file_dirs` (after following links; None: any
    directory), `${env:...}` only variables that start with `env_prefix` (None: any); neither
    ever reads the daemon's own settings or /proc, /sys, /dev. The daemon's scope is `beside`
    its config directory; `reconciler validate --check-env`, which knows no deployment, uses
    `ANYWHERE`."""

    file_dirs: tuple[Path, ...] | None = None
    env_prefix: str | None = None

    @classmethod
    def beside(cls, config_dir: Path, extra_dirs: tuple[Path, ...] = (), env_prefix: str | None = None) -> SecretScope:
        """A `secrets/` directory beside the config directory, /run/secrets, and `extra_dirs`."""
        dirs = (config_dir.resolve().parent / "secrets", *DEFAULT_SECRET_DIRS, *extra_dirs)
        return cls(tuple(Path(os.path.realpath(d)) for d in dirs), env_prefix)

    def check(self, ref: Reference) -> None:
        """ReferenceError when the reference may not be read, naming the rule and the fix."""
        if ref.scheme == "env":
            self._check_env(ref)
        else:
            self._check_file(ref)

    def _check_env(self, ref: Reference) -> None:
        if ref.target in DAEMON_SETTINGS or ref.target.startswith(DAEMON_SETTINGS_PREFIX):
            raise ReferenceError(
                f"{ref} names one of the daemon's own settings, which integrations may not read",
                "give the integration a variable of its own",
            )
        if self.env_prefix is not None and not ref.target.startswith(self.env_prefix):
            raise ReferenceError(
                f"{ref} does not start with {self.env_prefix!r}, the prefix the daemon allows "
                "(run --secret-env-prefix)",
                f"name the variable {self.env_prefix}...",
            )

    def _check_file(self, ref: Reference) -> None:
        real = Path(os.path.realpath(ref.target))
        if any(real == d or d in real.parents for d in NEVER_READ):
            raise ReferenceError(
                f"{ref} points into {', '.join(map(str, NEVER_READ))}, which secret references never read",
                "put the secret in a file of its own under /run/secrets",
            )
        if self.file_dirs is not None and not any(real == d or d in real.parents for d in self.file_dirs):
            raise ReferenceError(
                f"{ref} is outside the directories secrets are read from ({', '.join(map(str, self.file_dirs))})",
                "mount the secret under /run/secrets, or add its directory with run --secrets-dir",
            )


ANYWHERE = SecretScope()  # files anywhere and any variable, but never the daemon's settings or /proc


def has_reference(text: str) -> bool:
    return "${" in text and _ANY_REFERENCE.search(text) is not None


def is_single_reference(text: str) -> bool:
    return bool(_SINGLE.match(text))


def mask_references(text: str) -> str:
    """Replace references by a neutral token so the rest of a string can be parsed."""
    return _ANY_REFERENCE.sub("SECRET", text)


def parse_references(text: str) -> list[Reference]:
    """The references in a string; ReferenceError for the first malformed one."""
    found: list[Reference] = []
    if "${" not in text:
        return found
    for match in _ANY_REFERENCE.finditer(text):
        body = match.group(0)
        if not body.endswith("}"):
            # show the scheme and name only: what follows may be a pasted secret
            start = re.match(r"\$\{[A-Za-z_]*:?[A-Za-z0-9_/.-]{0,40}", body)
            shown = start.group(0) if start else "${"
            raise ReferenceError(f"unterminated secret reference {shown!r}...", "close it with }: ${env:NAME}")
        scheme, _, target = match.group(1).partition(":")
        if scheme == "env":
            if not _ENV_NAME.match(target):
                raise ReferenceError(
                    f"{body} does not name an environment variable",
                    "variable names are letters, digits and _, not starting with a digit: ${env:SLACK_WEBHOOK_URL}",
                )
        elif scheme == "file":
            if not target.startswith("/") or any(c.isspace() for c in target):
                raise ReferenceError(
                    f"{body} is not an absolute file path",
                    "write ${file:/run/secrets/name} with an absolute path and no spaces",
                )
        else:
            raise ReferenceError(
                f"{body} has unknown scheme {scheme!r}" if target else f"{body} has no scheme",
                "secret references are ${env:NAME} or ${file:/absolute/path}",
            )
        found.append(Reference(scheme, target))
    return found


def resolve_reference(ref: Reference, environ: Mapping[str, str] | None = None, scope: SecretScope = ANYWHERE) -> str:
    """The value behind one reference, if `scope` lets it be read; ReferenceError says which
    reference failed, not why in terms of its value."""
    scope.check(ref)
    env = os.environ if environ is None else environ
    if ref.scheme == "env":
        if ref.target not in env:
            raise ReferenceError(
                f"environment variable {ref.target} is not set (referenced as {ref})",
                f"export {ref.target}=... in the daemon's environment",
                missing=ref,
            )
        return env[ref.target]
    path = Path(ref.target)
    try:
        if path.stat().st_size > MAX_SECRET_FILE_BYTES:
            raise ReferenceError(
                f"secret file {ref.target} is larger than {MAX_SECRET_FILE_BYTES} bytes",
                "point the reference at a file that holds only the secret",
            )
        # A trailing newline is an artefact of `echo > file`, not part of the secret.
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except FileNotFoundError:
        raise ReferenceError(
            f"secret file {ref.target} does not exist (referenced as {ref})",
            "create the file or mount the secret at that path",
            missing=ref,
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReferenceError(
            f"secret file {ref.target} cannot be read: {type(exc).__name__}",
            "check the file's permissions and that it is UTF-8 text",
        ) from None


def describe_failures(failures: list[ReferenceError]) -> str:
    """One message for every reference that failed: the unset variables and absent files by
    name, then each other failure (a reference out of scope, an unreadable file) in its words.
    A single failure keeps its own message."""
    if len(failures) == 1:
        return failures[0].message
    unset = [f.missing.target for f in failures if f.missing is not None and f.missing.scheme == "env"]
    absent = [f.missing.target for f in failures if f.missing is not None and f.missing.scheme == "file"]
    parts = []
    if unset:
        parts.append(f"environment variable{'s' * (len(unset) > 1)} {', '.join(unset)} not set")
    if absent:
        parts.append(f"secret file{'s' * (len(absent) > 1)} {', '.join(absent)} missing")
    parts += [f.message for f in failures if f.missing is None]
    return f"{len(failures)} secret references do not resolve: " + "; ".join(parts)


def resolve_string(text: str, environ: Mapping[str, str] | None = None, scope: SecretScope = ANYWHERE) -> str:
    """The string with every reference replaced by its value."""
    if not has_reference(text):
        return text
    parse_references(text)  # raise on the first malformed one

    def substitute(match: re.Match[str]) -> str:
        scheme, _, target = match.group(1).partition(":")
        return resolve_reference(Reference(scheme, target), environ, scope)

    return _WELL_FORMED.sub(substitute, text)
