"""Where the commands that talk to a daemon find its admin secret, and what they say when they find none.

In order: `--admin-secret-file FILE`; the ADMIN_SECRET variable; the file the daemon writes,
`admin-secret` in its state directory. The daemon keeps that beside its SQLite store (`./state`
by default, relative to where it was started), so the commands look where that is: in the
directory of RECONCILER_STORE's SQLite file (the variable `run` reads too), in `state/` beside
RECONCILER_CONFIG_DIR, and in `state/` of the current directory or of any directory above it
(`make run` starts the daemon at the top of the checkout, so any directory of the checkout works).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

SECRET_FILE_NAME = "admin-secret"  # as the daemon writes it (reconciler.api.auth)
STATE_DIR_NAME = "state"


@dataclass(frozen=True)
class AdminSecret:
    """The secret to send, and where it came from (safe to print; empty when none was found)."""

    value: str
    source: str


class NoAdminSecret(Exception):
    """No secret was found: the message says where the commands looked and how to give one."""

    def __init__(self, looked_in: list[str]) -> None:
        self.looked_in = looked_in
        super().__init__(
            "no admin secret to send: ADMIN_SECRET is not set, no --admin-secret-file was given, and there is "
            f"no {STATE_DIR_NAME}/{SECRET_FILE_NAME} where the daemon writes it (looked in: {', '.join(looked_in)}). "
            "Give the daemon's: export ADMIN_SECRET=..., or --admin-secret-file FILE, or run this from the "
            "directory `make run` was started in (its state/admin-secret is read), or set RECONCILER_STORE "
            "as the daemon has it"
        )


def find_admin_secret(
    secret_file: str | None, environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> AdminSecret:
    """The admin secret to send (see the module's docstring for the order); NoAdminSecret when
    there is none, OSError when a file named explicitly cannot be read."""
    env = os.environ if environ is None else environ
    if secret_file:
        return AdminSecret(Path(secret_file).read_text(encoding="utf-8").strip(), secret_file)
    if env.get("ADMIN_SECRET"):
        return AdminSecret(env["ADMIN_SECRET"], "ADMIN_SECRET")
    here = cwd or Path.cwd()
    looked_in: list[str] = []
    for candidate in secret_file_candidates(env, here):
        if candidate.parent.parent == here:
            looked_in.append(f"{candidate} and the same in every directory above")
        elif candidate.parent.parent not in here.parents:
            looked_in.append(str(candidate))
        try:
            value = candidate.read_text(encoding="utf-8").strip()
        except OSError:  # absent, or not ours to read: the next place may hold it
            continue
        if value:
            return AdminSecret(value, str(candidate))
    raise NoAdminSecret(looked_in)


def secret_file_candidates(env: Mapping[str, str], cwd: Path) -> Iterator[Path]:
    """The places the daemon's generated secret may be, most specific first, each once."""
    seen: set[Path] = set()
    for path in _candidates(env, cwd):
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            yield path


def _candidates(env: Mapping[str, str], cwd: Path) -> Iterator[Path]:
    store = env.get("RECONCILER_STORE", "")
    if store.startswith("sqlite:///"):
        yield (cwd / store.removeprefix("sqlite:///")).parent / SECRET_FILE_NAME
    if env.get("RECONCILER_CONFIG_DIR"):
        yield (cwd / env["RECONCILER_CONFIG_DIR"]).parent / STATE_DIR_NAME / SECRET_FILE_NAME
    for directory in (cwd, *cwd.parents):
        yield directory / STATE_DIR_NAME / SECRET_FILE_NAME


def refused_message(secret: AdminSecret) -> str:
    """What to say when the daemon answers 401 or 403 to the secret that was sent."""
    return (
        f"the daemon refused the admin secret from {secret.source}: it is not the daemon's. The daemon logs "
        "where its secret comes from at start (adminSecret); give that one with ADMIN_SECRET or --admin-secret-file"
    )
