"""What a store error means to its caller: the store is unavailable (retry later), or a bug.

One place decides. A database that cannot be reached, a failover in progress, a full disk, a
write lock held too long: each is `StoreUnavailable`, which every role answers by backing off
and trying again (`Outage`) and every route by 503 with Retry-After. Anything else (a
constraint violated, SQL that does not parse) is a bug and stays what it is: logged with its
traceback, a 500.

`AsyncStore` turns the driver's errors into `StoreUnavailable` as they leave the store's
threads, so code on the event loop only ever catches that.
"""

from __future__ import annotations

import logging
import math
import random
import time
from urllib.parse import parse_qsl, unquote, urlsplit

import sqlalchemy as sa

log = logging.getLogger("reconciler.store")

RETRY_AFTER_SECONDS = 5  # what a 503 asks of its client when the store is unavailable
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0  # a role tries at least this often: recovery is noticed within it
REMIND_EVERY_SECONDS = 60.0  # a long outage is logged again this often, not at every retry

# SQLite's primary result codes that mean "not now" rather than "wrong": the database is busy
# or locked (by another writer, for longer than the busy timeout), out of memory, read-only
# (a remount), the disk failed or is full, the file cannot be opened, or the lock protocol lost a race.
_SQLITE_UNAVAILABLE = {5, 6, 7, 8, 10, 13, 14, 15}
_SQLITE_MESSAGES = (
    "database is locked",
    "database table is locked",
    "database or disk is full",
    "disk i/o error",
    "unable to open database file",
    "readonly database",
)
# PostgreSQL SQLSTATEs of the same kind: connection exceptions (08), insufficient resources
# such as a full disk or too many connections (53), a server shutting down or starting (57P01-3),
# a transaction to retry (40001 serialization, 40P01 deadlock), a lock not available (55P03),
# a standby that cannot write after a failover (25006), and I/O errors (58030).
_SQLSTATE_CLASSES = ("08", "53")
_SQLSTATES = {"57P01", "57P02", "57P03", "40001", "40P01", "55P03", "25006", "58030"}


class StoreError(RuntimeError):
    """The store cannot be opened or used; the message names the URL (without password) and the fix."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or cannot take the work right now: retry later.

    `store` is the URL without its password; `reason` is the driver's first line (with any
    password taken out); `retry_after` is what a 503 asks of its client, in whole seconds."""

    def __init__(self, store: str, reason: str, retry_after: float = RETRY_AFTER_SECONDS) -> None:
        self.store = store
        self.reason = reason
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            f"the store at {store} is unavailable ({reason}); "
            f"try again in {self.retry_after} s: the daemon reconnects by itself"
        )

    @classmethod
    def of(cls, exc: BaseException, url: str) -> StoreUnavailable | None:
        """`exc` as a StoreUnavailable for the store at `url`, or None when it is a bug."""
        if isinstance(exc, StoreUnavailable):
            return exc
        reason = unavailable_reason(exc)
        if reason is None:
            return None
        return cls(redact_url(url), scrub_url_secrets(reason, url))


def unavailable_reason(exc: BaseException) -> str | None:
    """Why the store is unavailable, when `exc` says it is; None for anything else (a bug)."""
    if isinstance(exc, StoreUnavailable):
        return exc.reason
    if isinstance(exc, sa.exc.TimeoutError):  # every pooled connection busy for the pool's timeout
        return "no database connection was free in time"
    if isinstance(exc, sa.exc.DBAPIError):
        orig = exc.orig
        if orig is not None and _unavailable_driver_error(orig):
            return _first_line(orig)
        if exc.connection_invalidated:  # SQLAlchemy saw the connection drop
            return _first_line(orig if orig is not None else exc)
        return None
    if isinstance(exc, ConnectionError | TimeoutError):
        return _first_line(exc)
    # the driver's own error, not wrapped by SQLAlchemy: what a raw connection raises
    # (PostgresStore.is_leader holds one for its advisory lock)
    if type(exc).__module__.split(".")[0] in ("sqlite3", "psycopg") and _unavailable_driver_error(exc):
        return _first_line(exc)
    return None


def _unavailable_driver_error(orig: BaseException) -> bool:
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _SQLITE_UNAVAILABLE  # the extended code's low byte is the primary one
    if type(orig).__module__ == "sqlite3":
        return any(message in str(orig).lower() for message in _SQLITE_MESSAGES)
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate[:2] in _SQLSTATE_CLASSES or sqlstate in _SQLSTATES
    # psycopg raises these without a SQLSTATE when the server is not there to give one:
    # a refused or timed-out connection, a connection that broke mid-query
    names = {cls.__name__ for cls in type(orig).__mro__}
    return bool(names & {"OperationalError", "InterfaceError"}) or isinstance(orig, OSError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line[:300]


# query parameters libpq takes a secret from, besides the password in the authority
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def redact_url(url: str) -> str:
    """The URL without its passwords (in the authority or the query), for logs and errors."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = "&".join(
        f"{name}=***" if name.lower() in _SECRET_PARAMETERS else pair
        for pair in parts.query.split("&")
        for name in (pair.partition("=")[0],)
    )
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing to hide; geturl() would also turn sqlite:///state into sqlite:/state
    rebuilt = f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    return rebuilt + (f"#{parts.fragment}" if parts.fragment else "")


def url_secrets(url: str) -> list[str]:
    """The URL's passwords as written and decoded, to take out of a driver's messages."""
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [value for name, value in parse_qsl(parts.query) if name.lower() in _SECRET_PARAMETERS and value]
    return sorted({*found, *(unquote(value) for value in found)}, key=len, reverse=True)


def scrub_url_secrets(text: str, url: str) -> str:
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return text


class Outage:
    """One role's view of a store outage: how long to wait before its next try (doubling from
    FIRST_BACKOFF_SECONDS up to MAX_BACKOFF_SECONDS, with jitter so replicas do not retry in
    step), and a log line when the outage starts, when it ends, and once a minute between,
    never one per retry."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.since: float | None = None  # when the current outage began (monotonic)
        self._failures = 0
        self._reminded = 0.0

    @property
    def active(self) -> bool:
        """Whether the role's last try found the store unavailable."""
        return self.since is not None

    def failed(self, error: StoreUnavailable) -> float:
        """Note a failed try; the seconds to wait before the next one."""
        now = time.monotonic()
        if self.since is None:
            self.since, self._reminded = now, now
            log.warning(
                f"store unavailable: {self.role} backs off and retries until it is back",
                extra={"fields": {"role": self.role, "store": error.store, "reason": error.reason}},
            )
        elif now - self._reminded >= REMIND_EVERY_SECONDS:
            self._reminded = now
            log.warning(
                f"store unavailable: {self.role} still retrying",
                extra={
                    "fields": {
                        "role": self.role,
                        "store": error.store,
                        "reason": error.reason,
                        "seconds": round(now - self.since),
                    }
                },
            )
        delay = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2.0**self._failures)
        self._failures = min(self._failures + 1, 16)
        return delay * random.uniform(0.75, 1.0)

    def recovered(self) -> None:
        """Note a try that worked: the outage, if there was one, is over."""
        if self.since is None:
            return
        seconds = round(time.monotonic() - self.since, 1)
        self.since, self._failures = None, 0
        log.info(
            f"store available again: {self.role} resumed",
            extra={"fields": {"role": self.role, "seconds": seconds}},
        )
