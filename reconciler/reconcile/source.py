"""A git source: the daemon follows one ref of a remote repository by itself.

`reconciler run --source git+https://host/org/repo.git?ref=main&path=integrations.d` keeps a
bare mirror under `state/source/mirror.git`, fetches the ref every `--source-interval` (and at
once when a push webhook says the ref moved), and checks each new commit out into a fresh tree
under `state/source/trees/`. The switch is one rename(2) of the `state/source/current` symlink
onto the new tree, as git-sync and Flux's source-controller do: the reconcile loop and any
reader see either the old tree or the new one, never a half-written one. A pass holds the tree
it reads (`hold`), so pruning old trees never pulls one out from under it.

The last good commit stays applied when the remote is unreachable, the ref is gone, the
followed path is missing, or history was rewritten to a commit the source never followed; the
source's `Ready` condition says which and names both commits. A force-push back to a commit
the source already followed (a rollback) is followed.

Git is the `git` executable (docs/decisions.md says why). Credentials never appear on a
command line or in a URL: a token goes to git as an `http.extraHeader` through the
GIT_CONFIG_* environment, an SSH key through GIT_SSH_COMMAND.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from reconciler.events.envelope import now_timestamp
from reconciler.manifests import secrets
from reconciler.store.errors import redact_url

log = logging.getLogger("reconciler.source")

DEFAULT_INTERVAL = 60.0  # seconds between polls
FIRST_FETCH_SECONDS = 30.0  # the daemon starts serving the commit it has after this long
GIT_TIMEOUT = 300.0  # a fetch of a large repository on a slow link; beyond that it is stuck
SCHEMES = {"git+https": "https", "git+http": "http", "git+ssh": "ssh", "git+file": "file"}
EXAMPLE = "git+https://host/org/repo.git?ref=main&path=integrations.d"
FETCHED_REF = "refs/reconciler/fetched"  # the remote ref's head as last fetched
CURRENT_REF = "refs/reconciler/current"  # the commit checked out into `current`
_REF_TEXT = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/-]+$")


class SourceError(ValueError):
    """A source that cannot be used as given; the message names the setting and the fix."""


class Reason:
    """The reasons of the source's Ready condition."""

    FOLLOWING = "Following"  # the ref's head is checked out and applied
    UNREACHABLE = "Unreachable"  # the remote did not answer; the last good commit stays
    AUTHENTICATION_FAILED = "AuthenticationFailed"  # the remote refused the credentials
    HOST_KEY_REJECTED = "HostKeyVerificationFailed"  # git+ssh://: the server's key is not in --source-known-hosts
    REF_NOT_FOUND = "RefNotFound"  # the remote has no such ref (any more)
    HISTORY_REWRITTEN = "HistoryRewritten"  # the head is not a descendant of the applied commit
    PATH_NOT_FOUND = "PathNotFound"  # the head's tree has no such path
    CHECKOUT_FAILED = "CheckoutFailed"  # the commit could not be written out (disk full, ...)
    UNSIGNED_COMMIT = "UnsignedCommit"  # --source-verify: the head is not signed; the last trusted commit stays
    UNTRUSTED_SIGNER = "UntrustedSigner"  # --source-verify: signed, but not by an allowed key (or a bad signature)
    NOT_FETCHED = "NotFetched"  # nothing was fetched yet


@dataclass(frozen=True)
class SourceSpec:
    """What to follow: the remote (never with credentials), the ref and the path inside the tree."""

    remote: str  # what git fetches from: https://host/org/repo.git, ssh://git@host/repo.git, file:///srv/repo.git
    ref: str = "main"
    path: str = ""

    @property
    def display(self) -> str:
        """The remote as logs and the API show it (credentials could not be in it; redacted anyway)."""
        return redact_url(self.remote)

    def matches(self, pushed_ref: str) -> bool:
        """Whether a push to `pushed_ref` (refs/heads/main, as webhooks name it) moves the followed ref."""
        if self.ref.startswith("refs/"):
            return pushed_ref == self.ref
        return pushed_ref in (f"refs/heads/{self.ref}", f"refs/tags/{self.ref}", self.ref)


def parse_source(text: str) -> SourceSpec:
    """`git+https://host/org/repo.git?ref=main&path=integrations.d` (or git+http, git+ssh, git+file)."""
    scheme = text.partition("://")[0]
    if scheme not in SCHEMES:
        raise SourceError(
            f"--source {redact_url(text)!r} is not a git source URL; write it as {EXAMPLE} (or git+ssh://, git+file://)"
        )
    parts = urlsplit(text)
    if parts.password is not None:
        raise SourceError(
            "--source must not hold a password or token; give the token with --source-token-file FILE "
            "or --source-token '${env:NAME}'"
        )
    settings = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(settings) - {"ref", "path"})
    if unknown:
        raise SourceError(
            f"--source has unknown parameter(s) {', '.join(unknown)}; only ref= and path= are read ({EXAMPLE})"
        )
    ref = settings.get("ref", "main") or "main"
    if not _REF_TEXT.match(ref):
        raise SourceError(f"--source ref={ref!r} is not a branch, tag or refs/... name; for example ref=main")
    path = settings.get("path", "").strip("/")
    if path and (".." in Path(path).parts or path.startswith("-")):
        raise SourceError(f"--source path={path!r} must be a directory inside the repository, such as integrations.d")
    if SCHEMES[scheme] == "file" and parts.netloc not in ("", "localhost"):
        raise SourceError("--source git+file:// takes an absolute path on this machine: git+file:///srv/repo.git")
    if SCHEMES[scheme] != "file" and not parts.hostname:
        raise SourceError(f"--source {redact_url(text)!r} names no host; write it as {EXAMPLE}")
    remote = urlunsplit((SCHEMES[scheme], parts.netloc, parts.path, "", ""))
    return SourceSpec(remote, ref, path)


@dataclass(frozen=True)
class Credentials:
    """How the source authenticates: a token (HTTPS) or an SSH key file; held in memory only."""

    token: str | None = field(default=None, repr=False)
    ssh_key: Path | None = None
    known_hosts: Path | None = None
    username: str = "git"  # the user of HTTP basic authentication; forges read the token

    def environment(self, remote: str) -> dict[str, str]:
        """What git's environment adds: never a command-line argument, which `ps` shows."""
        env: dict[str, str] = {}
        scheme = urlsplit(remote).scheme
        if self.token and scheme in ("http", "https"):
            basic = base64.b64encode(f"{self.username}:{self.token}".encode()).decode()
            env.update(
                GIT_CONFIG_COUNT="1",
                GIT_CONFIG_KEY_0="http.extraHeader",
                GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}",
            )
        if scheme == "ssh":
            command = ["ssh", "-o", "BatchMode=yes"]
            if self.ssh_key is not None:
                command += ["-i", str(self.ssh_key), "-o", "IdentitiesOnly=yes"]
            if self.known_hosts is not None:
                command += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
            env["GIT_SSH_COMMAND"] = shlex.join(command)
        return env


def resolve_credential(reference: str | None, what: str) -> str | None:
    """A `${env:NAME}` or `${file:/path}` reference resolved; the flag's name and the fix on failure."""
    if not reference:
        return None
    if not secrets.is_single_reference(reference):
        raise SourceError(
            f"--{what} takes a reference such as '${{env:GIT_TOKEN}}' or '${{file:/run/secrets/git-token}}', "
            "never the secret itself"
        )
    try:
        value = secrets.resolve_string(reference.strip())
    except secrets.ReferenceError as exc:
        raise SourceError(f"--{what}: {exc.message}; {exc.hint}") from None
    return value.strip()


@dataclass(frozen=True)
class SignerPolicy:
    """`--source-verify FILE`: the keys a followed head must be signed with.

    An SSH allowed-signers file (`principal namespaces="git" ssh-ed25519 AAAA...`, as
    `git verify-commit` reads it), or OpenPGP public keys (an armored export), imported into a
    keyring of the source's own: a head is trusted when git reports a good signature (G)."""

    path: Path
    openpgp: bool

    @classmethod
    def of(cls, path: Path) -> SignerPolicy:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise SourceError(f"--source-verify {path}: {exc.strerror}; give a readable allowed-signers file") from None
        openpgp = "BEGIN PGP PUBLIC KEY BLOCK" in text
        if not openpgp and not any(line.strip() and not line.startswith("#") for line in text.splitlines()):
            raise SourceError(
                f"--source-verify {path} holds no key; write one line per key: "
                'admin@example.org namespaces="git" ssh-ed25519 AAAA...'
            )
        return cls(path.resolve(), openpgp)


@dataclass(frozen=True)
class Verdict:
    """What git says of a commit's signature: %G? (G good, N none, ...), the signer and key."""

    code: str
    signer: str
    key: str
    problem: str = ""  # why it could not be judged at all

    @property
    def trusted(self) -> bool:
        return self.code == "G"

    def describe(self, commit: str) -> str:
        if self.problem:
            return f"commit {commit[:12]} {self.problem}"
        if self.code == "N":
            return f"commit {commit[:12]} is not signed"
        who = self.signer or "an unknown signer"
        key = f" with key {self.key}" if self.key else ""
        if self.code in ("U", "E"):
            return f"commit {commit[:12]} is signed by {who}{key}, which is not among the allowed keys"
        return f"commit {commit[:12]} has a signature by {who}{key} that does not verify (status {self.code})"


class GitFailed(RuntimeError):
    """A git command failed; `detail` is its last error line, with no credential in it."""

    def __init__(self, args: list[str], detail: str) -> None:
        super().__init__(f"git {args[0]}: {detail}")
        self.detail = detail


@dataclass(frozen=True)
class Checkout:
    """The tree a pass reads: `directory` (the followed path in it) at `commit`; None: nothing yet."""

    directory: Path
    commit: str | None
    tree: Path | None


class GitSource:
    """Follows `spec` into `state_dir/source`; `run` is the daemon's `source` role."""

    def __init__(
        self,
        spec: SourceSpec,
        state_dir: Path,
        *,
        interval: float = DEFAULT_INTERVAL,
        credentials: Callable[[], Credentials] | None = None,
        allow_rewrite: bool = False,
        on_change: Callable[[], None] | None = None,
        verify: SignerPolicy | None = None,
    ) -> None:
        self.spec = spec
        self.root = (state_dir / "source").absolute()  # compared with resolved links when pruning
        self.mirror = self.root / "mirror.git"
        self.trees = self.root / "trees"
        self.current_link = self.root / "current"
        self.interval = interval
        self.credentials = credentials or Credentials
        self.allow_rewrite = allow_rewrite
        self.verify = verify
        self.gnupg_home = self.root / "gnupg"  # the OpenPGP keys of --source-verify, and no others
        self.on_change = on_change
        self.commit: str | None = None  # checked out into `current`
        self.head: str | None = None  # the remote ref's head at the last fetch
        self.last_fetch_at: float | None = None
        self.next_fetch_at: float | None = None
        self.last_error: str | None = None
        self.fetches = 0
        self.condition: dict[str, Any] = _condition(False, Reason.NOT_FETCHED, "no fetch has finished yet")
        self._wake: asyncio.Event | None = None
        self._first: asyncio.Task[bool] | None = None  # the start-up fetch, which run() takes over
        self._pins: Counter[Path] = Counter()
        self._lock = threading.Lock()  # pins, the switch and pruning
        self._syncing = threading.Lock()

    @property
    def config_dir(self) -> Path:
        """The followed directory through the `current` link, as readers outside the loop see it."""
        return self.current_link / self.spec.path if self.spec.path else self.current_link

    # --- driving -------------------------------------------------------------------------------

    def request_fetch(self) -> None:
        """Fetch now (a push webhook calls this); several calls during one fetch make one more."""
        if self._wake is not None:
            self._wake.set()

    def begin(self) -> asyncio.Task[bool]:
        """Start the first fetch now (the daemon waits a while for it before its first pass);
        run() takes this fetch over rather than fetching again."""
        self._first = asyncio.get_running_loop().create_task(self.sync(), name="source-first-fetch")
        return self._first

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch every `interval` and whenever asked, until `stop`."""
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            self._wake.clear()
            first, self._first = self._first, None
            try:
                # a first fetch that outlasted the daemon's start calls on_change when it switches
                await (first if first is not None else self.sync())
            except Exception:  # the role must outlive any one fetch
                log.exception("source fetch failed")
            self.next_fetch_at = time.time() + self.interval
            stopping = loop.create_task(stop.wait())
            woken = loop.create_task(self._wake.wait())
            _, pending = await asyncio.wait(
                {stopping, woken}, timeout=self.interval, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()

    async def sync(self) -> bool:
        """One fetch, off the event loop; True (and `on_change` called) when a new commit is current."""
        changed = await asyncio.to_thread(self._sync_locked)
        if changed:
            if self.on_change is not None:
                self.on_change()  # the pass starts now; old trees go meanwhile
            await asyncio.to_thread(self._prune)
        return changed

    # --- what a pass reads ---------------------------------------------------------------------

    def hold(self) -> Checkout:
        """The current tree, kept until `release`: pruning leaves it alone meanwhile."""
        with self._lock:
            target = Path(os.path.realpath(self.current_link)) if self.current_link.is_symlink() else None
            if target is None or not target.is_dir():
                return Checkout(self.config_dir, None, None)
            self._pins[target] += 1
        directory = target / self.spec.path if self.spec.path else target
        return Checkout(directory, _commit_of_tree(target), target)

    def release(self, checkout: Checkout) -> None:
        if checkout.tree is None:
            return
        with self._lock:
            self._pins[checkout.tree] -= 1
            if self._pins[checkout.tree] <= 0:
                del self._pins[checkout.tree]

    def status(self) -> dict[str, Any]:
        """What `reconciler status` and the health document show: never a credential."""
        return {
            "url": self.spec.display,
            "ref": self.spec.ref,
            "path": self.spec.path,
            "commit": self.commit,
            "head": self.head,
            "lastFetch": _iso(self.last_fetch_at),
            "nextFetch": _iso(self.next_fetch_at),
            "lastError": self.last_error,
            "fetches": self.fetches,
            "verify": str(self.verify.path) if self.verify is not None else None,
            "conditions": [self.condition],
        }

    # --- the work, on a thread ----------------------------------------------------------------

    def sync_blocking(self) -> bool:
        """Fetch the ref and switch to its head if it may be followed; True when `current` moved."""
        changed = self._sync_locked()
        if changed:
            self._prune()
        return changed

    def _sync_locked(self) -> bool:
        with self._syncing:  # one fetch into the mirror at a time (a slow first fetch may still run)
            return self._sync()

    def _sync(self) -> bool:
        self._prepare()
        started = time.perf_counter()
        try:
            self._fetch()
        except GitFailed as exc:
            reason = _fetch_reason(exc.detail)
            self._failed(
                reason,
                f"fetching {self.spec.ref} from {self.spec.display} failed: {exc.detail}{_FETCH_FIXES.get(reason, '')}",
            )
            return False
        finally:
            self.last_fetch_at = time.time()
            self.fetches += 1
        fetched = time.perf_counter()
        head = self._fetched_head()
        self.head = head
        if head == self.commit and self.current_link.exists():
            self._following()
            return False
        if self.commit is not None and not self.allow_rewrite and not self._may_follow(self.commit, head):
            self._failed(
                Reason.HISTORY_REWRITTEN,
                f"{self.spec.ref} was rewritten: its head {head[:12]} does not descend from the applied commit "
                f"{self.commit[:12]}; push a commit on top of {self.commit[:12]}, or restart with "
                "--source-allow-rewrite to follow rewritten history",
            )
            return False
        if self.verify is not None:
            try:
                verdict = self._signature(head)
            except GitFailed as exc:
                verdict = Verdict("?", "", "", f"could not be verified: {exc.detail}")
            if not verdict.trusted:
                self._failed(
                    Reason.UNSIGNED_COMMIT if verdict.code == "N" else Reason.UNTRUSTED_SIGNER,
                    verdict.describe(head) + f" (--source-verify {self.verify.path})",
                )
                return False
        try:
            tree = self._checkout(head)
        except GitFailed as exc:
            missing = "did not match any files" in exc.detail
            self._failed(
                Reason.PATH_NOT_FOUND if missing else Reason.CHECKOUT_FAILED,
                f"commit {head[:12]} has no {self.spec.path!r}; the path= of --source must name a directory "
                "of the repository"
                if missing
                else f"checking out {head[:12]} failed: {exc.detail}",
            )
            return False
        except (OSError, tarfile.TarError) as exc:
            self._failed(Reason.CHECKOUT_FAILED, f"checking out {head[:12]} failed: {exc}")
            return False
        self._switch(tree, head)
        log.info(
            "source: following a new commit",
            extra={
                "fields": {
                    "commit": head,
                    "ref": self.spec.ref,
                    "url": self.spec.display,
                    "fetchMs": round((fetched - started) * 1000, 1),
                    "checkoutMs": round((time.perf_counter() - fetched) * 1000, 1),
                }
            },
        )
        self._following()
        return True

    def _prepare(self) -> None:
        """The mirror, once; after a restart, the commit `current` already holds."""
        self.trees.mkdir(parents=True, exist_ok=True)
        if not (self.mirror / "HEAD").exists():
            self._git("init", "--quiet", "--bare", str(self.mirror), git_dir=False)
        if self.commit is None and self.current_link.is_symlink():
            target = Path(os.path.realpath(self.current_link))
            if target.is_dir():
                self.commit = _commit_of_tree(target)

    def _signature(self, commit: str) -> Verdict:
        """The head's signature as `git verify-commit` judges it against the allowed keys."""
        assert self.verify is not None
        if self.verify.openpgp:
            self._import_openpgp_keys()
        out = self._git(
            "-c",
            f"gpg.ssh.allowedSignersFile={self.verify.path}",
            "log",
            "-1",
            "--format=%G?%x00%GS%x00%GK",
            commit,
        )
        code, _, rest = out.strip("\n").partition("\0")
        signer, _, key = rest.partition("\0")
        return Verdict(code or "N", signer, key)

    def _import_openpgp_keys(self) -> None:
        """A keyring of the allowed keys only, each trusted fully (it is the list of who may sign)."""
        assert self.verify is not None
        marker = self.gnupg_home / ".imported"
        if marker.exists() and marker.stat().st_mtime >= self.verify.path.stat().st_mtime:
            return
        self.gnupg_home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._gpg("--import", str(self.verify.path))
        listed = self._gpg("--with-colons", "--fingerprint", "--list-keys").decode()
        fingerprints = [line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr:")]
        self._gpg("--import-ownertrust", given="".join(f"{fpr}:6:\n" for fpr in fingerprints).encode())
        marker.touch()

    def _gpg(self, *args: str, given: bytes | None = None) -> bytes:
        env = {**git_environment({}), "GNUPGHOME": str(self.gnupg_home)}
        command = ["gpg", "--batch", "--quiet", "--no-tty", *args]
        try:
            done = subprocess.run(command, input=given, env=env, capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GitFailed(["gpg"], f"gpg could not run ({exc}); install gnupg to verify OpenPGP signatures") from None
        if done.returncode != 0:
            raise GitFailed(["gpg"], _last_line(done.stderr) or f"gpg {args[0]} failed")
        return done.stdout

    def _fetch(self) -> None:
        self._git(
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-show-forced-updates",  # the source checks ancestry itself, against the applied commit
            "--",
            self.spec.remote,
            f"+{self.spec.ref}:{FETCHED_REF}",
            remote=True,
        )

    def _fetched_head(self) -> str:
        """The fetched commit: the loose ref fetch just wrote (a process less on the way to a
        pass), or what rev-parse says once refs are packed."""
        with contextlib.suppress(OSError):
            text = (self.mirror / FETCHED_REF).read_text().strip()
            if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", text):
                return text
        return self._git("rev-parse", "--verify", FETCHED_REF).strip()

    def _may_follow(self, applied: str, head: str) -> bool:
        """A fast-forward, or a rollback to a commit the source already followed (an ancestor)."""
        return self._is_ancestor(applied, head) or self._is_ancestor(head, applied)

    def _is_ancestor(self, older: str, newer: str) -> bool:
        try:
            self._git("merge-base", "--is-ancestor", older, newer)
        except GitFailed:
            return False
        return True

    def _checkout(self, commit: str) -> Path:
        """The commit's followed path, written into a fresh tree named after the commit."""
        paths = ["--", self.spec.path] if self.spec.path else []
        archive = self._git_bytes("archive", "--format=tar", commit, *paths)
        name = f"{commit}-{time.time_ns():x}"
        filling = self.trees / f".{name}"  # hidden until complete
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(filling, filter="data")  # no links or paths out of the tree
        tree = self.trees / name
        os.rename(filling, tree)
        return tree

    def _switch(self, tree: Path, commit: str) -> None:
        """One rename(2) of the `current` link: readers see the old tree or the new one."""
        staged = self.root / f".current-{time.time_ns():x}"
        os.symlink(os.path.relpath(tree, self.root), staged)
        with self._lock:
            os.replace(staged, self.current_link)
            self.commit = commit
        self._git("update-ref", CURRENT_REF, commit)

    def _prune(self) -> None:
        """Old trees go, except the current one and any a pass still reads."""
        with self._lock:  # chosen under the lock; a tree that is not current can never be held later
            current = Path(os.path.realpath(self.current_link))
            victims = [entry for entry in self.trees.iterdir() if entry != current and entry not in self._pins]
        for entry in victims:
            shutil.rmtree(entry, ignore_errors=True)

    def _following(self) -> None:
        assert self.commit is not None
        self.last_error = None
        self.condition = _condition(
            True, Reason.FOLLOWING, f"{self.spec.ref} at {self.commit[:12]} is checked out", self.condition
        )

    def _failed(self, reason: str, message: str) -> None:
        kept = f"; keeping {self.commit[:12]}" if self.commit else "; nothing is checked out yet"
        repeated = self.last_error == message + kept
        self.last_error = message + kept
        self.condition = _condition(False, reason, self.last_error, self.condition)
        if repeated:  # said once, not at every poll; status and the condition keep saying it
            return
        log.warning("source: " + self.last_error, extra={"fields": {"reason": reason, "url": self.spec.display}})

    def _git(self, *args: str, git_dir: bool = True, remote: bool = False) -> str:
        return self._git_bytes(*args, git_dir=git_dir, remote=remote).decode("utf-8", "replace")

    def _git_bytes(self, *args: str, git_dir: bool = True, remote: bool = False) -> bytes:
        command = ["git", *((f"--git-dir={self.mirror}",) if git_dir else ()), *args]
        env = git_environment(self.credentials().environment(self.spec.remote) if remote else {})
        if self.verify is not None and self.verify.openpgp:
            env["GNUPGHOME"] = str(self.gnupg_home)
        try:
            done = subprocess.run(command, capture_output=True, env=env, timeout=GIT_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise GitFailed(list(args), f"no answer within {GIT_TIMEOUT:.0f} s") from None
        except FileNotFoundError:
            raise GitFailed(list(args), "the git executable is not installed; install git") from None
        if done.returncode != 0:
            raise GitFailed(list(args), _last_line(done.stderr) or f"exit status {done.returncode}")
        return done.stdout


def git_environment(extra: dict[str, str]) -> dict[str, str]:
    """The environment of every git command: no prompt, no foreign GIT_ settings, messages in English."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "SSH_ASKPASS"))}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_ALLOW_PROTOCOL="file:http:https:ssh",
        LC_ALL="C",
        GIT_CONFIG_NOSYSTEM="1",
    )
    env.update(extra)
    return env


# what an operator does about a failed fetch, where the reason alone does not say it
_FETCH_FIXES = {
    Reason.HOST_KEY_REJECTED: " (the server's host key is not the one --source-known-hosts lists for it; add the key "
    "the server really has, checked out of band, as `[host]:port ssh-ed25519 AAAA...`)",
}


def _fetch_reason(detail: str) -> str:
    text = detail.lower()
    if "couldn't find remote ref" in text or "not our ref" in text:
        return Reason.REF_NOT_FOUND
    if "host key verification failed" in text:
        return Reason.HOST_KEY_REJECTED
    if any(
        word in text for word in ("authentication failed", "could not read username", "permission denied", "403", "401")
    ):
        return Reason.AUTHENTICATION_FAILED
    return Reason.UNREACHABLE


# the advice git adds after any failed connection: the line before it says what failed
_GIT_ADVICE = (
    "fatal: could not read from remote repository.",
    "please make sure you have the correct access rights",
    "and the repository exists.",
)


def _last_line(stderr: bytes) -> str:
    """The last line that says something: ssh's "Host key verification failed." or "Permission
    denied (publickey).", not git's closing advice, which is the same whatever went wrong."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    lines = [line for line in lines if line.lower() not in _GIT_ADVICE] or lines
    text = lines[-1] if lines else ""
    for url in re.findall(r"[a-z+]+://\S+", text):
        text = text.replace(url, redact_url(url.rstrip("'\"):,.")))
    return text.removeprefix("fatal: ").removeprefix("error: ")[:500]


def _commit_of_tree(tree: Path) -> str | None:
    commit = tree.name.partition("-")[0]
    return commit if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit) else None


def _condition(ok: bool, reason: str, message: str, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    status = "True" if ok else "False"
    same = previous is not None and previous.get("status") == status
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": previous["lastTransitionTime"] if same and previous else now_timestamp(),
    }


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
