"""File integrations against the local file system and S3 (moto's server on 127.0.0.1):
JSONL and CSV objects, path patterns, rollover, atomic writes, retried units, attachments,
`file.received`, the test check, an S3 endpoint that goes away, and the bundled examples."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.manifests.models import FileIntegration
from reconciler.reconcile.loop import AppliedIntegration
from reconciler.registry import Resolved
from reconciler.sinks.files import FileSink
from tests.conftest import ROOT
from tests.peers import DISGUISED_LOOPBACK, Peer, Reply
from tests.pipeline import Pipeline, integration

KEY, SECRET = "AKIDTESTFILESINK", "file-sink-test-secret-value"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
DAY = "2024-01-15"
USER = {"userId": 7, "email": "ada@example.edu"}


def run(scenario: Any) -> None:
    asyncio.run(scenario())


# --- S3 on loopback ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1; dummy credentials in the environment for this module only."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as env:
        for name, value in {**CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1"}.items():
            env.setenv(name, value)
        env.delenv("AWS_PROFILE", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            yield f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        finally:
            server.stop()


def bucket(endpoint: str) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    client(endpoint).create_bucket(Bucket=name)
    return name


def client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET)


def objects(endpoint: str, name: str, prefix: str = "") -> dict[str, bytes]:
    s3 = client(endpoint)
    listed = s3.list_objects_v2(Bucket=name, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=name, Key=o["Key"])["Body"].read() for o in listed}


def s3_spec(endpoint: str, name: str, config: str = "", extra: str = "", events: str = '["*"]') -> str:
    lines = "".join(f"  {line}\n" for line in config.strip().splitlines())
    return (
        integration(f"""
        name: S3 target
        type: file
        config:
          url: s3://{name}/cms
          allowPrivateNetwork: true  # moto's server is on loopback
          storageOptions:
            key: ${{env:AWS_ACCESS_KEY_ID}}
            secret: ${{env:AWS_SECRET_ACCESS_KEY}}
            endpoint_url: {endpoint}
        """)
        + lines
        + extra
        + f"webhooks:\n  - events: {events}\n"
    )


def without_private_network(text: str) -> str:
    return text.replace("  allowPrivateNetwork: true  # moto's server is on loopback\n", "")


def local_spec(root: Path, config: str = "", extra: str = "", events: str = '["*"]') -> str:
    lines = "".join(f"  {line}\n" for line in config.strip().splitlines())
    head = integration(f"""
        name: Local target
        type: file
        config:
          url: file://{root}
        """)
    return head + lines + extra + f"webhooks:\n  - events: {events}\n"


def applied(text: str, integration_id: str = "t", environ: dict[str, str] | None = None) -> AppliedIntegration:
    """An applied integration as the reconciler hands it to the sinks."""
    spec = FileIntegration.model_validate(yaml.safe_load(text))
    values = {f"${{env:{k}}}": v for k, v in (environ or {}).items()}
    return AppliedIntegration(integration_id, 1, spec, Resolved(values, uuid.uuid4().hex))


def envelope(number: int, event: str = "user.login", data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": f"evt_{number:028x}",
        "event": event,
        "timestamp": f"{DAY}T10:30:{number % 60:02d}.000Z",
        "data": data if data is not None else {"userId": number},
    }


def visible(root: Path) -> dict[str, Path]:
    """Files a reader globbing for exports sees (hidden temporaries excluded), by relative path."""
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}


def jsonl(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.decode().splitlines()]


def events_named(p: Pipeline, event: str) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    with p.store.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT data FROM events WHERE event = :e"), {"e": event}).all()
    return [json.loads(r[0]) if isinstance(r[0], str) else r[0] for r in rows]


def attempts(p: Pipeline, integration_id: str) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    with p.store.engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT outcome, error, response_excerpt FROM attempts WHERE integration_id = :i ORDER BY at"),
            {"i": integration_id},
        ).all()
    return [{"outcome": r[0], "error": r[1], "excerpt": r[2]} for r in rows]


# --- formats, patterns, rollover --------------------------------------------------------------------


def test_jsonl_objects_by_event_and_date_on_the_local_file_system(tmp_path):
    out = tmp_path / "out"

    async def scenario() -> None:
        spec = local_spec(out, 'path: "exports/{event}/{year}/{date}.jsonl"')
        async with Pipeline(tmp_path, {"t.yaml": spec}) as p:
            await p.intake.emit("user.login", {"userId": 1}, timestamp=f"{DAY}T08:00:00.000Z")
            await p.intake.emit("user.login", {"userId": 2}, timestamp=f"{DAY}T09:00:00.000Z")
            await p.intake.emit("grade.published", {"studentId": 3, "moduleId": 4, "grade": "A"})
            await p.until(lambda: p.statuses("t") == {"delivered": 3}, "three deliveries")

    run(scenario)
    files = visible(out)
    logins = sorted(n for n in files if n.startswith(f"exports/user.login/2024/{DAY}."))
    assert len(logins) == 2 and all(n.endswith(".jsonl") for n in logins), files
    records = [r for n in logins for r in jsonl(files[n].read_bytes())]
    assert sorted(r["data"]["userId"] for r in records) == [1, 2]
    assert set(records[0]) == {"id", "event", "timestamp", "data"}
    [grade] = [n for n in files if n.startswith("exports/grade.published/")]
    assert jsonl(files[grade].read_bytes())[0]["data"]["grade"] == "A"
    assert not [p for p in out.rglob(".*")], "no temporary files left behind"


def test_csv_objects_with_a_mapping_and_with_the_default_columns(tmp_path):
    mapped, plain = tmp_path / "mapped", tmp_path / "plain"

    async def scenario() -> None:
        files = {
            "mapped.yaml": local_spec(
                mapped, "format: csv\nmapping:\n  user: data.userId\n  mail: data.email\n  kind: event\nbatchSize: 10"
            ),
            "plain.yaml": local_spec(plain, "format: csv"),
        }
        async with Pipeline(tmp_path, files) as p:
            await p.intake.emit("user.registered", {"userId": 1, "email": "a@example.edu", "name": 'Ada "A", L'})
            await p.intake.emit("user.registered", {"userId": 2, "email": "b@example.edu"})
            await p.until(lambda: p.statuses("mapped") == p.statuses("plain") == {"delivered": 2})

    run(scenario)
    rows = [row for f in visible(mapped).values() for row in csv.DictReader(io.StringIO(f.read_text()))]
    assert sorted(rows, key=lambda r: r["user"]) == [
        {"user": "1", "mail": "a@example.edu", "kind": "user.registered"},
        {"user": "2", "mail": "b@example.edu", "kind": "user.registered"},
    ]
    names = list(visible(plain))
    assert all(n.startswith("user.registered/") and n.endswith(".csv") for n in names), names
    rows = [row for f in visible(plain).values() for row in csv.DictReader(io.StringIO(f.read_text()))]
    assert list(rows[0]) == ["id", "event", "timestamp", "data"]
    assert sorted(json.loads(r["data"])["userId"] for r in rows) == [1, 2]
    assert 'Ada "A", L' in [json.loads(r["data"]).get("name") for r in rows]


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_escaped_unless_opted_out(tmp_path):
    escaped, raw = tmp_path / "escaped", tmp_path / "raw"
    mapping = "format: csv\nmapping:\n  name: data.name\n  score: data.score\nbatchSize: 10"
    names = ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\tTab", "Ada", "a=b"]

    async def scenario() -> None:
        files = {
            "escaped.yaml": local_spec(escaped, mapping),
            "raw.yaml": local_spec(raw, mapping + "\ncsvFormulaEscape: false"),
        }
        async with Pipeline(tmp_path, files) as p:
            for name in names:
                data = {"userId": 1, "email": "a@example.edu", "name": name, "score": -5}
                await p.intake.emit("user.registered", data)
            await p.until(lambda: p.statuses("escaped") == p.statuses("raw") == {"delivered": len(names)})

    run(scenario)

    def cells(root: Path) -> list[dict[str, str]]:
        return [row for f in visible(root).values() for row in csv.DictReader(io.StringIO(f.read_text()))]

    assert sorted(r["name"] for r in cells(escaped)) == sorted(
        ['\'=HYPERLINK("http://x")', "'+1", "'-2+3", "'@SUM(A1)", "'\tTab", "Ada", "a=b"]
    )
    assert {r["score"] for r in cells(escaped)} == {"-5"}  # a number is never a formula
    assert sorted(r["name"] for r in cells(raw)) == sorted(names)


def test_rollover_splits_a_unit_and_a_retried_unit_overwrites_instead_of_duplicating(tmp_path):
    out = tmp_path / "out"
    target = applied(local_spec(out, "rolloverSize: 400\nbatchSize: 50"))
    batch = [envelope(n) for n in range(12)]

    async def scenario() -> None:
        sink = FileSink()
        try:
            first = await sink.write(target, batch, "bat_unit1")
            assert first.ok, first.error
            snapshot = {n: p.read_bytes() for n, p in visible(out).items()}
            again = await sink.write(target, batch, "bat_unit1")  # the retry of the same unit
            assert again.ok, again.error
            assert {n: p.read_bytes() for n, p in visible(out).items()} == snapshot
        finally:
            await sink.close()

    run(scenario)
    files = visible(out)
    assert len(files) > 1, "split at rolloverSize"
    assert all(f.stat().st_size <= 400 for f in files.values())
    assert sorted(files) == [f"user.login/{DAY}.bat_unit1-{n:03d}.jsonl" for n in range(1, len(files) + 1)]
    records = [r for n in sorted(files) for r in jsonl(files[n].read_bytes())]
    assert [r["id"] for r in records] == [e["id"] for e in batch], "every record once, in order"


def test_a_reader_never_sees_a_partial_object(tmp_path):
    out = tmp_path / "out"
    target = applied(local_spec(out, 'path: "{event}.jsonl"\nbatchSize: 100'))
    big = "x" * 50_000
    units = [[envelope(n * 20 + i, data={"userId": i, "pad": big}) for i in range(20)] for n in range(15)]
    problems: list[str] = []
    reads = 0
    done = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not done.is_set():
            for name, path in visible(out).items():
                with contextlib.suppress(FileNotFoundError):
                    lines = path.read_bytes().split(b"\n")
                    reads += 1
                    if lines[-1] != b"" or len(lines) != 21:
                        problems.append(f"{name}: {len(lines)} pieces")
                    for line in lines[:-1]:
                        json.loads(line)

    async def scenario() -> None:
        sink = FileSink()
        try:
            for number, unit in enumerate(units):
                result = await sink.write(target, unit, f"bat_{number:04d}")
                assert result.ok, result.error
        finally:
            await sink.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        run(scenario)
    finally:
        done.set()
        thread.join(30)
    assert problems == []
    assert reads > 0
    assert len(visible(out)) == 15
    assert not list(out.rglob(".*")), "no temporary names left"


# --- S3 ---------------------------------------------------------------------------------------------


def test_s3_objects_jsonl_and_csv_and_the_check_writes_nothing(tmp_path, s3):
    name = bucket(s3)

    async def scenario() -> None:
        files = {
            "lines.yaml": s3_spec(s3, name, 'path: "lines/{event}/{date}.jsonl"\nbatchSize: 10'),
            "table.yaml": s3_spec(s3, name, 'format: csv\npath: "table/{date}/{hour}.csv"'),
        }
        async with Pipeline(tmp_path, files, environ=CREDENTIALS) as p:
            sink = p.engine.records["file"]
            before = await sink.check(p.reconciler.snapshot.applied["lines"])
            assert before.ok, before.error
            assert "does not exist yet" in (before.excerpt or "")
            assert objects(s3, name) == {}, "the check writes nothing"
            for n in range(3):
                await p.intake.emit("user.login", {"userId": n}, timestamp=f"{DAY}T10:00:0{n}.000Z")
            await p.until(lambda: p.statuses("lines") == p.statuses("table") == {"delivered": 3})
            after = await sink.check(p.reconciler.snapshot.applied["lines"])
            assert after.ok and "holds 2 entries" in (after.excerpt or ""), after
            for result in (before, after):
                assert SECRET not in str(result) and KEY not in str(result)

    run(scenario)
    stored = objects(s3, name, "cms/")
    lines = {k: v for k, v in stored.items() if k.startswith(f"cms/lines/user.login/{DAY}.")}
    assert sorted(r["data"]["userId"] for v in lines.values() for r in jsonl(v)) == [0, 1, 2]
    tables = {k: v for k, v in stored.items() if k.startswith(f"cms/table/{DAY}/10.")}
    assert len(tables) == 3 and all(k.endswith(".csv") for k in tables)
    rows = [r for v in tables.values() for r in csv.DictReader(io.StringIO(v.decode()))]
    assert sorted(r["event"] for r in rows) == ["user.login"] * 3


def test_check_reports_a_missing_bucket_without_creating_it(s3, tmp_path):
    missing = applied(s3_spec(s3, "no-such-bucket-here"), environ=CREDENTIALS)
    local = applied(local_spec(tmp_path / "not" / "yet"))

    async def scenario() -> None:
        sink = FileSink()
        try:
            result = await sink.check(missing)
            assert not result.ok and "bucket" in (result.error or ""), result
            assert SECRET not in (result.error or "")
            fresh = await sink.check(local)
            assert fresh.ok and "created by the first write" in (fresh.excerpt or ""), fresh
        finally:
            await sink.close()

    run(scenario)
    assert "no-such-bucket-here" not in [b["Name"] for b in client(s3).list_buckets()["Buckets"]]
    assert not (tmp_path / "not").exists()


def test_a_storage_endpoint_on_a_private_address_is_refused_unless_allowed(s3, tmp_path):
    """storageOptions.endpoint_url comes from a pull request like any URL: loopback, private and
    link-local endpoints are refused (SSRF) unless allowPrivateNetwork says otherwise."""
    # validation refuses a literal loopback endpoint; one behind a reference reaches the sink
    refused = applied(
        without_private_network(s3_spec(s3, "exports")).replace(f"endpoint_url: {s3}", "endpoint_url: ${env:S3}"),
        environ={**CREDENTIALS, "S3": s3},
    )
    allowed = applied(s3_spec(s3, "exports"), environ=CREDENTIALS)
    client(s3).create_bucket(Bucket="exports")

    async def scenario() -> None:
        sink = FileSink()
        try:
            envelope = {"id": "evt_1", "event": "user.login", "timestamp": "2026-01-15T10:30:00Z", "data": {}}
            result = await sink.write(refused, [envelope], "evt_1")
            assert not result.ok and "allowPrivateNetwork" in (result.error or ""), result
            assert not result.endpoint_failure
            assert (await sink.write(allowed, [envelope], "evt_1")).ok
        finally:
            await sink.close()

    run(scenario)
    assert len(client(s3).list_objects_v2(Bucket="exports").get("Contents", [])) == 1


def test_a_storage_endpoint_that_turns_private_after_the_check_is_refused_when_connecting(s3, monkeypatch):
    """DNS rebinding: the endpoint's name was public when the storage was opened, and is
    loopback when the client connects. The storage client's own connections are checked,
    so the write is refused and moto's server on loopback is never reached."""
    from reconciler.sinks.files import target

    monkeypatch.setattr(target, "_require_public", lambda *args, **kwargs: None)  # the open-time check passed
    spec = without_private_network(s3_spec(s3, "rebound")).replace(f"endpoint_url: {s3}", "endpoint_url: ${env:S3}")
    rebound = applied(spec, environ={**CREDENTIALS, "S3": s3})
    client(s3).create_bucket(Bucket="rebound")

    async def scenario() -> None:
        sink = FileSink()
        try:
            result = await sink.write(rebound, [envelope(1)], "evt_1")
            assert not result.ok and "allowPrivateNetwork" in (result.error or ""), result
            assert not result.endpoint_failure, "our config's problem, not the storage's"
        finally:
            await sink.close()

    run(scenario)
    assert not client(s3).list_objects_v2(Bucket="rebound").get("Contents")


def test_a_storage_endpoint_that_does_not_resolve_is_not_waved_through(monkeypatch):
    """An endpoint_url whose name does not resolve cannot be checked: opening the storage fails
    instead of leaving the check to a later lookup that may answer differently."""
    from reconciler.sinks.files.target import open_target

    def no_such_name(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)  # no lookup leaves the machine
    spec = without_private_network(s3_spec("https://minio.invalid:9000", "exports"))
    integration = applied(spec, environ=CREDENTIALS)
    resolved = integration.resolved
    with pytest.raises(OSError, match="does not resolve"):
        open_target(integration.spec.config, resolved, 5.0)


@pytest.mark.parametrize("form", ["127.0.0.1", *DISGUISED_LOOPBACK])
def test_an_http_storage_url_on_loopback_is_refused(tmp_path, peer, form):
    """An http(s):// file URL is an outbound request like any other. Validation refuses this
    one; the sink refuses it too when it gets there another way (here: the model, bypassed)."""
    base = applied(local_spec(tmp_path / "exports"))
    config = base.spec.config.model_copy(update={"url": f"http://{form}:{peer.port}/exports"})
    integration = AppliedIntegration("t", 1, base.spec.model_copy(update={"config": config}), base.resolved)

    async def scenario() -> None:
        sink = FileSink()
        try:
            for result in (await sink.check(integration), await sink.write(integration, [envelope(1)], "evt_1")):
                assert not result.ok and "allowPrivateNetwork" in (result.error or ""), result
        finally:
            await sink.close()

    run(scenario)
    assert not peer.seen


class Proxy:
    """A loopback TCP proxy the test stops and starts again on the same port: storage that goes away."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        # the port is held from the start (bound, not listening: connections are refused), so
        # nothing else can take it between picking it and the first start()
        self._reserved: socket.socket | None = socket.socket()
        self._reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._reserved.bind(("127.0.0.1", 0))
        self.port = self._reserved.getsockname()[1]
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []

    def start(self) -> None:
        listener, self._reserved = self._reserved, None
        if listener is None:
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            self._open += [downstream, upstream]
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_an_unreachable_s3_endpoint_fails_the_attempt_then_delivers_once_back(tmp_path, s3):
    name = bucket(s3)
    proxy = Proxy(int(s3.rsplit(":", 1)[1]))
    spec = s3_spec(
        f"http://127.0.0.1:{proxy.port}", name, "timeout: 5s", extra="retry:\n  maxAttempts: 30\n  schedule: [1s]\n"
    )

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"t.yaml": spec}, environ=CREDENTIALS) as p:
            await p.intake.emit("user.login", {"userId": 1})
            await p.until(lambda: any(a["outcome"] == "failed" for a in attempts(p, "t")), "a failed attempt")
            proxy.start()
            await p.until(lambda: p.statuses("t") == {"delivered": 1}, "delivered once the endpoint is back", 40)
            failed = [a for a in attempts(p, "t") if a["outcome"] == "failed"]
            assert failed and all(SECRET not in (a["error"] or "") and KEY not in (a["error"] or "") for a in failed)

    try:
        run(scenario)
    finally:
        proxy.stop()
    stored = objects(s3, name)
    assert len(stored) == 1
    [body] = stored.values()
    assert [r["data"]["userId"] for r in jsonl(body)] == [1]


# --- attachments ------------------------------------------------------------------------------------


def note(peer: Peer, path: str, note_id: int = 314) -> dict[str, Any]:
    return {"noteId": note_id, "moduleId": 42, "fileUrl": f"{peer.url}{path}", "fileName": "week 1.pdf"}


def test_an_uploaded_notes_file_is_copied_next_to_its_record(tmp_path, s3, peer):
    name = bucket(s3)
    content = "%PDF-1.4 slides " * 500
    peer.script = lambda seen: Reply(body=content, headers={"Content-Type": "application/pdf"})
    spec = s3_spec(s3, name, "copyAttachments: true", events="[note.uploaded]")  # s3_spec allows loopback

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"t.yaml": spec}, environ=CREDENTIALS) as p:
            accepted = await p.intake.emit("note.uploaded", note(peer, "/files/notes/314/week1.pdf"))
            await p.until(lambda: p.statuses("t") == {"delivered": 1})
            stored = objects(s3, name)
            copy = f"cms/note.uploaded/attachments/{accepted.id}/week_1.pdf"
            assert stored[copy] == content.encode()
            [record_key] = [k for k in stored if k.endswith(".jsonl")]
            [record] = jsonl(stored[record_key])
            assert record["attachment"]["path"] == copy.removeprefix("cms/")
            assert record["attachment"]["size"] == len(content)
            assert record["attachment"]["url"] == f"s3://{name}/{copy}"

    run(scenario)
    assert [s.path for s in peer.seen] == ["/files/notes/314/week1.pdf"]


def test_attachments_too_large_or_on_private_addresses_are_refused_clearly(tmp_path, peer):
    peer.script = lambda seen: Reply(body="y" * 4096)
    files = {
        "small.yaml": local_spec(
            tmp_path / "small",
            "copyAttachments: true\nallowPrivateNetwork: true\nmaxAttachmentSize: 1KiB",
            extra="retry:\n  maxAttempts: 1\n",
        ),
        "closed.yaml": local_spec(tmp_path / "closed", "copyAttachments: true", extra="retry:\n  maxAttempts: 1\n"),
    }

    async def scenario() -> None:
        async with Pipeline(tmp_path, files) as p:
            await p.intake.emit("note.uploaded", note(peer, "/big.pdf"))
            await p.until(lambda: p.statuses("small") == p.statuses("closed") == {"dead": 1})
            [small] = attempts(p, "small")
            assert "larger than maxAttachmentSize (1024 bytes)" in small["error"], small
            [closed] = attempts(p, "closed")
            assert "allowPrivateNetwork" in closed["error"], closed

    run(scenario)
    assert [s.path for s in peer.seen] == ["/big.pdf"], "the private address is never contacted"
    assert not visible(tmp_path / "small") if (tmp_path / "small").exists() else True
    assert not (tmp_path / "closed").exists()


# --- file.received ----------------------------------------------------------------------------------


def test_file_received_once_per_new_file_across_scans_and_a_restart(tmp_path):
    root = tmp_path / "drop"
    (root / "incoming" / "2024").mkdir(parents=True)
    (root / "incoming" / "roster.csv").write_text("id,name\n1,Ada\n")
    (root / "incoming" / "2024" / "grades.csv").write_text("id,grade\n1,A\n")
    (root / "incoming" / ".partial.tmp").write_text("half")
    (root / "incoming" / f"{DAY}.evt_{'0' * 28}.jsonl").write_text("{}\n")  # what a file sink writes: not news
    (root / "elsewhere.csv").write_text("not watched")
    spec = local_spec(root, "source: incoming/", extra="syncFrequency: 1\n", events="[user.login]")

    async def scans(p: Pipeline, count: int) -> None:
        start = p.sources.scans
        await p.until(lambda: p.sources.scans >= start + count, f"{count} scans")

    async def first_run() -> None:
        async with Pipeline(tmp_path, {"drop.yaml": spec}) as p:
            await scans(p, 2)
            found = events_named(p, "file.received")
            assert sorted(d["path"] for d in found) == ["incoming/2024/grades.csv", "incoming/roster.csv"]
            roster = next(d for d in found if d["path"] == "incoming/roster.csv")
            assert roster["integrationId"] == "drop" and roster["size"] == 14
            assert roster["url"] == f"file://{root}/incoming/roster.csv"
            assert roster["modifiedAt"].endswith("Z")
            (root / "incoming" / "late.csv").write_text("id\n2\n")
            await scans(p, 2)
            assert len(events_named(p, "file.received")) == 3

    async def second_run() -> None:
        async with Pipeline(tmp_path, {"drop.yaml": spec}) as p:
            await scans(p, 2)
            assert sorted(d["path"] for d in events_named(p, "file.received")) == [
                "incoming/2024/grades.csv",
                "incoming/late.csv",
                "incoming/roster.csv",
            ], "nothing emitted twice after a restart"

    run(first_run)
    run(second_run)


def test_file_received_from_s3_once_per_object_version(tmp_path, s3):
    name = bucket(s3)
    s3client = client(s3)
    s3client.put_object(Bucket=name, Key="cms/incoming/a.csv", Body=b"a\n1\n")
    spec = s3_spec(s3, name, "source: incoming", extra="syncFrequency: 1\n", events="[user.login]")

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"drop.yaml": spec}, environ=CREDENTIALS) as p:
            start = p.sources.scans
            await p.until(lambda: p.sources.scans >= start + 2)
            [found] = events_named(p, "file.received")
            assert found["url"] == f"s3://{name}/cms/incoming/a.csv" and found["etag"]
            s3client.put_object(Bucket=name, Key="cms/incoming/a.csv", Body=b"a\n1\n2\n")  # a new version
            start = p.sources.scans
            await p.until(lambda: p.sources.scans >= start + 2)
            assert [d["size"] for d in events_named(p, "file.received")] == [4, 6]

    run(scenario)


# --- the bundled examples ---------------------------------------------------------------------------


def test_bundled_local_export_writes_under_the_daemons_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "integrations.d" / "local-export.yaml").read_text()

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"local-export.yaml": text}) as p:
            await p.intake.emit("user.registered", USER)
            await p.until(lambda: p.statuses("local-export") == {"delivered": 1})

    run(scenario)
    exports = tmp_path / "state" / "exports"
    [written] = visible(exports).values()
    assert written.parent.name == "user.registered"
    assert jsonl(written.read_bytes())[0]["data"] == USER


def test_bundled_s3_export_delivers_to_s3(tmp_path, s3, monkeypatch):
    name = bucket(s3)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3)  # the SDK's own setting: the example's storage options stay
    # an endpoint from the daemon's environment is connected to under the same guard: moto is on loopback
    text = (
        (ROOT / "integrations.d" / "s3-export.yaml")
        .read_text()
        .replace("config:\n", "config:\n  allowPrivateNetwork: true\n")
    )
    environ = {**CREDENTIALS, "EXPORT_BUCKET": name}

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"s3-export.yaml": text}, environ=environ) as p:
            for n in range(3):
                await p.intake.emit("grade.published", {"studentId": n, "moduleId": 42, "grade": "B"})
            # syncFrequency 300 flushes at the next five-minute boundary: bring it forward
            await asyncio.to_thread(p.store.replay, integration_id="s3-export", statuses=("pending",))
            p.engine.wake()
            await p.until(lambda: p.statuses("s3-export") == {"delivered": 3})

    run(scenario)
    stored = objects(s3, name)
    [key] = stored
    assert key.startswith("cms/exports/grade.published/") and ".bat_" in key and key.endswith(".jsonl")
    assert [r["data"]["studentId"] for r in jsonl(stored[key])] == [0, 1, 2], "one batch, one object"


# --- validation -------------------------------------------------------------------------------------


def test_file_config_validation(tmp_path):
    from pydantic import ValidationError

    def config(**fields: Any) -> Any:
        body = {"apiVersion": "cms.integrations/v1", "kind": "Integration", "name": "F", "type": "file"}
        return FileIntegration.model_validate({**body, "config": {"url": "file:///tmp/x", **fields}}).config

    assert config(format="csv").path == "{event}/{date}.csv"
    assert config().path == "{event}/{date}.jsonl"
    for fields, message in [
        ({"format": "csv", "path": "{event}/{date}.jsonl"}, "path ends in .jsonl but format is csv"),
        ({"path": "{event}/{date}.csv"}, "path ends in .csv but format is jsonl"),
        ({"path": "../{event}.jsonl"}, "path must stay under the target URL"),
        ({"path": "{event}/{week}.jsonl"}, "unknown part {week}"),
        ({"source": "../elsewhere"}, "source must be a prefix under the target URL"),
        ({"storageOptions": {"secret": "literal"}}, "literal credential"),
    ]:
        with pytest.raises(ValidationError, match=re.escape(message)):
            config(**fields)
