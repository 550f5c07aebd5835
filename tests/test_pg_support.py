"""The test database rules (issue 10, "The database in tests and CI"): without a server the
PostgreSQL tests skip with one reason; under ``CI=true`` they fail instead."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import pg

pytestmark = pytest.mark.integration  # it tries to connect

NOWHERE = "postgresql://postgres@127.0.0.1:1/test"


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(pg.DATABASE_ENV, NOWHERE)
    pg.unreachable.cache_clear()
    yield
    pg.unreachable.cache_clear()


@pytest.mark.usefixtures("no_server")
@pytest.mark.parametrize("ci", ["", "false", "0"])
def test_without_a_server_a_postgresql_test_is_skipped_with_one_reason(
    monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    monkeypatch.setenv(pg.CI_ENV, ci)
    with pytest.raises(pytest.skip.Exception) as caught:
        pg.require_server()
    reason = str(caught.value)
    assert "\n" not in reason
    assert "127.0.0.1:1" in reason and pg.DATABASE_ENV in reason


@pytest.mark.usefixtures("no_server")
@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_under_ci_a_postgresql_test_without_a_server_fails(
    monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    monkeypatch.setenv(pg.CI_ENV, ci)
    with pytest.raises(pytest.fail.Exception, match="CI=true requires"):
        pg.require_server()


def test_each_test_database_is_fresh_and_dropped_after(pg_url: str) -> None:
    import psycopg

    name = pg_url.rsplit("/", 1)[1]
    assert name.startswith(pg.PREFIX)
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)
    other = pg.fresh_database()
    pg.drop_database(other)
    with pg.admin() as conn:
        found = conn.execute(
            "SELECT datname FROM pg_database WHERE datname = %s", (other.rsplit("/", 1)[1],)
        ).fetchall()
    assert found == []


def test_only_test_databases_are_ever_dropped() -> None:
    with pytest.raises(ValueError, match="not a test database"):
        pg.drop_database("postgresql://postgres@127.0.0.1:5432/test")
