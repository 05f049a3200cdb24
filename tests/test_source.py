"""The git source against real repositories: a bare repository pushed to by `git push`, fetched
over file://, over HTTP (`git http-backend` on 127.0.0.1) and over SSH (OpenSSH's sshd on
127.0.0.1), and the daemon following it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.reconcile.source import Credentials, GitSource, Reason, SignerPolicy, SourceError, parse_source
from tests.conftest import ROOT
from tests.gitserver import GitHttpServer, Repo, SshServer, ssh_keygen
from tests.polling import until
from tests.test_daemon import SECRET, Daemon

EXPORT = """\
apiVersion: cms.integrations/v1
kind: Integration
name: {name}
type: file
config: {{url: "file://state/exports"}}
webhooks: [{{events: ["*"]}}]
"""
BROKEN = "apiVersion: cms.integrations/v1\nkind: Integration\nname: Broken\ntype: file\nconfig: {url: 42}\n"
WEBHOOK_SECRET = "push-webhook-secret-for-tests"
TOKEN = "git-token-for-tests-0123456789"
# sshd is in /usr/sbin, which an unprivileged user's PATH may lack; it must run by an absolute path
SSHD = shutil.which("sshd", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def export(name: str = "Export") -> str:
    return EXPORT.format(name=name)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repo = Repo(tmp_path)
    repo.commit({"integrations.d/export.yaml": export()}, "first")
    repo.push()
    return repo


def source_of(repo: Repo, state: Path, **options: Any) -> GitSource:
    return GitSource(parse_source(repo.file_url + "?ref=main&path=integrations.d"), state, **options)


def read(source: GitSource, name: str = "export.yaml") -> str:
    return (source.config_dir / name).read_text()


def trees(source: GitSource) -> list[str]:
    return sorted(p.name for p in source.trees.iterdir())


# --- the URL ---------------------------------------------------------------------------------


def test_source_url_names_remote_ref_and_path_and_refuses_credentials():
    spec = parse_source("git+https://git.example.org/org/config.git?ref=release&path=/integrations.d/")
    assert (spec.remote, spec.ref, spec.path) == ("https://git.example.org/org/config.git", "release", "integrations.d")
    assert parse_source("git+file:///srv/config.git").ref == "main"
    assert (
        parse_source("git+ssh://git@git.example.org/org/config.git").remote
        == "ssh://git@git.example.org/org/config.git"
    )
    with pytest.raises(SourceError, match="--source-token-file") as refused:
        parse_source("git+https://user:hunter2-token@git.example.org/org/config.git")
    assert "hunter2" not in str(refused.value)
    with pytest.raises(SourceError, match=r"only ref= and path="):
        parse_source("git+https://git.example.org/c.git?branch=main")
    with pytest.raises(SourceError, match=r"git\+https://host/org/repo\.git"):
        parse_source("https://git.example.org/c.git")
    with pytest.raises(SourceError, match="inside the repository"):
        parse_source("git+file:///srv/c.git?path=../etc")


def test_token_reaches_git_through_the_environment_only():
    env = Credentials(token=TOKEN).environment("https://git.example.org/c.git")
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"].startswith("Authorization: Basic ")
    assert Credentials(token=TOKEN).environment("ssh://git@git.example.org/c.git").keys() == {"GIT_SSH_COMMAND"}
    assert TOKEN not in repr(Credentials(token=TOKEN))


# --- following over file:// --------------------------------------------------------------------


def test_follows_pushes_into_fresh_trees_switched_by_one_link(repo, tmp_path):
    source = source_of(repo, tmp_path / "state")
    assert source.sync_blocking() is True
    first = repo.head()
    assert source.commit == first and "name: Export" in read(source)
    assert source.current_link.is_symlink()
    assert source.sync_blocking() is False  # nothing new: nothing switched

    held = source.hold()  # a pass reading the first tree
    second = repo.commit({"integrations.d/export.yaml": export("Renamed")})
    repo.push()
    assert source.sync_blocking() is True
    assert source.commit == second and "name: Renamed" in read(source)
    assert held.commit == first and "name: Export" in (held.directory / "export.yaml").read_text()
    assert len(trees(source)) == 2  # the held tree stays while it is read
    source.release(held)
    repo.commit({"integrations.d/other.yaml": export("Other")})
    repo.push()
    assert source.sync_blocking() is True
    assert trees(source) == [Path(os.path.realpath(source.current_link)).name]  # old trees pruned
    assert source.condition["reason"] == Reason.FOLLOWING


def test_a_rewrite_is_held_and_a_force_push_back_is_followed(repo, tmp_path):
    source = source_of(repo, tmp_path / "state")
    first = repo.head()
    source.sync_blocking()
    second = repo.commit({"integrations.d/export.yaml": export("Second")})
    repo.push()
    source.sync_blocking()
    assert source.commit == second

    repo.reset(first)  # a new history beside the followed one
    sideways = repo.commit({"integrations.d/export.yaml": export("Sideways")}, "rewritten")
    repo.push(force=True)
    assert source.sync_blocking() is False
    assert source.commit == second and "name: Second" in read(source)
    assert source.condition["reason"] == Reason.HISTORY_REWRITTEN and source.condition["status"] == "False"
    assert sideways[:12] in source.condition["message"] and second[:12] in source.condition["message"]

    repo.reset(second)  # force-push back: the followed commit again
    repo.push(force=True)
    assert source.sync_blocking() is False
    assert source.condition["reason"] == Reason.FOLLOWING and source.last_error is None

    repo.reset(first)  # a rollback to a commit already followed
    repo.push(force=True)
    assert source.sync_blocking() is True
    assert source.commit == first and "name: Export" in read(source)

    repo.reset(sideways)
    repo.push(force=True)
    allowing = source_of(repo, tmp_path / "allowing", allow_rewrite=True)
    allowing.sync_blocking()
    repo.reset(second)
    repo.push(force=True)
    assert allowing.sync_blocking() is True
    assert allowing.commit == second


def test_a_vanished_ref_or_path_keeps_the_last_good_commit(repo, tmp_path):
    source = source_of(repo, tmp_path / "state")
    source.sync_blocking()
    good = source.commit
    repo.commit({"integrations.d/export.yaml": None, "README": "moved away"})
    repo.push()
    assert source.sync_blocking() is False
    assert source.commit == good and source.condition["reason"] == Reason.PATH_NOT_FOUND
    assert "name: Export" in read(source)
    repo.delete_remote_ref()
    assert source.sync_blocking() is False
    assert source.commit == good and source.condition["reason"] == Reason.REF_NOT_FOUND
    assert good[:12] in source.last_error


def test_a_restart_keeps_the_commit_already_checked_out(repo, tmp_path):
    first = source_of(repo, tmp_path / "state")
    first.sync_blocking()
    repo.delete_remote_ref()
    again = source_of(repo, tmp_path / "state")
    assert again.sync_blocking() is False
    assert again.commit == first.commit and again.hold().commit == first.commit
    assert "name: Export" in read(again)


# --- signed commits ------------------------------------------------------------------------------


def ssh_key(folder: Path, name: str) -> Path:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def test_only_heads_signed_by_an_allowed_ssh_key_are_followed(repo, tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    admin, stranger = ssh_key(keys, "admin"), ssh_key(keys, "stranger")
    allowed = keys / "allowed_signers"
    allowed.write_text(f'admin@example.org namespaces="git" {(keys / "admin.pub").read_text()}')
    signed_by = {k: ["gpg.format=ssh", f"user.signingkey={k}"] for k in (admin, stranger)}
    trusted = repo.commit({"integrations.d/export.yaml": export("Signed")}, sign=signed_by[admin])
    repo.push()
    source = source_of(repo, tmp_path / "state", verify=SignerPolicy.of(allowed))
    assert source.sync_blocking() is True and source.commit == trusted

    unsigned = repo.commit({"integrations.d/export.yaml": export("Unsigned")})
    repo.push()
    assert source.sync_blocking() is False
    assert source.commit == trusted and "name: Signed" in read(source)
    assert source.condition["reason"] == Reason.UNSIGNED_COMMIT
    assert f"commit {unsigned[:12]} is not signed" in source.condition["message"]

    untrusted = repo.commit({"integrations.d/export.yaml": export("Stranger")}, sign=signed_by[stranger])
    repo.push()
    assert source.sync_blocking() is False
    assert source.commit == trusted and source.condition["reason"] == Reason.UNTRUSTED_SIGNER
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(keys / "stranger.pub")], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert untrusted[:12] in source.condition["message"] and fingerprint in source.condition["message"]

    again = repo.commit({"integrations.d/export.yaml": export("Signed again")}, sign=signed_by[admin])
    repo.push()
    assert source.sync_blocking() is True
    assert source.commit == again and "Signed again" in read(source)


def test_only_heads_signed_by_an_allowed_openpgp_key_are_followed(repo, tmp_path):
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {"GNUPGHOME": str(home)}
    gpg = ["gpg", "--batch", "--quiet", "--passphrase", ""]
    for who in ("Admin <admin@example.org>", "Stranger <stranger@example.org>"):
        generate = [*gpg, "--quick-gen-key", who, "ed25519", "sign", "never"]
        subprocess.run(generate, env={**os.environ, **env}, check=True)
    exported = subprocess.run(
        ["gpg", "--armor", "--export", "admin@example.org"], env={**os.environ, **env}, capture_output=True, check=True
    ).stdout
    allowed = tmp_path / "allowed.asc"
    allowed.write_bytes(exported)
    source = source_of(repo, tmp_path / "state", verify=SignerPolicy.of(allowed))
    assert source.sync_blocking() is False and source.condition["reason"] == Reason.UNSIGNED_COMMIT

    def signed(name: str, by: str) -> str:
        return repo.commit(
            {"integrations.d/export.yaml": export(name)}, sign=["gpg.format=openpgp", f"user.signingkey={by}"], env=env
        )

    try:
        trusted = signed("Signed", "admin@example.org")
        repo.push()
        assert source.sync_blocking() is True and source.commit == trusted
        stranger = signed("Stranger", "stranger@example.org")
        repo.push()
        assert source.sync_blocking() is False and source.commit == trusted
        assert source.condition["reason"] == Reason.UNTRUSTED_SIGNER and stranger[:12] in source.condition["message"]
    finally:  # the agent that signing started
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={**os.environ, **env}, check=False)


# --- over HTTP: token, remote down and up ---------------------------------------------------------


def test_http_remote_with_a_token_down_and_up(repo, tmp_path):
    server = GitHttpServer(repo.bare.parent, token=TOKEN)
    try:
        spec = parse_source(server.url())
        anonymous = GitSource(spec, tmp_path / "anonymous")
        assert anonymous.sync_blocking() is False
        assert anonymous.condition["reason"] == Reason.AUTHENTICATION_FAILED
        source = GitSource(spec, tmp_path / "state", credentials=lambda: Credentials(token=TOKEN))
        assert source.sync_blocking() is True
        good = source.commit
        server.stop()
        repo.commit({"integrations.d/export.yaml": export("While down")})
        repo.push()
        assert source.sync_blocking() is False
        assert source.commit == good and source.condition["reason"] == Reason.UNREACHABLE
        assert TOKEN not in json.dumps(source.status())
        server.start()  # the same port
        assert source.sync_blocking() is True
        assert source.commit == repo.head() and "While down" in read(source)
        assert source.last_error is None
    finally:
        server.stop()


# --- the daemon following a repository -----------------------------------------------------------


@pytest.fixture
def served(repo: Repo) -> Iterator[GitHttpServer]:
    server = GitHttpServer(repo.bare.parent)
    yield server
    server.stop()


def start_daemon(workdir: Path, url: str, *extra: str) -> Daemon:
    workdir.mkdir(exist_ok=True)
    daemon = Daemon(
        workdir,
        "--source",
        url,
        *extra,
        env={"ADMIN_SECRET": SECRET, "SOURCE_WEBHOOK_SECRET": WEBHOOK_SECRET},
    )
    daemon.wait_ready()
    return daemon


def integration(client: httpx.Client, integration_id: str = "export") -> dict[str, Any]:
    response = client.get(f"/api/integrations/{integration_id}")
    return response.json() if response.status_code == 200 else {}


def test_the_first_fetch_is_taken_over_by_the_polling_loop_not_repeated(repo, served, tmp_path):
    source = GitSource(parse_source(served.url()), tmp_path / "state", interval=3600)
    changes: list[str] = []
    source.on_change = lambda: changes.append("change")

    async def scenario() -> int:
        await source.begin()
        after_first = served.requests
        stop = asyncio.Event()
        running = asyncio.create_task(source.run(stop))
        while source.next_fetch_at is None:  # set once run() has had its first fetch
            await asyncio.sleep(0.01)
        stop.set()
        await running
        return after_first

    after_first = asyncio.run(scenario())
    assert after_first > 0 and read(source) == export()
    assert served.requests == after_first, "the polling loop fetched again right after the first fetch"
    assert changes == ["change"], "one switch, one pass"


def test_daemon_applies_pushes_keeps_the_last_good_commit_and_follows_a_force_push_back(repo, served, tmp_path):
    first = repo.head()
    daemon = start_daemon(tmp_path / "daemon", served.url(), "--source-interval", "1s")
    try:
        with httpx.Client(base_url=daemon.url, headers={"x-admin-secret": SECRET}, timeout=10) as client:
            applied = integration(client)
            assert applied["lastAppliedRevision"]["commit"] == first
            source = client.get("/api/integrations/health/status").json()["config"]["source"]
            assert source["commit"] == first and source["ref"] == "main"

            renamed = repo.commit({"integrations.d/export.yaml": export("Renamed")})
            repo.push()
            until(lambda: integration(client)["lastAppliedRevision"]["commit"] == renamed, "the push was not applied")
            assert integration(client)["spec"]["name"] == "Renamed"

            broken = repo.commit({"integrations.d/export.yaml": BROKEN})
            repo.push()
            refused = until(
                lambda: (i := integration(client))["lastAttemptedRevision"]["commit"] == broken and i,
                "the broken commit was not attempted",
            )
            assert refused["lastAppliedRevision"]["commit"] == renamed  # the last good one runs
            conditions = {c["type"]: c for c in refused["conditions"]}
            assert conditions["Ready"]["status"] == "True"  # generation 2, the last good version
            assert conditions["Synced"]["reason"] == "ValidationFailed"

            repo.reset(renamed)
            repo.push(force=True)
            back = until(
                lambda: (i := integration(client))["lastAttemptedRevision"]["commit"] == renamed and i,
                "the force-push back was not followed",
            )
            assert next(c for c in back["conditions"] if c["type"] == "Ready")["status"] == "True"
            status = client.get("/api/integrations/health/status").json()
            assert status["config"]["source"]["commit"] == renamed
    finally:
        daemon.stop()


def github_push(ref: str, secret: str = WEBHOOK_SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"ref": ref, "after": "0" * 40}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"x-github-event": "push", "x-hub-signature-256": signature, "content-type": "application/json"}


def test_push_webhooks_fetch_at_once_and_a_bad_signature_is_refused(repo, served, tmp_path):
    # polling once an hour: only the webhook can make the change live within the test's deadline
    daemon = start_daemon(
        tmp_path / "daemon",
        served.url(),
        "--source-interval",
        "1h",
        "--source-webhook-secret",
        "${env:SOURCE_WEBHOOK_SECRET}",
    )
    try:
        with httpx.Client(base_url=daemon.url, headers={"x-admin-secret": SECRET}, timeout=10) as client:
            pushed = repo.commit({"integrations.d/export.yaml": export("Pushed")})
            repo.push()
            body, headers = github_push("refs/heads/main", secret="not-the-secret")
            refused = httpx.post(f"{daemon.url}/api/source/webhook", content=body, headers=headers)
            assert refused.status_code == 401
            assert refused.json()["type"].endswith("bad-signature")

            body, headers = github_push("refs/heads/feature")
            other = httpx.post(f"{daemon.url}/api/source/webhook", content=body, headers=headers)
            assert other.status_code == 200 and other.json()["fetch"] is False

            body, headers = github_push("refs/heads/main")
            accepted = httpx.post(f"{daemon.url}/api/source/webhook", content=body, headers=headers)
            assert accepted.status_code == 202 and accepted.json()["fetch"] is True
            until(lambda: integration(client)["lastAppliedRevision"]["commit"] == pushed, "the webhook did not fetch")

            gitea = repo.commit({"integrations.d/export.yaml": export("Gitea")})
            repo.push()
            body = json.dumps({"ref": "refs/heads/main"}).encode()
            mac = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
            answer = httpx.post(
                f"{daemon.url}/api/source/webhook",
                content=body,
                headers={"x-gitea-event": "push", "x-github-event": "push", "x-gitea-signature": mac},
            )
            assert answer.status_code == 202
            until(
                lambda: integration(client)["lastAppliedRevision"]["commit"] == gitea, "the Gitea push was not fetched"
            )

            gitlab = repo.commit({"integrations.d/export.yaml": export("GitLab")})
            repo.push()
            wrong = httpx.post(
                f"{daemon.url}/api/source/webhook",
                content=body,
                headers={"x-gitlab-event": "Push Hook", "x-gitlab-token": "wrong"},
            )
            assert wrong.status_code == 401
            answer = httpx.post(
                f"{daemon.url}/api/source/webhook",
                content=body,
                headers={"x-gitlab-event": "Push Hook", "x-gitlab-token": WEBHOOK_SECRET},
            )
            assert answer.status_code == 202
            until(
                lambda: integration(client)["lastAppliedRevision"]["commit"] == gitlab,
                "the GitLab push was not fetched",
            )
    finally:
        daemon.stop()
    assert WEBHOOK_SECRET not in daemon.log()


def test_status_and_plan_against_the_source(repo, served, tmp_path):
    daemon = start_daemon(tmp_path / "daemon", served.url(), "--source-interval", "1h")
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ADMIN_SECRET": SECRET}
        status = subprocess.run(
            [sys.executable, "-m", "reconciler", "status", "--server", daemon.url],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert f"source: http://127.0.0.1:{served.port}/config.git ref main path integrations.d" in status.stdout
        assert repo.head()[:12] in status.stdout

        repo.commit({"integrations.d/export.yaml": export("Planned"), "integrations.d/more.yaml": export("More")})
        repo.push()
        plan = subprocess.run(
            [sys.executable, "-m", "reconciler", "plan", "--source", served.url(), "--server", daemon.url],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert plan.returncode == 1, plan.stderr
        assert "+ more" in plan.stdout and "~ export" in plan.stdout
        assert repo.head()[:12] in plan.stdout
    finally:
        daemon.stop()


def test_unusable_source_settings_exit_2_naming_the_flag(tmp_path):
    empty = tmp_path / "allowed_signers"
    empty.write_text("# nobody yet\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for flags, said in (
        (["--source", "git+https://me:hunter2@git.example.org/c.git"], "--source-token-file"),
        (["--source", f"git+file://{tmp_path}/c.git", "--source-verify", str(empty)], "holds no key"),
        (["--source", f"git+file://{tmp_path}/c.git", "--source-token", "plain-token"], "never the secret itself"),
        (["--source", f"git+file://{tmp_path}/c.git", "--source-interval", "0s"], "--source-interval"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "reconciler", "run", "--listen", "127.0.0.1:0", *flags],
            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2 and said in done.stderr, (flags, done.stderr)
        assert "hunter2" not in done.stderr and "plain-token" not in done.stderr


# --- over SSH: OpenSSH's sshd on 127.0.0.1 --------------------------------------------------------


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: in CI the SSH tests must run (.ci/run installs openssh-server and openssh-client)")
    pytest.skip(reason)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    """sshd on 127.0.0.1 as the current user, with a host key and an authorized client key of its own."""
    missing = [tool for tool in ("ssh", "ssh-keygen") if shutil.which(tool) is None]
    if SSHD is None or missing:
        tools = ", ".join((["sshd"] if SSHD is None else []) + missing)
        _unavailable(f"{tools} not installed (apt-get install openssh-server openssh-client)")
    assert SSHD is not None
    server = SshServer(tmp_path / "sshd", SSHD)
    yield server
    server.stop()


def ssh_source_flags(server: SshServer, known_hosts: Path) -> list[str]:
    """The daemon's flags for `server`: its client key, the known hosts, fetching on push webhooks."""
    return [
        *("--source-ssh-key", str(server.client_key), "--source-known-hosts", str(known_hosts)),
        *("--source-interval", "1h", "--source-webhook-secret", "${env:SOURCE_WEBHOOK_SECRET}"),
    ]


def push_webhook(daemon: Daemon) -> None:
    body, headers = github_push("refs/heads/main")
    assert httpx.post(f"{daemon.url}/api/source/webhook", content=body, headers=headers).status_code == 202


def source_status(client: httpx.Client) -> dict[str, Any]:
    return dict(client.get("/api/integrations/health/status").json()["config"]["source"])


def test_daemon_follows_a_repository_over_ssh(repo, sshd, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts())
    first = repo.head()
    daemon = start_daemon(tmp_path / "daemon", sshd.url(repo.bare), *ssh_source_flags(sshd, known_hosts))
    try:
        with httpx.Client(base_url=daemon.url, headers={"x-admin-secret": SECRET}, timeout=10) as client:
            assert integration(client)["lastAppliedRevision"]["commit"] == first
            source = source_status(client)
            assert source["url"] == f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{repo.bare}"
            assert source["commit"] == first and source["conditions"][0]["reason"] == Reason.FOLLOWING

            over_ssh = repo.commit({"integrations.d/export.yaml": export("Over SSH")})
            repo.push()
            push_webhook(daemon)
            until(lambda: integration(client)["lastAppliedRevision"]["commit"] == over_ssh, "the push was not fetched")
            assert integration(client)["spec"]["name"] == "Over SSH"
    finally:
        daemon.stop()
    assert "Accepted publickey for" in sshd.log()  # through sshd, with the client key


def test_an_ssh_server_with_another_host_key_is_refused_until_known_hosts_has_its_key(repo, sshd, tmp_path):
    impostor = ssh_keygen(tmp_path / "impostor")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts(impostor.with_suffix(".pub")))
    daemon = start_daemon(tmp_path / "daemon", sshd.url(repo.bare), *ssh_source_flags(sshd, known_hosts))
    try:
        with httpx.Client(base_url=daemon.url, headers={"x-admin-secret": SECRET}, timeout=10) as client:
            source = source_status(client)
            assert source["commit"] is None and integration(client) == {}
            condition = source["conditions"][0]
            assert condition["status"] == "False" and condition["reason"] == Reason.HOST_KEY_REJECTED
            assert "Host key verification failed" in condition["message"]
            assert "--source-known-hosts" in condition["message"] and source["lastError"] == condition["message"]
            assert "Accepted publickey" not in sshd.log()  # refused before the client key was offered

            known_hosts.write_text(sshd.known_hosts())  # the operator adds the server's real key
            push_webhook(daemon)
            applied = until(lambda: integration(client), "the source did not fetch once the host key was known")
            assert applied["lastAppliedRevision"]["commit"] == repo.head()
            assert source_status(client)["lastError"] is None
    finally:
        daemon.stop()


def test_an_ssh_server_refuses_a_key_it_does_not_authorize(repo, sshd, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts())
    stranger = ssh_keygen(tmp_path / "stranger")
    spec = parse_source(sshd.url(repo.bare))

    def source(name: str, key: Path) -> GitSource:
        return GitSource(spec, tmp_path / name, credentials=lambda: Credentials(ssh_key=key, known_hosts=known_hosts))

    refused = source("refused", stranger)
    assert refused.sync_blocking() is False
    assert refused.condition["reason"] == Reason.AUTHENTICATION_FAILED
    assert "Permission denied (publickey)" in refused.condition["message"]
    accepted = source("accepted", sshd.client_key)
    assert accepted.sync_blocking() is True and accepted.commit == repo.head()
