"""Real git repositories for the git source's tests: a bare repository, a work clone that
commits and pushes to it, and `git http-backend` served over HTTP on 127.0.0.1 (port 0), with
an optional token that clients must present as HTTP basic authentication."""

from __future__ import annotations

import base64
import hmac
import os
import subprocess
import threading
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
