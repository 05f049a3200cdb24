"""`type: database` against the machine's real PostgreSQL and MariaDB, and SQLite: append,
upsert, created tables, mapping errors, the test endpoint's check, batches, the bundled
example, and a database that goes away mid-run (a loopback proxy stopped and restarted)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import textwrap
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from reconciler.reconcile.conditions import ConditionType, Reason, condition
from reconciler.reconcile.loop import Reconciler
from reconciler.store import AsyncStore, open_store
from tests.conftest import POSTGRES_ADMIN_URL, ROOT
from tests.pipeline import Pipeline, integration
from tests.tcp_proxy import TcpProxy

MARIADB_ADMIN_URL = os.environ.get("TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test")
LONG_WAIT = 60.0  # a restarted database and an opened circuit breaker, on a loaded CI machine


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def _driver(url: str) -> str:
    return re.sub(
        r"^(postgresql|mysql)://",
        lambda m: {"postgresql": "postgresql+psycopg://", "mysql": "mysql+pymysql://"}[m.group(1)],
        url,
    )


@dataclass
class Database:
    """A fresh database (or schema) of one kind: the URL an integration uses, and a way in."""

    kind: str
    url: str
    engine: sa.Engine

    def execute(self, sql: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.text(sql))

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with self.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(sql))]

    def has_table(self, name: str) -> bool:
        return sa.inspect(self.engine).has_table(name)

    def columns(self, name: str) -> dict[str, Any]:
        return {c["name"]: c["type"] for c in sa.inspect(self.engine).get_columns(name)}

    def create(self, name: str, *columns: sa.Column[Any]) -> None:
        sa.Table(name, sa.MetaData(), *columns).create(self.engine)

    def via_port(self, port: int) -> str:
        return re.sub(r"@127\.0\.0\.1:\d+/", f"@127.0.0.1:{port}/", self.url)

    @property
    def port(self) -> int:
        return int(re.search(r"@127\.0\.0\.1:(\d+)/", self.url).group(1))  # type: ignore[union-attr]


def _unreachable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(why + " (CI=true: database tests must run)")
    pytest.skip(why)


@pytest.fixture
def postgres(postgres_url: str) -> Iterator[Database]:
    engine = sa.create_engine(_driver(postgres_url))
    yield Database("postgresql", postgres_url, engine)
    engine.dispose()


@pytest.fixture
def mariadb() -> Iterator[Database]:
    admin = sa.create_engine(_driver(MARIADB_ADMIN_URL), connect_args={"connect_timeout": 3})
    try:
        with admin.connect():
            pass
    except Exception as exc:
        admin.dispose()
        _unreachable(f"MariaDB at {MARIADB_ADMIN_URL} is not reachable: {type(exc).__name__}")
    name = f"t_{uuid.uuid4().hex[:16]}"
    with admin.begin() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    url = MARIADB_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = sa.create_engine(_driver(url))
    try:
        yield Database("mariadb", url, engine)
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(sa.text(f"DROP DATABASE {name}"))
        admin.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path}/target.db"
    engine = sa.create_engine(url)
    yield Database("sqlite", url, engine)
    engine.dispose()


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def db(request: pytest.FixtureRequest) -> Database:
    fixture = {"postgresql": "postgres", "mariadb": "mariadb", "sqlite": "sqlite_db"}[request.param]
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]


def target(config: str, events: str = '["user.*", "grade.*"]', extra: str = "", ident: str = "db") -> str:
    """A database integration (`db`) whose URL comes from DB_URL, with a short retry schedule."""
    indented = "".join(f"  {line}\n" for line in textwrap.dedent(config).strip().splitlines())
    return integration(f"""
        id: {ident}
        name: Reporting
        type: database
        config:
          url: ${{env:DB_URL}}
        {{config}}
        retry: {{maxAttempts: 100, schedule: [100ms, 200ms, 400ms]}}
        {extra}
        webhooks:
          - events: {events}
        """).replace("{config}\n", indented)


def pipeline(tmp_path: Path, db: Database, config: str, **kwargs: Any) -> Pipeline:
    return Pipeline(tmp_path, {"db.yaml": target(config, **kwargs)}, environ={"DB_URL": db.url})


def delivered(p: Pipeline, count: int) -> Callable[[], bool]:
    return lambda: p.statuses("db").get("delivered", 0) == count


def failed_attempts(p: Pipeline) -> list[dict[str, Any]]:
    return [a for a in p.store.attempts("db") if a["outcome"] != "delivered"]


def naive_utc(value: datetime | str) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


USER = {"userId": 7, "email": "ada@example.edu", "name": "Ada"}


# --- append and upsert ----------------------------------------------------------------------------


def test_append_writes_one_row_per_event_in_the_columns_types(tmp_path, db):
    db.create(
        "grades",
        sa.Column("event_id", sa.String(64)),
        sa.Column("student", sa.Integer),
        sa.Column("grade", sa.Numeric(5, 2)),
        sa.Column("assessment", sa.String(100)),
        sa.Column("published", sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")),
        sa.Column("details", sa.Text),
    )
    config = """
        table: grades
        mapping: {event_id: id, student: data.studentId, grade: data.grade, assessment: data.assessment,
                  published: timestamp, details: data.extra}
        """

    async def scenario() -> None:
        async with pipeline(tmp_path, db, config) as p:
            first = await p.emit(
                "grade.published", {"studentId": 1, "moduleId": 2, "grade": 71.5, "assessment": "Exam"}
            )
            second = await p.emit(
                "grade.published", {"studentId": 2, "moduleId": 2, "grade": 64, "extra": {"resit": True}}
            )
            await p.until(delivered(p, 2))
            assert p.store.attempts("db")[0]["response_excerpt"] == "1 row appended to grades"
        rows = db.rows("SELECT event_id, student, grade, assessment, published, details FROM grades ORDER BY student")
        assert [(r[0], r[1], float(r[2]), r[3], r[5]) for r in rows] == [
            (first.id, 1, 71.5, "Exam", None),
            (second.id, 2, 64.0, None, '{"resit":true}'),  # an object in a text column: its JSON
        ]
        # the RFC 3339 timestamp as the column's date-time, in UTC, to the millisecond
        assert [naive_utc(r[4]) for r in rows] == [naive_utc(a.timestamp) for a in (first, second)]

    run(scenario)


def test_upsert_keeps_one_row_per_key_and_a_replay_updates_it(tmp_path, db):
    db.create(
        "users",
        sa.Column("user_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(200)),
        sa.Column("last_event", sa.String(64)),
    )
    config = """
        table: users
        mode: upsert
        key: user_id
        mapping: {user_id: data.userId, email: data.email, last_event: id}
        """

    async def scenario() -> None:
        async with pipeline(tmp_path, db, config) as p:
            await p.emit("user.registered", USER)
            await p.until(delivered(p, 1))
            second = await p.emit("user.login", {**USER, "email": "ada@new.example.edu"})
            await p.until(delivered(p, 2))
            assert db.rows("SELECT user_id, email, last_event FROM users") == [(7, "ada@new.example.edu", second.id)]
            db.execute("UPDATE users SET email = 'changed by hand'")
            # the same event delivered again: still one row, updated from the event
            page, _ = p.store.delivery_page("db", ["delivered"])
            delivery = next(d for d in page if d["eventId"] == second.id)
            assert p.store.replay(delivery_id=delivery["id"], statuses=("delivered",)) == 1
            p.engine.wake()
            await p.until(lambda: len(p.store.attempts("db")) == 3)
            await p.until(delivered(p, 2))
            assert p.store.attempts("db")[0]["response_excerpt"] == "1 row upserted into users"
        assert db.rows("SELECT user_id, email, last_event FROM users") == [(7, "ada@new.example.edu", second.id)]

    run(scenario)


# --- created tables -------------------------------------------------------------------------------


def test_created_table_without_mapping_has_event_id_event_timestamp_and_json_data(tmp_path, db):
    config = """
        table: cms_events
        mode: upsert
        key: [event_id]
        createTable: true
        """

    async def scenario() -> None:
        async with pipeline(tmp_path, db, config) as p:
            accepted = await p.emit("user.registered", USER)
            await p.until(delivered(p, 1))
        columns = db.columns("cms_events")
        assert list(columns) == ["event_id", "event", "timestamp", "data"]
        assert isinstance(columns["timestamp"], sa.DateTime)
        [(event_id, event, stamp, data)] = db.rows("SELECT event_id, event, timestamp, data FROM cms_events")
        assert (event_id, event) == (accepted.id, "user.registered")
        assert stamp is not None
        assert (data if isinstance(data, dict) else json.loads(data)) == USER
        if db.kind == "postgresql":
            assert str(columns["data"]) == "JSONB"
            assert db.rows("SELECT data->>'email' FROM cms_events") == [(USER["email"],)]
        assert sa.inspect(db.engine).get_pk_constraint("cms_events")["constrained_columns"] == ["event_id"]

    run(scenario)


def test_created_table_from_a_mapping_keys_on_a_bounded_string(tmp_path, db):
    config = """
        table: logins
        mode: upsert
        key: [user_id]
        createTable: true
        mapping: {user_id: data.userId, email: data.email, profile: data, at: timestamp, event_id: id}
        """

    async def scenario() -> None:
        async with pipeline(tmp_path, db, config) as p:
            await p.emit("user.login", USER)
            await p.emit("user.login", {**USER, "email": "second@example.edu"})
            await p.until(delivered(p, 2))
        columns = db.columns("logins")
        assert isinstance(columns["user_id"], sa.String) and columns["user_id"].length == 255
        assert isinstance(columns["email"], sa.Text | sa.String) and not getattr(columns["email"], "length", None)
        assert isinstance(columns["at"], sa.DateTime)
        assert sa.inspect(db.engine).get_pk_constraint("logins")["constrained_columns"] == ["user_id"]
        # a number in a text column is its JSON text; the last event of the key wins
        assert db.rows("SELECT user_id, email FROM logins") == [("7", "second@example.edu")]

    run(scenario)


# --- mismatches -----------------------------------------------------------------------------------


def test_missing_column_fails_the_delivery_naming_it_until_the_column_is_added(tmp_path, db):
    db.create("people", sa.Column("event_id", sa.String(64)), sa.Column("name", sa.String(100)))
    config = """
        table: people
        mapping: {event_id: id, name: data.name, email: data.email}
        """

    async def scenario() -> None:
        async with pipeline(tmp_path, db, config) as p:
            accepted = await p.emit("user.registered", USER)
            await p.until(lambda: len(failed_attempts(p)) >= 2)
            error = failed_attempts(p)[0]["error"]
            assert "table people has no column email (mapped from data.email)" in error, error
            assert "ALTER TABLE people ADD COLUMN" in error
            assert p.statuses("db") == {"failed": 1}, "the delivery is kept for its retries"
            db.execute("ALTER TABLE people ADD COLUMN email VARCHAR(200)")
            await p.until(delivered(p, 1))
        assert db.rows("SELECT event_id, name, email FROM people") == [(accepted.id, "Ada", USER["email"])]

    run(scenario)


def test_a_value_that_does_not_fit_its_column_names_the_column_not_the_value(tmp_path, postgres):
    postgres.create(
        "scores",
        sa.Column("event_id", sa.String(64)),
        sa.Column("score", sa.Integer),
        sa.Column("label", sa.String(5)),
        sa.Column("required", sa.Text, nullable=False),
    )
    config = """
        table: scores
        mapping: {event_id: id, score: data.grade, label: data.assessment}
        """

    async def scenario() -> None:
        async with pipeline(tmp_path, postgres, config) as p:
            await p.emit("grade.published", {"studentId": 1, "moduleId": 2, "grade": "A+"})
            await p.until(lambda: failed_attempts(p))
            error = failed_attempts(p)[0]["error"]
            assert "column score of table scores is INTEGER, but data.grade of event" in error, error
            assert "A+" not in error
            await p.emit("grade.published", {"studentId": 1, "moduleId": 2, "grade": 1, "assessment": "secret-ish"})
            await p.until(lambda: any("label" in (a["error"] or "") for a in failed_attempts(p)))
            error = next(a["error"] for a in failed_attempts(p) if "label" in (a["error"] or ""))
            assert "column label of table scores holds 5 characters, but data.assessment" in error, error
            assert "secret-ish" not in error
            await p.emit("grade.published", {"studentId": 1, "moduleId": 2, "grade": 2, "assessment": "ok"})
            # the database's own refusal, translated: the column, no SQL, no parameters
            await p.until(lambda: any("null value" in (a["error"] or "") for a in failed_attempts(p)))
            error = next(a["error"] for a in failed_attempts(p) if "null value" in (a["error"] or ""))
            assert error.startswith("writing to table scores failed:") and '"required"' in error, error
            assert "INSERT" not in error and "parameters" not in error
            assert p.statuses("db") == {"failed": 3}

    run(scenario)


def test_upsert_into_a_table_without_a_unique_key_is_refused_with_the_fix(tmp_path, sqlite_db):
    sqlite_db.create("plain", sa.Column("event_id", sa.String(64)), sa.Column("event", sa.String(64)))
    config = """
        table: plain
        mode: upsert
        key: [event_id]
        mapping: {event_id: id, event: event}
        """

    async def scenario() -> None:
        async with pipeline(tmp_path, sqlite_db, config) as p:
            await p.emit("user.login", USER)
            await p.until(lambda: failed_attempts(p))
            error = failed_attempts(p)[0]["error"]
            assert "table plain has no primary key or unique index on (event_id)" in error, error
            assert "ADD PRIMARY KEY (event_id)" in error

    run(scenario)


# --- the test endpoint's check --------------------------------------------------------------------


def test_check_inspects_the_table_without_writing(tmp_path, db):
    db.create("present", sa.Column("event_id", sa.String(64)), sa.Column("event", sa.String(64)))
    quiet = "[settings.updated]"  # never emitted here
    configs = {
        "ok": "table: present\nmapping: {event_id: id, event: event}",
        "short": "table: present\nmapping: {event_id: id, event: event, email: data.email}",
        "absent": "table: absent",
        "later": "table: later\ncreateTable: true",
    }
    files = {f"{name}.yaml": target(config, events=quiet, ident=name) for name, config in configs.items()}

    async def scenario() -> None:
        async with Pipeline(tmp_path, files, environ={"DB_URL": db.url}) as p:
            sink = p.engine.records["database"]
            results = {name: await sink.check(p.reconciler.snapshot.applied[name]) for name in configs}
            # the test endpoint's path: the check, recorded as a test attempt
            _, tested = await p.engine.test_send(p.reconciler.snapshot.applied["short"])
            await p.until(lambda: p.store.attempts("short"))
            [attempt] = p.store.attempts("short")
        assert results["ok"].ok and "table present has the mapped columns (event_id, event)" in results["ok"].excerpt
        assert not results["short"].ok and "has no column email (mapped from data.email)" in results["short"].error
        assert not results["absent"].ok and "table absent does not exist" in results["absent"].error
        assert "createTable" in results["absent"].error
        assert not results["short"].endpoint_failure and not results["absent"].endpoint_failure
        assert results["later"].ok and "does not exist yet" in results["later"].excerpt
        assert not tested.ok and (attempt["trigger"], attempt["outcome"]) == ("test", "failed")
        assert "has no column email" in attempt["error"]
        assert not db.has_table("later"), "the check never creates the table"
        assert db.rows("SELECT count(*) FROM present") == [(0,)]

    run(scenario)


def test_check_of_a_missing_sqlite_file_does_not_create_it(tmp_path):
    file = tmp_path / "nowhere" / "reports.db"

    async def scenario() -> None:
        spec = target("table: t\ncreateTable: true", events="[settings.updated]")
        async with Pipeline(tmp_path, {"db.yaml": spec}, environ={"DB_URL": f"sqlite:///{file}"}) as p:
            result = await p.engine.records["database"].check(p.reconciler.snapshot.applied["db"])
        assert result.ok and "does not exist yet" in result.excerpt
        assert not file.exists()

    run(scenario)


def test_an_unreachable_database_is_an_endpoint_failure_without_its_password(tmp_path):
    proxy = TcpProxy(5432).start()
    port = proxy.port
    proxy.stop()  # a port where nothing listens now
    url = f"postgresql://reporter:pa55-w0rd-XYZ@127.0.0.1:{port}/reports"

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"db.yaml": target("table: t")}, environ={"DB_URL": url}) as p:
            result = await p.engine.records["database"].check(p.reconciler.snapshot.applied["db"])
            await p.emit("user.login", USER)
            await p.until(lambda: failed_attempts(p))
            attempts = json.dumps(p.store.attempts("db"))
        assert not result.ok and result.endpoint_failure
        assert result.error.startswith("the database of table t is unavailable:"), result.error
        assert "pa55-w0rd-XYZ" not in (result.error or "") and "pa55-w0rd-XYZ" not in attempts
        assert "is unavailable" in attempts

    run(scenario)


def test_a_statement_over_the_timeout_is_cancelled_and_retried(tmp_path, postgres):
    postgres.create("slow", sa.Column("event_id", sa.String(64), primary_key=True))
    postgres.execute(
        "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$"
    )
    postgres.execute("CREATE TRIGGER stall BEFORE INSERT ON slow FOR EACH ROW EXECUTE FUNCTION stall()")
    config = """
        table: slow
        mode: upsert
        key: [event_id]
        mapping: {event_id: id}
        timeout: 1s
        """

    async def scenario() -> None:
        async with pipeline(tmp_path, postgres, config) as p:
            accepted = await p.emit("user.login", USER)
            await p.until(lambda: failed_attempts(p))
            error = failed_attempts(p)[0]["error"]
            assert error.startswith("the database of table slow is unavailable:") and "statement timeout" in error
            postgres.execute("DROP TRIGGER stall ON slow")
            await p.until(delivered(p, 1), timeout=LONG_WAIT)  # past the circuit breaker, if it opened
        assert postgres.rows("SELECT event_id FROM slow") == [(accepted.id,)]

    run(scenario)


# --- batches --------------------------------------------------------------------------------------


def test_batches_are_one_executemany_each_through_the_pipeline(tmp_path, postgres):
    config = """
        table: cms_events
        mode: upsert
        key: [event_id]
        createTable: true
        batchSize: 25
        """

    async def scenario() -> None:
        async with pipeline(tmp_path, postgres, config) as p:
            await p.reconciler.suspend("db", "test", "queue up first")
            ids = [(await p.emit("user.login", {"userId": n})).id for n in range(100)]
            await p.reconciler.resume("db", "test", "go")
            p.engine.wake()
            await p.until(delivered(p, 100))
            attempts = p.store.attempts("db")
        assert {a["response_excerpt"] for a in attempts} == {"25 rows upserted into cms_events"}
        assert len({a["batch_id"] for a in attempts}) == 4
        assert sorted(r[0] for r in postgres.rows("SELECT event_id FROM cms_events")) == sorted(ids)

    run(scenario)


# --- a database that goes away and comes back ------------------------------------------------------


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_database_going_away_mid_run_loses_nothing(tmp_path, request, kind):
    db: Database = request.getfixturevalue("postgres" if kind == "postgresql" else "mariadb")
    proxy = TcpProxy(db.port).start()
    config = """
        table: cms_events
        mode: upsert
        key: [event_id]
        createTable: true
        batchSize: 10
        timeout: 3s
        """
    spec = target(config, events='["user.*"]')

    async def scenario() -> None:
        acked: list[str] = []
        flowing = asyncio.Event()

        async def emit_until_stopped() -> None:
            n = 0
            while not flowing.is_set():
                acked.append((await p.emit("user.login", {"userId": n})).id)
                n += 1
                await asyncio.sleep(0.005)

        async with Pipeline(tmp_path, {"db.yaml": spec}, environ={"DB_URL": db.via_port(proxy.port)}) as p:
            emitter = asyncio.create_task(emit_until_stopped())
            await p.until(lambda: p.statuses("db").get("delivered", 0) >= 30, "rows flowing")
            await asyncio.to_thread(proxy.stop)  # every connection cut, new ones refused
            await p.until(lambda: any("is unavailable" in (a["error"] or "") for a in failed_attempts(p)), "a failure")
            outage_acked = len(acked)
            await asyncio.to_thread(proxy.start)  # same port again
            await p.until(lambda: p.statuses("db").get("delivered", 0) >= outage_acked + 30, "rows again", LONG_WAIT)
            flowing.set()
            await emitter
            await p.until(delivered(p, len(acked)), "every event delivered", LONG_WAIT)
        proxy.stop()
        rows = db.rows("SELECT event_id, count(*) FROM cms_events GROUP BY event_id")
        assert sorted(r[0] for r in rows) == sorted(acked), "every acknowledged event is in the table"
        assert {r[1] for r in rows} == {1}, "exactly once"
        assert proxy.connections > 1

    try:
        run(scenario)
    finally:
        proxy.stop()


# --- the bundled example --------------------------------------------------------------------------


def test_bundled_postgres_reporting_example_writes_the_warehouse_rows(tmp_path, postgres):
    example = (ROOT / "integrations.d" / "postgres-reporting.yaml").read_text()

    async def scenario() -> None:
        files = {"postgres-reporting.yaml": example}
        async with Pipeline(tmp_path, files, environ={"REPORTING_DATABASE_URL": postgres.url}) as p:
            registered = await p.emit("user.registered", USER)
            module = await p.emit("module.created", {"moduleId": 42, "name": "Introduction to Programming"})
            await p.emit("system.error", {"message": "not subscribed"})
            await p.until(lambda: p.statuses("reporting-database").get("delivered", 0) == 2)
        rows = postgres.rows("SELECT event_id, event, data->>'name' FROM cms_events ORDER BY event")
        assert rows == [
            (module.id, "module.created", "Introduction to Programming"),
            (registered.id, "user.registered", "Ada"),
        ]

    run(scenario)


# --- validation of the config ---------------------------------------------------------------------

DATABASE_FILE = """
    apiVersion: cms.integrations/v1
    kind: Integration
    name: Reporting
    type: database
    config:
      url: ${env:DB_URL}
      table: cms_events
    {extra}
    webhooks:
      - events: ["user.*"]
    """


def database_file(extra: str) -> str:
    return DATABASE_FILE.replace("    {extra}\n", "".join(f"      {line}\n" for line in extra.splitlines()))


def test_columns_that_differ_only_by_case_are_refused(write, validate):
    write("db.yaml", database_file("mapping: {email: data.email, Email: data.name}"))
    [problem] = validate().diagnostics
    assert problem.pointer == "/config/mapping/Email"
    assert "column Email is also mapped as email" in problem.message


def test_a_key_on_the_whole_data_object_is_refused(write, validate):
    write("db.yaml", database_file("mode: upsert\nkey: [data]"))
    [problem] = validate().diagnostics
    assert problem.pointer == "/config/key"
    assert "holds the whole data object" in problem.message


def test_check_env_checks_the_resolved_scheme_without_echoing_the_url(write, validate):
    write("db.yaml", database_file("createTable: true"))
    assert validate(check_env=True, environ={"DB_URL": "postgresql://u:pw-123456@db.example.org/r"}).diagnostics == []
    [problem] = validate(check_env=True, environ={"DB_URL": "oracle://u:pw-123456@db.example.org/r"}).diagnostics
    assert "config.url (resolved) has a scheme not in" in problem.message
    assert "pw-123456" not in problem.as_text() and "oracle" not in problem.as_text()


def test_a_database_integration_may_not_write_into_the_daemons_own_store(tmp_path):
    """Rows there could forge audit entries and deliveries. Refused when applied (below); a link
    repointed at the store after that is refused at every attempt, saying why."""
    store = f"sqlite:///{tmp_path}/state/pipeline.db"
    link = tmp_path / "reporting.db"
    link.symlink_to(tmp_path / "elsewhere.db")  # another database when the integration is applied
    spec = target("table: forged\ncreateTable: true")

    async def scenario() -> None:
        async with Pipeline(tmp_path, {"db.yaml": spec}, environ={"DB_URL": f"sqlite:///{link}"}, store_url=store) as p:
            link.unlink()
            link.symlink_to(tmp_path / "state" / "pipeline.db")
            await p.emit("user.registered", USER)
            await p.until(lambda: len(failed_attempts(p)) >= 1)
            [first, *_] = failed_attempts(p)
            assert "config.url (resolved) is the daemon's own store" in first["error"]
            assert "another database or schema" in first["error"]
            with p.store.engine.connect() as connection:
                assert "forged" not in sa.inspect(connection).get_table_names()

    run(scenario)


async def applied_with(store_url: str, config_dir: Path, environ: dict[str, str]) -> Reconciler:
    """A reconciler on `store_url` after its first pass, then a pass after `environ` changes."""
    reconciler = Reconciler(AsyncStore(open_store(store_url)), config_dir, environ=environ, resync_seconds=3600)
    await reconciler.reconcile_once("start")
    return reconciler


def own_store_status(reconciler: Reconciler, integration_id: str) -> tuple[tuple[str, str], tuple[str, str], str]:
    """(Ready status, reason), (Synced status, reason) and the Synced message."""
    record = reconciler.snapshot.registry[integration_id]
    ready, synced = (
        condition(record.conditions, ConditionType.READY),
        condition(record.conditions, ConditionType.SYNCED),
    )
    assert ready is not None and synced is not None
    return (ready["status"], ready["reason"]), (synced["status"], synced["reason"]), synced["message"]


OWN_STORE_REFUSED = (("False", Reason.NEVER_APPLIED), ("False", Reason.OWN_STORE))


def test_a_database_integration_on_the_daemons_own_sqlite_store_is_refused_when_applied(tmp_path, monkeypatch):
    """The same file by another spelling: relative to the working directory, through `..`, or
    through a symbolic link. Refused when applied, with the condition saying why and what to
    change, so it never runs and no event dead-letters; a running version changed to point
    there keeps running as it was."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "store-link.db").symlink_to(tmp_path / "state" / "daemon.db")
    config_dir = tmp_path / "integrations.d"
    config_dir.mkdir()
    urls = {
        "relative": "sqlite:///state/daemon.db",
        "dotted": f"sqlite:///{tmp_path}/integrations.d/../state/daemon.db",
        "linked": "sqlite:///store-link.db",
        "other": f"sqlite:///{tmp_path}/reporting.db",
    }
    environ = {}
    for name, url in urls.items():
        (config_dir / f"{name}.yaml").write_text(target("table: events", ident=name).replace("DB_URL", name.upper()))
        environ[name.upper()] = url

    async def scenario() -> None:
        reconciler = await applied_with(f"sqlite:///{tmp_path}/state/daemon.db", config_dir, environ)
        assert reconciler.last_pass is not None
        assert sorted(reconciler.last_pass.refused) == ["dotted", "linked", "relative"]
        for name in ("relative", "dotted", "linked"):
            ready, synced, message = own_store_status(reconciler, name)
            assert (ready, synced) == OWN_STORE_REFUSED, name
            assert message.startswith(f"{name}.yaml: config.url (resolved) is the daemon's own store"), message
            assert "point config.url at another database" in message
            assert urls[name] not in message  # a URL may hold a password: never quoted
            assert name not in reconciler.snapshot.applied  # not routed to: nothing queues for it
        assert own_store_status(reconciler, "other")[0] == ("True", Reason.APPLIED)
        # a running integration whose URL (a secret) changes to the store keeps its last good version
        environ["OTHER"] = "sqlite:///state/daemon.db"
        await reconciler.reconcile_once("manual")
        ready, synced, _ = own_store_status(reconciler, "other")
        assert (ready, synced) == (("True", Reason.APPLIED), ("False", Reason.OWN_STORE))
        assert reconciler.snapshot.applied["other"].generation == 1
        await reconciler.store.close()

    run(scenario)


def test_a_database_integration_on_the_daemons_own_postgresql_store_is_refused_when_applied(tmp_path, postgres_url):
    """Same server (localhost and 127.0.0.1 alike), database and schema as the store: refused.
    Another schema of the same database is another store, and applies."""
    schema = postgres_url.rsplit("%3D", 1)[1]
    server = POSTGRES_ADMIN_URL.split("?")[0]
    config_dir = tmp_path / "integrations.d"
    config_dir.mkdir()
    files = {
        "pinned": ("table: events", postgres_url.replace("127.0.0.1", "localhost")),
        "table-schema": (f"table: events\ntableSchema: {schema}", server),
        "public": ("table: events", server),
    }
    environ = {}
    for name, (config, url) in files.items():
        (config_dir / f"{name}.yaml").write_text(
            target(config, ident=name).replace("DB_URL", name.upper().replace("-", "_"))
        )
        environ[name.upper().replace("-", "_")] = url

    async def scenario() -> None:
        reconciler = await applied_with(postgres_url, config_dir, environ)
        for name in ("pinned", "table-schema"):
            assert own_store_status(reconciler, name)[:2] == OWN_STORE_REFUSED, name
        assert own_store_status(reconciler, "public")[0] == ("True", Reason.APPLIED)
        await reconciler.store.close()

    run(scenario)


def test_the_own_store_check_compares_server_database_and_schema():
    from reconciler.store.own_store import is_own_store

    store = "postgresql://app:pw@db.example.org:5432/cms?options=-csearch_path%3Dreconciler"
    pinned = "postgresql+psycopg://other:x@DB.example.org/cms?options=-csearch_path%3Dreconciler"
    assert is_own_store(pinned, None, store)
    assert is_own_store("postgresql+psycopg://app@db.example.org/cms", "reconciler", store)
    assert not is_own_store("postgresql+psycopg://app@db.example.org/cms", None, store)  # public: another schema
    assert not is_own_store("postgresql+psycopg://app@db.example.org/reporting", "reconciler", store)
    assert not is_own_store("postgresql+psycopg://app@db2.example.org/cms", "reconciler", store)
    assert not is_own_store("postgresql+psycopg://app@db.example.org:6432/cms", "reconciler", store)
    assert is_own_store("postgresql+psycopg://u@127.0.0.1/cms", None, "postgres://u@localhost/cms")
    assert not is_own_store("mysql+pymysql://u@localhost/cms", None, "postgresql://u@localhost/cms")
    assert not is_own_store("sqlite:///a.db", None, None)
