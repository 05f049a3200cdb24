from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.manifests.validate import ValidationResult, validate_paths
from tests.peers import Peer

ROOT = Path(__file__).resolve().parent.parent
HEADER = "apiVersion: cms.integrations/v1\nkind: Integration\n"


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """write(name, text) puts a dedented file under a fresh config directory."""

    def _write(name: str, text: str | bytes) -> Path:
        path = tmp_path / "integrations.d" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def validate(tmp_path: Path) -> Callable[..., ValidationResult]:
    """validate() runs the validator over the config directory written by `write`."""

    def _validate(**kwargs: object) -> ValidationResult:
        return validate_paths([tmp_path / "integrations.d"], root=tmp_path / "integrations.d", **kwargs)  # type: ignore[arg-type]

    return _validate


def only(result: ValidationResult) -> tuple[str, int, int, str]:
    """The single diagnostic of a result, as (file, line, column, message)."""
    assert len(result.diagnostics) == 1, [d.as_text() for d in result.diagnostics]
    d = result.diagnostics[0]
    return d.file, d.line, d.column, d.message


POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_reachable() -> str | None:
    """None when PostgreSQL answers; otherwise why not."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(
            POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1), connect_args={"connect_timeout": 3}
        )
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {type(exc).__name__}"
    return None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A store URL on a fresh, uniquely named schema, dropped afterwards.

    Skips when PostgreSQL is not reachable, except in CI (CI=true), where it fails.
    """
    import sqlalchemy as sa

    why = postgres_reachable()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(why)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    engine = sa.create_engine(POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs against both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state/reconciler.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[object]:
    from reconciler.store import open_store

    opened = open_store(store_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    """A webhook target (and OAuth2 token endpoint) on loopback, for the test's length."""
    running = Peer()
    yield running
    running.close()
