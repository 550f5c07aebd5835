"""The PostgreSQL store: chosen by a URL, its own schema and migrations, rolling upgrades, and
the notifications other replicas refresh on.

Every role's behaviour on both backends is the store conformance suite's; this file holds what
only the PostgreSQL backend has. The tests that need the server use ``pg_url``
(``tests/support/pg.py``): skipped without one, failed under ``CI=true``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from keys.errors import ConfigurationError, NotFoundError, SchemaOutdatedError
from keys.model import Mode, Region
from keys.personal import RecognitionEntry
from keys.store import pgschema, regions
from keys.store.dbapi import Connection
from keys.store.factory import is_postgres_url, open_store, schema_status
from keys.store.pgdb import shown, translate
from keys.store.postgres import PostgresStore
from keys.store.sqlitestore import SQLiteStore

# Also at psycopg's floor (.ci/lowest-versions): notifies(stop_after=) is psycopg 3.2's.
pytestmark = pytest.mark.lowest

T = TypeVar("T")
T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
ACTOR = "operator:test"
BEIJING = Region("110000", "Beijing", Mode.SHOW, timedelta(hours=24))


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def with_store(url: str, fn: Callable[[PostgresStore], Awaitable[T]]) -> T:
    async def main() -> T:
        store = await PostgresStore.open(url)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(main())


def sql(url: str, statement: str, params: Any = None) -> list[Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


# --- unit tier: no server --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "postgres"),
    [
        pytest.param("postgresql://u@h/db", True, id="postgresql"),
        pytest.param("postgres://u@h/db", True, id="postgres"),
        pytest.param("PostgreSQL://u@h/db", True, id="any-case"),
        pytest.param("/var/lib/trustgw/registry.db", False, id="path"),
        pytest.param("registry.db", False, id="relative-path"),
        pytest.param("mysql://u@h/db", False, id="other-scheme"),
        pytest.param("postgresql:/nohost", False, id="no-slashes"),
    ],
)
def test_a_postgresql_url_chooses_postgresql_anything_else_is_a_sqlite_path(
    text: str, postgres: bool
) -> None:
    assert is_postgres_url(text) is postgres


@pytest.mark.parametrize(
    ("aggregate_sql", "psycopg_sql"),
    [
        pytest.param("SELECT 1 FROM t WHERE a = ?", "SELECT 1 FROM t WHERE a = %s", id="qmark"),
        pytest.param("UPDATE t SET a = :at WHERE b = :b", "UPDATE t SET a = %(at)s WHERE b = %(b)s",
                     id="named"),
        pytest.param("SELECT '?', ':x', '%' FROM t WHERE a = ?", "SELECT '?', ':x', '%%' FROM t"
                     " WHERE a = %s", id="quoted-text-kept"),
        pytest.param("SELECT a::text FROM t WHERE b LIKE 'x%' AND c = ?",
                     "SELECT a::text FROM t WHERE b LIKE 'x%%' AND c = %s", id="cast-and-percent"),
        pytest.param("SELECT 'it''s ?' WHERE a = ?", "SELECT 'it''s ?' WHERE a = %s",
                     id="escaped-quote"),
    ],
)  # fmt: skip
def test_the_aggregates_placeholders_become_psycopgs(aggregate_sql: str, psycopg_sql: str) -> None:
    assert translate(aggregate_sql) == psycopg_sql


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("postgresql://gw:s3cret@db:5432/trust", "postgresql://gw:***@db:5432/trust",
                     id="userinfo"),
        pytest.param("postgresql://gw@db/trust?sslmode=require&password=s3cret",
                     "postgresql://gw@db/trust?sslmode=require&password=***", id="parameter"),
        pytest.param("postgresql://gw@db/trust", "postgresql://gw@db/trust", id="none"),
    ],
)  # fmt: skip
def test_a_url_in_a_message_never_shows_its_password(url: str, expected: str) -> None:
    assert shown(url) == expected


# --- integration tier: a PostgreSQL server ---------------------------------------------------


@pytest.mark.integration
def test_open_store_on_a_url_opens_postgresql_migrated(pg_url: str) -> None:
    async def scenario() -> tuple[Any, Any, Any]:
        before = await schema_status(pg_url)
        store = await open_store(pg_url)
        try:
            assert isinstance(store, PostgresStore)
            await store.ping()
            return before, await schema_status(pg_url), await store.registry_version()
        finally:
            await store.close()

    before, after, version = run(scenario())
    assert (before.backend, before.current, before.outdated) == ("postgresql", 0, True)
    expected = pgschema.SCHEMA_VERSION
    assert (after.backend, after.current, after.expected) == ("postgresql", expected, expected)
    assert not after.outdated
    assert version == 0


def test_schema_status_of_a_sqlite_file_says_sqlite(tmp_path: Path) -> None:
    status = run(schema_status(tmp_path / "registry.db"))
    assert (status.backend, status.current) == ("sqlite", 0)


@pytest.mark.integration
def test_without_migrate_an_empty_database_is_refused_and_left_empty(pg_url: str) -> None:
    with pytest.raises(SchemaOutdatedError) as caught:
        run(open_store(pg_url, migrate=False))
    assert (caught.value.current, caught.value.expected) == (0, pgschema.SCHEMA_VERSION)
    assert "trustgw db migrate" in caught.value.message
    assert sql(pg_url, "SELECT to_regclass('regions')") == [(None,)]


@pytest.mark.integration
def test_reopening_does_not_migrate_again(pg_url: str) -> None:
    with_store(pg_url, lambda s: s.upsert_region(BEIJING, actor=ACTOR, now=T0))
    assert with_store(pg_url, lambda s: s.list_regions()) == [BEIJING]
    rows = sql(pg_url, "SELECT version, readable_by FROM schema_migrations ORDER BY version")
    assert rows == [(m.version, m.readable_by) for m in pgschema.MIGRATIONS]


@pytest.mark.integration
def test_replicas_starting_at_once_migrate_once(pg_url: str) -> None:
    async def scenario() -> None:
        stores = await asyncio.gather(*(PostgresStore.open(pg_url) for _ in range(4)))
        try:
            await asyncio.gather(*(s.ping() for s in stores))
        finally:
            await asyncio.gather(*(s.close() for s in stores))

    run(scenario())
    assert sql(pg_url, "SELECT COUNT(*) FROM schema_migrations") == [
        (len(pgschema.MIGRATIONS),)
    ]


@pytest.mark.integration
@pytest.mark.parametrize("migrate", [True, False], ids=["migrate", "no-migrate"])
def test_a_newer_schema_old_code_can_read_opens(pg_url: str, migrate: bool) -> None:
    """An expanding migration (readable_by = the previous version): old and new code both run
    during a rolling upgrade."""
    with_store(pg_url, lambda s: s.upsert_region(BEIJING, actor=ACTOR, now=T0))
    newer = pgschema.SCHEMA_VERSION + 1
    sql(pg_url, "INSERT INTO schema_migrations VALUES (%s, %s, 0)",
        (newer, pgschema.SCHEMA_VERSION))  # fmt: skip

    async def scenario() -> list[Region]:
        store = await open_store(pg_url, migrate=migrate)
        try:
            return await store.list_regions()
        finally:
            await store.close()

    assert run(scenario()) == [BEIJING]
    assert sql(pg_url, "SELECT MAX(version) FROM schema_migrations") == [(newer,)]


@pytest.mark.integration
@pytest.mark.parametrize("migrate", [True, False], ids=["migrate", "no-migrate"])
def test_a_newer_schema_old_code_cannot_read_is_refused_at_open(
    pg_url: str, migrate: bool
) -> None:
    """A contracting migration (readable_by = itself): old code refuses to start."""
    with_store(pg_url, lambda s: s.ping())
    newer = pgschema.SCHEMA_VERSION + 1
    sql(pg_url, "INSERT INTO schema_migrations VALUES (%s, %s, 0)", (newer, newer))
    with pytest.raises(ConfigurationError) as caught:
        run(open_store(pg_url, migrate=migrate))
    assert type(caught.value) is ConfigurationError
    assert f"schema version {newer}" in caught.value.message
    assert "upgrade the gateway" in caught.value.message


@pytest.mark.integration
def test_every_registry_change_and_trust_list_is_announced_when_it_commits(pg_url: str) -> None:
    with_store(pg_url, lambda s: s.ping())
    with psycopg.connect(pg_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {pgschema.REGISTRY_CHANNEL}")

        async def changes(store: PostgresStore) -> None:
            await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
            await store.upsert_region(BEIJING, actor=ACTOR, now=T0)  # no change: no notice
            await store.set_region_enabled(BEIJING.code, False, actor=ACTOR, now=T0)
            await store.record_trustlist("a" * 64, b"{}", expected_latest=0, now=T0)

        with_store(pg_url, changes)
        received = [
            (n.channel, n.payload) for n in listener.notifies(timeout=10, stop_after=3)
        ]
    channel = pgschema.REGISTRY_CHANNEL
    assert received == [(channel, "1"), (channel, "2"), (channel, "trustlist:1")]


@pytest.mark.integration
def test_a_rolled_back_change_is_not_announced(pg_url: str) -> None:
    with_store(pg_url, lambda s: s.ping())
    with psycopg.connect(pg_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {pgschema.REGISTRY_CHANNEL}")

        def bump_then_fail(conn: Connection) -> None:
            regions.bump_version(conn)
            raise NotFoundError("refused after the version moved")

        async def refused(store: PostgresStore) -> None:
            await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
            with pytest.raises(NotFoundError):
                await store._write("refused", bump_then_fail)
            assert await store.registry_version() == 1
            await store.set_region_enabled(BEIJING.code, False, actor=ACTOR, now=T0)

        with_store(pg_url, refused)
        received = [n.payload for n in listener.notifies(timeout=10, stop_after=2)]
    assert received == ["1", "2"]  # version 2 is the next change: the refused one never was


@pytest.mark.integration
def test_sqlite_and_postgresql_give_the_same_answers(pg_url: str, tmp_path: Path) -> None:
    """A smoke test of the shared SQL (the conformance suite has the full comparison)."""

    async def story(store: Any) -> tuple[Any, ...]:
        await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
        await store.set_region_enabled(BEIJING.code, False, actor=ACTOR, now=T0)
        head, entries = await store.read_audit(0, 100)
        return (
            await store.registry_version(),
            await store.list_regions(),
            head,
            [(e.seq, e.action, e.hash) for e in entries],
        )

    async def both() -> tuple[Any, Any]:
        sqlite = await SQLiteStore.open(tmp_path / "r.db")
        postgres = await PostgresStore.open(pg_url)
        try:
            return await story(sqlite), await story(postgres)
        finally:
            await sqlite.close()
            await postgres.close()

    on_sqlite, on_postgres = run(both())
    assert on_sqlite == on_postgres


@pytest.mark.integration
def test_a_url_with_several_hosts_finds_the_one_that_answers(pg_url: str) -> None:
    """libpq's failover list: the first host is down, the store connects to the second."""
    parts = urlsplit(pg_url)
    url = urlunsplit((parts.scheme, f"{parts.username}@127.0.0.1:1,{parts.hostname}:{parts.port}",
                      parts.path, "target_session_attrs=read-write", ""))  # fmt: skip
    assert with_store(url, lambda s: s.registry_version()) == 0


@pytest.mark.integration
def test_a_nul_in_a_logged_key_id_does_not_lose_the_batch(pg_url: str) -> None:
    """A refused code's key id is whatever the sender wrote; PostgreSQL's text holds no NUL."""
    entries = [
        RecognitionEntry(T0, "110000", "show", "refused", "KEY_UNKNOWN", "", "", "k\x00id", "r1"),
        RecognitionEntry(T0, "110000", "show", "recognised", "OK", "h", "c", "kid", "r2"),
    ]

    async def story(store: PostgresStore) -> list[RecognitionEntry]:
        await store.append_recognitions(entries)
        return await store.list_recognitions()

    logged = with_store(pg_url, story)
    assert [(e.kid, e.request_id) for e in logged] == [("k\ufffdid", "r1"), ("kid", "r2")]
