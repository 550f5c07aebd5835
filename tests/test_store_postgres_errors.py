"""The PostgreSQL store when its database fails: each failure is ``StoreUnavailableError``
(reason ``STORE_UNAVAILABLE``, gRPC ``UNAVAILABLE``: nothing was done, retry later), never a bare
driver error that would become INTERNAL, nothing is written, and the store recovers by itself.

Failures made for real: a server that is not there, a lock another connection holds past
``lock_timeout``, the store's backend terminated in the middle of a call
(``pg_terminate_backend``: what a server restart or a failover does to a connection), an idle
connection terminated between calls, a statement past ``statement_timeout``, a database that only
reads (a standby). Serialization failures are retried whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import psycopg.errors
import pytest
from support.wait import eventually

from gateway.grpc.errors import rich_status
from keys.errors import StoreUnavailableError
from keys.model import Mode, Region
from keys.personal import RecognitionEntry
from keys.store import pgdb
from keys.store.dbapi import Connection
from keys.store.postgres import PostgresStore

pytestmark = [pytest.mark.integration, pytest.mark.lowest]  # also at psycopg's floor

T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
ACTOR = "operator:test"
BEIJING = Region("110000", "Beijing", Mode.SHOW, timedelta(hours=24))
SHANGHAI = Region("310000", "Shanghai", Mode.CONVERT, timedelta(hours=12))
ENTRY = RecognitionEntry(T0, "110000", "show", "recognised", "OK", "h", "k", "kid", "r1")


def assert_unavailable(error: StoreUnavailableError, *, secret: str = "") -> None:
    assert type(error) is StoreUnavailableError
    assert error.reason == "STORE_UNAVAILABLE"
    assert rich_status(error).code is grpc.StatusCode.UNAVAILABLE
    assert error.message and "\n" not in error.message
    if secret:
        assert secret not in error.message


@contextmanager
def holding_write_lock(url: str) -> Iterator[psycopg.Connection[Any]]:
    """Another connection holding the store's write lock (a long change by another replica)."""
    with psycopg.connect(url, autocommit=True) as blocker:
        blocker.execute("SELECT pg_advisory_lock(%s)", (pgdb.WRITE_LOCK,))
        try:
            yield blocker
        finally:
            blocker.execute("SELECT pg_advisory_unlock(%s)", (pgdb.WRITE_LOCK,))


def store_backends(url: str, *, waiting: bool = False) -> list[int]:
    """The pids of the store's connections (waiting for an advisory lock, if ``waiting``)."""
    query = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = %s"
    )
    if waiting:
        query += " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
    with psycopg.connect(url, autocommit=True) as conn:
        return [int(r[0]) for r in conn.execute(query, (pgdb.APPLICATION_NAME,)).fetchall()]


def terminate(url: str, pids: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql://postgres:hunter2@127.0.0.1:1/trustgw", id="closed-port"),
        pytest.param("postgresql://postgres:hunter2@127.0.0.1:5432/trustgw_t_no_such_database",
                     id="no-such-database"),
    ],
)  # fmt: skip
def test_a_database_that_cannot_be_reached_at_start_is_unavailable(url: str) -> None:
    if "5432" in url:
        from support import pg

        pg.require_server()
    with pytest.raises(StoreUnavailableError) as caught:
        asyncio.run(PostgresStore.open(url))
    assert_unavailable(caught.value, secret="hunter2")
    assert "127.0.0.1" in caught.value.message


def test_a_lock_held_past_lock_timeout_is_unavailable_and_reads_go_on(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgdb, "LOCK_TIMEOUT_SECONDS", 0.2)

    async def scenario() -> None:
        store = await PostgresStore.open(pg_url)
        try:
            await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
            with holding_write_lock(pg_url):
                with pytest.raises(StoreUnavailableError) as caught:
                    await store.upsert_region(SHANGHAI, actor=ACTOR, now=T0)
                assert_unavailable(caught.value)
                assert "lock timeout" in caught.value.message
                with pytest.raises(StoreUnavailableError):  # the hot path's shared lock too
                    await store.append_recognitions([ENTRY])
                assert await store.list_regions() == [BEIJING]  # reads take no lock
            await store.upsert_region(SHANGHAI, actor=ACTOR, now=T0)
            assert await store.list_regions() == [BEIJING, SHANGHAI]
            assert (await store.read_audit(0, 10))[0].count == 2
            assert await store.list_recognitions() == []
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_connection_killed_mid_call_is_unavailable_then_the_store_recovers(
    pg_url: str,
) -> None:
    async def scenario() -> None:
        store = await PostgresStore.open(pg_url)
        try:
            await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
            with holding_write_lock(pg_url):
                call = asyncio.ensure_future(store.upsert_region(SHANGHAI, actor=ACTOR, now=T0))
                pids = await eventually(
                    lambda: store_backends(pg_url, waiting=True), what="the call waits"
                )
                terminate(pg_url, pids)
                with pytest.raises(StoreUnavailableError) as caught:
                    await call
            assert_unavailable(caught.value)
            assert await store.list_regions() == [BEIJING]  # nothing of the call was written
            assert await store.registry_version() == 1
            await store.upsert_region(SHANGHAI, actor=ACTOR, now=T0)  # and it works again
            assert await store.registry_version() == 2
        finally:
            await store.close()

    asyncio.run(scenario())


def test_idle_connections_lost_between_calls_are_replaced_without_an_error(
    pg_url: str,
) -> None:
    """After a server restart or failover every pooled connection is dead; the next call finds
    that at BEGIN, before anything was sent, and runs on a new connection."""

    async def scenario() -> None:
        store = await PostgresStore.open(pg_url, pool_size=2)
        try:
            await asyncio.gather(*(store.ping() for _ in range(8)))
            before = store_backends(pg_url)
            assert before
            terminate(pg_url, before)
            await eventually(lambda: not store_backends(pg_url), what="the backends are gone")
            await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
            await asyncio.gather(*(store.list_regions() for _ in range(8)))
            assert await store.list_regions() == [BEIJING]
            assert not set(store_backends(pg_url)) & set(before)
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_statement_past_statement_timeout_is_unavailable(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgdb, "STATEMENT_TIMEOUT_SECONDS", 0.1)

    def slow(conn: Connection) -> None:
        conn.execute("SELECT pg_sleep(5)")

    async def scenario() -> None:
        store = await PostgresStore.open(pg_url)
        try:
            with pytest.raises(StoreUnavailableError) as caught:
                await store._read("slow", slow)
            assert_unavailable(caught.value)
            assert "statement timeout" in caught.value.message
            await store.ping()
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_database_that_only_reads_refuses_writes_as_unavailable(pg_url: str) -> None:
    """A standby promoted late, or a primary demoted: writes are refused, reads go on."""

    async def scenario() -> None:
        store = await PostgresStore.open(pg_url)
        try:
            await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
        finally:
            await store.close()
        name = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        store = await PostgresStore.open(pg_url, migrate=False)
        try:
            with pytest.raises(StoreUnavailableError) as caught:
                await store.upsert_region(SHANGHAI, actor=ACTOR, now=T0)
            assert_unavailable(caught.value)
            assert await store.list_regions() == [BEIJING]
        finally:
            await store.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("failures", "outcome"),
    [
        pytest.param(1, "done", id="retried"),
        pytest.param(pgdb.RETRIES, "done", id="retried-to-the-limit"),
        pytest.param(pgdb.RETRIES + 1, "unavailable", id="retries-used-up"),
    ],
)
@pytest.mark.parametrize(
    "error",
    [psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected],
    ids=["serialization", "deadlock"],
)
def test_serialization_failures_and_deadlocks_are_retried_whole(
    pg_url: str, failures: int, outcome: str, error: type[psycopg.Error]
) -> None:
    attempts: list[int] = []

    def unit(conn: Connection) -> str:
        conn.execute("INSERT INTO recognitions (at, region, mode, decision, reason, holder,"
                     " code_key, kid, request_id) VALUES (?, '', '', '', '', '', '', '', ?)",
                     (1_800_000_000, str(len(attempts))))  # fmt: skip
        attempts.append(1)
        if len(attempts) <= failures:
            raise error("simulated")
        return "done"

    async def scenario() -> tuple[str, int]:
        store = await PostgresStore.open(pg_url)
        try:
            try:
                result = await store._write("unit", unit)
            except StoreUnavailableError as exc:
                assert_unavailable(exc)
                result = "unavailable"
            return result, len(await store.list_recognitions())
        finally:
            await store.close()

    result, rows = asyncio.run(scenario())
    assert result == outcome
    assert len(attempts) == min(failures, pgdb.RETRIES) + 1
    assert rows == (1 if outcome == "done" else 0)  # each failed attempt was rolled back


def test_a_read_that_writes_is_a_bug_not_an_outage(pg_url: str) -> None:
    """Reads run READ ONLY: a unit of work that writes in one fails as the programming error
    it is (INTERNAL with an incident id), not as UNAVAILABLE for a client to retry."""

    def writes(conn: Connection) -> None:
        conn.execute("UPDATE registry_version SET version = version + 1")

    async def scenario() -> int:
        store = await PostgresStore.open(pg_url)
        try:
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                await store._read("writes", writes)
            return await store.registry_version()
        finally:
            await store.close()

    assert asyncio.run(scenario()) == 0
