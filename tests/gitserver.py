"""Real git repositories for the git source's tests: a bare repository, a work clone that
commits and pushes to it, `git http-backend` served over HTTP on 127.0.0.1 (port 0), with an
optional token that clients must present as HTTP basic authentication, and OpenSSH's sshd on
127.0.0.1 with a host key and an authorized client key of its own."""

from __future__ import annotations

import base64
import getpass
import hmac
import os
import re
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# the tests' own git commands: no user or system configuration, a fixed identity
GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "Admin",
    "GIT_AUTHOR_EMAIL": "admin@example.org",
    "GIT_COMMITTER_NAME": "Admin",
    "GIT_COMMITTER_EMAIL": "admin@example.org",
    "LC_ALL": "C",
}


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env={**GIT_ENV, **(env or {})}, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


class Repo:
    """A bare repository (`bare`) and a work clone (`work`) that commits and pushes to its `main`."""

    def __init__(self, root: Path, name: str = "config.git") -> None:
        self.bare = root / "served" / name
        self.work = root / "work"
        self.bare.mkdir(parents=True)
        git(self.bare, "init", "--quiet", "--bare", "--initial-branch=main")
        git(self.bare, "config", "http.receivepack", "true")
        git(self.bare, "config", "receive.denyDeleteCurrent", "ignore")
        self.work.mkdir()
        git(self.work, "init", "--quiet", "--initial-branch=main")

    @property
    def file_url(self) -> str:
        return f"git+file://{self.bare}"

    def commit(
        self,
        files: dict[str, str | None],
        message: str = "change",
        sign: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        """Write (or, for None, delete) files in the work clone and commit them; the new commit.
        `sign`: the `git -c` settings that sign it (gpg.format=ssh, user.signingkey=...)."""
        for name, text in files.items():
            path = self.work / name
            if text is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(self.work, "add", "-A")
        settings = [part for setting in sign or [] for part in ("-c", setting)]
        signing = ["-S"] if sign else []
        git(self.work, *settings, "commit", "--quiet", "--allow-empty", *signing, "-m", message, env=env)
        return git(self.work, "rev-parse", "HEAD")

    def push(self, ref: str = "main", force: bool = False) -> None:
        git(self.work, "push", "--quiet", *(["--force"] if force else []), str(self.bare), f"HEAD:refs/heads/{ref}")

    def reset(self, commit: str) -> None:
        """Move the work clone's branch back (or sideways) to `commit`, for a force-push."""
        git(self.work, "reset", "--quiet", "--hard", commit)

    def delete_remote_ref(self, ref: str = "main") -> None:
        git(self.work, "push", "--quiet", str(self.bare), f":refs/heads/{ref}")

    def head(self, ref: str = "main") -> str:
        return git(self.bare, "rev-parse", f"refs/heads/{ref}")


class GitHttpServer:
    """`git http-backend` (CGI) behind a small HTTP server on 127.0.0.1; `stop` and `start` take
    the remote down and bring it back on the same port."""

    def __init__(self, project_root: Path, token: str | None = None) -> None:
        self.project_root = project_root
        self.token = token
        self.port = 0
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self.start()

    def url(self, name: str = "config.git", *, ref: str = "main", path: str = "integrations.d") -> str:
        return f"git+http://127.0.0.1:{self.port}/{name}?ref={ref}&path={path}"

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._backend()

            def do_POST(self) -> None:
                self._backend()

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _backend(self) -> None:
                owner.requests += 1
                if owner.token is not None and not self._authorized(owner.token):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                env = {
                    **GIT_ENV,
                    "GIT_PROJECT_ROOT": str(owner.project_root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_ADDR": "127.0.0.1",
                    "REMOTE_USER": "tester",
                }
                if self.headers.get("Content-Encoding"):
                    env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
                if self.headers.get("Git-Protocol"):
                    env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
                done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
                head, _, payload = done.stdout.partition(b"\r\n\r\n")
                status = 200
                headers = []
                for line in head.decode("latin-1").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.strip().split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _authorized(self, token: str) -> bool:
                presented = self.headers.get("Authorization", "")
                if not presented.startswith("Basic "):
                    return False
                decoded = base64.b64decode(presented[6:]).decode()
                return hmac.compare_digest(decoded.partition(":")[2], token)

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def ssh_keygen(path: Path) -> Path:
    """A new ed25519 key pair without a passphrase: `path` and `path.pub`."""
    command = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)]
    subprocess.run(command, check=True, capture_output=True)
    return path


def known_hosts_line(port: int, public_key: Path) -> str:
    """The known_hosts line of a server on 127.0.0.1:`port` with this key."""
    kind, blob = public_key.read_text().split()[:2]
    return f"[127.0.0.1]:{port} {kind} {blob}\n"


class SshServer:
    """OpenSSH's `sshd -D -e` on 127.0.0.1 as the current user: its own configuration, host key
    and authorized key (`client_key`) under `root`, no password or PAM. The port is one the
    kernel gave a socket bound to port 0, closed just before sshd binds it; if another process
    takes it meanwhile, sshd says so and starts again on a new one."""

    ATTEMPTS = 5

    def __init__(self, root: Path, sshd: str) -> None:
        root.mkdir(parents=True)
        self.root = root
        self.sshd = sshd
        self.host_key = ssh_keygen(root / "host_key")
        self.client_key = ssh_keygen(root / "client_key")
        (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
        self.user = getpass.getuser()
        self.log_path = root / "sshd.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._start()

    def url(self, bare: Path, *, ref: str = "main", path: str = "integrations.d") -> str:
        return f"git+ssh://{self.user}@127.0.0.1:{self.port}{bare}?ref={ref}&path={path}"

    def known_hosts(self, public_key: Path | None = None) -> str:
        """The known_hosts line for this server: with its own host key, or with `public_key`."""
        return known_hosts_line(self.port, public_key or self.host_key.with_suffix(".pub"))

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def _start(self) -> None:
        for _ in range(self.ATTEMPTS):
            self.port = _free_port()
            config = self._write_config()
            with self.log_path.open("w") as log:  # a file: a pipe nobody reads would block sshd
                self.process = subprocess.Popen(
                    [self.sshd, "-D", "-e", "-f", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            if self._wait_listening():
                return
            said = self.log()
            privsep = re.search(r"Missing privilege separation directory: (\S+)", said)
            if privsep and os.geteuid() == 0:  # sshd run by root wants its empty chroot directory
                Path(privsep.group(1)).mkdir(mode=0o755, parents=True, exist_ok=True)
            elif "Address already in use" not in said:
                raise AssertionError(f"sshd did not start: {said}")
        raise AssertionError(f"sshd found no free port in {self.ATTEMPTS} attempts: {self.log()}")

    def _write_config(self) -> Path:
        config = self.root / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1:{self.port}\n"
            f"HostKey {self.host_key}\n"
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}\n"
            f"PidFile {self.root / 'sshd.pid'}\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"  # tmp_path's modes are the test runner's, not a home directory's
            "PermitRootLogin prohibit-password\n"  # the tests may run as root: a key only
        )
        return config

    def _wait_listening(self, timeout: float = 30.0) -> bool:
        """True once sshd logs that it listens; False if it exits first."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f"Server listening on 127.0.0.1 port {self.port}." in self.log():
                return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.02)  # polling, with the deadline above
        raise AssertionError(f"sshd did not listen within {timeout} s: {self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
