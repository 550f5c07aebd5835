"""The database failing: down at start, a connection lost mid-call, a lock held too long.

A lock held too long: another connection holds the lock every write takes (SQLite's write
lock, PostgreSQL's write lock of :mod:`keys.store.pgdb`) past the store's wait. A connection
lost mid-call: PostgreSQL's backend terminated (``pg_terminate_backend``) while the call waits;
SQLite's connection closed under the store (:meth:`Backend.lose_connection_during`).

Each gives :class:`StoreUnavailableError` (reason ``STORE_UNAVAILABLE``, gRPC ``UNAVAILABLE``:
nothing was done, retry later; docs/api.md "RPC errors"), never a bare driver error that would
become INTERNAL, and leaves everything stored as it was (read back through a fresh store).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from gateway.grpc.errors import rich_status
from keys.errors import StoreUnavailableError
from keys.store import Store
from store_conformance.backends import Backend
from store_conformance.data import (
    ACTOR,
    BEIJING,
    SHANGHAI,
    T0,
    conversion,
    digest,
    populate,
    read_snapshot,
    recognition,
    region_key,
    snapshot,
)

pytestmark = pytest.mark.doc('api.md "RPC errors"')


def assert_unavailable(error: StoreUnavailableError) -> None:
    """The documented status of a database outage, and a message an operator can read."""
    assert type(error) is StoreUnavailableError
    assert error.reason == "STORE_UNAVAILABLE"
    assert rich_status(error).code is grpc.StatusCode.UNAVAILABLE
    assert error.message and "\n" not in error.message


# Writes of every role: each must fail whole under a failure, and change nothing.
WRITES: list[Any] = [
    pytest.param(lambda s: s.upsert_region(SHANGHAI, actor=ACTOR, now=T0), id="upsert_region"),
    pytest.param(
        lambda s: s.set_region_enabled("110000", False, actor=ACTOR, now=T0),
        id="set_region_enabled",
    ),
    pytest.param(lambda s: s.add_key(region_key("110000", 9), actor=ACTOR, now=T0), id="add_key"),
    pytest.param(
        lambda s: s.revoke_key("110000", region_key("110000", 1).kid, T0, actor=ACTOR, now=T0),
        id="revoke_key",
    ),
    pytest.param(lambda s: s.claim_conversions([conversion("z")]), id="claim_conversions"),
    pytest.param(lambda s: s.append_recognitions([recognition(9)]), id="append_recognitions"),
    pytest.param(
        lambda s: s.record_trustlist(digest("list 2"), b"{}", expected_latest=1, now=T0),
        id="record_trustlist",
    ),
    pytest.param(lambda s: s.open_stock_job(digest("file"), "f.csv", T0), id="open_stock_job"),
    pytest.param(
        lambda s: s.purge(recognitions_before=T0.replace(year=2030), conversions_before=None),
        id="purge",
    ),
]
Write = Callable[[Store], Awaitable[object]]


def test_a_database_that_is_down_at_start_is_unavailable(backend: Backend, arun: Any) -> None:
    with pytest.raises(StoreUnavailableError) as caught:
        arun(backend.open_down())
    assert_unavailable(caught.value)


@pytest.mark.parametrize("write", WRITES)
def test_a_lock_held_too_long_is_unavailable_and_changes_nothing(
    backend: Backend, arun: Any, monkeypatch: pytest.MonkeyPatch, write: Write
) -> None:
    backend.shorten_lock_wait(monkeypatch)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        store = await backend.open()
        try:
            await populate(store)
            before = await snapshot(store)
            async with backend.hold_lock():
                with pytest.raises(StoreUnavailableError) as caught:
                    await write(store)
                reads = await read_snapshot(store)  # reads go on meanwhile
                assert reads == {k: v for k, v in before.items() if k in reads}
            assert_unavailable(caught.value)
            return before, await snapshot(store)  # the same store works again
        finally:
            await store.close()

    before, after = arun(scenario())
    assert after == before


@pytest.mark.parametrize("write", WRITES)
def test_a_connection_lost_mid_call_is_unavailable_and_changes_nothing(
    backend: Backend, arun: Any, write: Write
) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        store = await backend.open()
        try:
            await populate(store)
            before = await snapshot(store)
            with pytest.raises(StoreUnavailableError) as caught:
                await backend.lose_connection_during(store, lambda: write(store))
            assert_unavailable(caught.value)
        finally:
            await store.close()
        fresh = await backend.open()
        try:
            return before, await snapshot(fresh)
        finally:
            await fresh.close()

    before, after = arun(scenario())
    assert after == before


def test_after_a_lost_connection_a_server_store_recovers_and_sqlite_needs_reopening(
    backend: Backend, arun: Any
) -> None:
    """The one legitimate difference: a PostgreSQL store opens a new connection by itself; a
    SQLite store's connection is the file it opened, so it stays UNAVAILABLE (reads, writes,
    the health check) until the process opens the file again."""

    async def scenario() -> None:
        store = await backend.open()
        try:
            await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
            with pytest.raises(StoreUnavailableError):
                await backend.lose_connection_during(
                    store, lambda: store.upsert_region(SHANGHAI, actor=ACTOR, now=T0)
                )
            if backend.reconnects:
                await store.ping()
                await store.upsert_region(SHANGHAI, actor=ACTOR, now=T0)
                assert await store.list_regions() == [BEIJING, SHANGHAI]
                return
            for call in (store.ping, store.read_registry, store.latest_trustlist):
                with pytest.raises(StoreUnavailableError) as caught:
                    await call()
                assert_unavailable(caught.value)
        finally:
            await store.close()
        reopened = await backend.open()
        try:
            assert await reopened.list_regions() == [BEIJING]
        finally:
            await reopened.close()

    arun(scenario())


def test_a_closed_store_is_unavailable_and_closing_twice_is_harmless(
    backend: Backend, arun: Any
) -> None:
    async def scenario() -> None:
        store = await backend.open()
        await store.close()
        await store.close()
        calls: list[Callable[[], Awaitable[object]]] = [
            store.ping,
            store.list_keys,
            lambda: store.upsert_region(BEIJING, actor=ACTOR, now=T0),
            lambda: store.claim_conversions([conversion("a")]),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailableError) as caught:
                await call()
            assert_unavailable(caught.value)

    arun(scenario())
