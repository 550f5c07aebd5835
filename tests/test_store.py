"""SQLiteStore: round trips, idempotence, conflicts, revocation, versions, conversions, failures."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from keys.crypto import PrivateKey
from keys.errors import (
    AlreadyExistsError,
    ConfigurationError,
    NotFoundError,
    StoreUnavailableError,
)
from keys.model import ConversionRecord, KeyStatus, Mode, Region, RegionKey
from keys.store import MIGRATIONS, SCHEMA_VERSION, SQLiteStore, Store

T = TypeVar("T")
T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
BEIJING = Region("110000", "Beijing", Mode.SHOW, timedelta(hours=24))
ZHEJIANG = Region("330000", "Zhejiang", Mode.CONVERT, timedelta(hours=12))


def run(fn: Callable[[SQLiteStore], Awaitable[T]], path: str | Path = ":memory:") -> T:
    """Open a store, run ``fn`` on it, close it."""

    async def main() -> T:
        store = await SQLiteStore.open(path)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(main())


def region_key(region: str = "110000", seed: int = 1, **changes: Any) -> RegionKey:
    public = PrivateKey.from_ed25519_seed(bytes([seed]) * 32).public_key()
    fields: dict[str, Any] = {
        "region": region,
        "kid": public.fingerprint(),
        "public_key": public,
        "not_before": T0 - timedelta(days=30),
        "not_after": T0 + timedelta(days=335),
    }
    fields.update(changes)
    return RegionKey(**fields)


def conversion(source: str, region: str = "330000", **changes: Any) -> ConversionRecord:
    fields: dict[str, Any] = {
        "region": region,
        "source_key": source,
        "holder": "h1-" + source,
        "converted_code_id": "c-" + source,
        "converted_code": "HC1:" + source,
        "issued_at": T0,
        "expires_at": T0 + timedelta(days=1),
        "created_at": T0,
    }
    fields.update(changes)
    return ConversionRecord(**fields)


def test_sqlite_store_satisfies_protocol() -> None:
    async def check(store: SQLiteStore) -> None:
        typed: Store = store  # checked by mypy; at runtime just a smoke test
        await typed.ping()

    run(check)


def test_fresh_database_is_empty_at_version_zero() -> None:
    async def check(store: SQLiteStore) -> tuple[int, list[Region], list[RegionKey]]:
        return await store.registry_version(), await store.list_regions(), await store.list_keys()

    assert run(check) == (0, [], [])


def test_region_round_trip_and_update() -> None:
    async def check(store: SQLiteStore) -> None:
        await store.upsert_region(ZHEJIANG)
        await store.upsert_region(BEIJING)
        assert await store.list_regions() == [BEIJING, ZHEJIANG]
        renamed = Region("110000", "Beijing City", Mode.CONVERT, timedelta(hours=6), False)
        await store.upsert_region(renamed)
        assert await store.list_regions() == [renamed, ZHEJIANG]

    run(check)


def test_set_region_enabled() -> None:
    async def check(store: SQLiteStore) -> None:
        await store.upsert_region(BEIJING)
        await store.set_region_enabled("110000", False)
        assert (await store.list_regions())[0].enabled is False
        await store.set_region_enabled("110000", True)
        assert (await store.list_regions())[0].enabled is True
        with pytest.raises(NotFoundError):
            await store.set_region_enabled("990000", True)

    run(check)


def test_key_round_trip_rebuilds_public_key_from_spki() -> None:
    key = region_key()

    async def check(store: SQLiteStore) -> list[RegionKey]:
        await store.upsert_region(BEIJING)
        assert await store.add_key(key) is True
        return await store.list_keys("110000")

    [stored] = run(check)
    assert stored == key
    message = b"code"
    stored.public_key.verify(message, PrivateKey.from_ed25519_seed(b"\x01" * 32).sign(message))


def test_times_are_stored_to_the_second() -> None:
    key = region_key(not_before=T0 + timedelta(microseconds=700_000))

    async def check(store: SQLiteStore) -> list[RegionKey]:
        await store.upsert_region(BEIJING)
        await store.add_key(key)
        assert await store.add_key(key) is False  # still the same key after truncation
        return await store.list_keys()

    [stored] = run(check)
    assert stored.not_before == T0


def test_add_key_twice_is_idempotent() -> None:
    async def check(store: SQLiteStore) -> tuple[bool, bool, int, int]:
        await store.upsert_region(BEIJING)
        first = await store.add_key(region_key())
        version = await store.registry_version()
        second = await store.add_key(region_key())
        return first, second, version, await store.registry_version()

    first, second, before, after = run(check)
    assert (first, second) == (True, False)
    assert before == after


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"not_after": T0 + timedelta(days=10)}, id="other-validity"),
        pytest.param(
            {"public_key": PrivateKey.from_ed25519_seed(b"\x02" * 32).public_key()},
            id="other-key-material",
        ),
        pytest.param(
            {"status": KeyStatus.REVOKED, "revoked_at": T0}, id="status-change-through-add"
        ),
    ],
)
def test_add_key_with_same_kid_and_other_content_conflicts(changes: dict[str, Any]) -> None:
    original = region_key()

    async def check(store: SQLiteStore) -> None:
        await store.upsert_region(BEIJING)
        await store.add_key(original)
        version = await store.registry_version()
        with pytest.raises(AlreadyExistsError):
            await store.add_key(region_key(kid=original.kid, **changes))
        assert await store.list_keys() == [original]
        assert await store.registry_version() == version

    run(check)


def test_late_retry_of_add_does_not_unrevoke() -> None:
    async def check(store: SQLiteStore) -> list[RegionKey]:
        await store.upsert_region(BEIJING)
        await store.add_key(region_key())
        await store.revoke_key("110000", region_key().kid, T0)
        assert await store.add_key(region_key()) is False
        return await store.list_keys()

    [stored] = run(check)
    assert stored.status is KeyStatus.REVOKED
    assert stored.revoked_at == T0


def test_add_key_to_unknown_region_is_not_found() -> None:
    async def check(store: SQLiteStore) -> None:
        with pytest.raises(NotFoundError):
            await store.add_key(region_key())
        assert await store.list_keys() == []

    run(check)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        pytest.param(T0, T0 + timedelta(hours=1), T0, id="later-revocation-keeps-earlier"),
        pytest.param(T0, T0 - timedelta(hours=1), T0 - timedelta(hours=1), id="earlier-wins"),
        pytest.param(T0, T0, T0, id="same-time"),
    ],
)
def test_revocation_only_moves_earlier(
    first: datetime, second: datetime, expected: datetime
) -> None:
    kid = region_key().kid

    async def check(store: SQLiteStore) -> RegionKey:
        await store.upsert_region(BEIJING)
        await store.add_key(region_key())
        revoked = await store.revoke_key("110000", kid, first)
        assert revoked.status is KeyStatus.REVOKED and revoked.revoked_at == first
        returned = await store.revoke_key("110000", kid, second)
        [stored] = await store.list_keys()
        assert returned == stored
        return stored

    stored = run(check)
    assert stored.revoked_at == expected


def test_revoke_unknown_key_is_not_found() -> None:
    async def check(store: SQLiteStore) -> None:
        await store.upsert_region(BEIJING)
        with pytest.raises(NotFoundError):
            await store.revoke_key("110000", "nope", T0)
        with pytest.raises(NotFoundError):
            await store.revoke_key("990000", "nope", T0)

    run(check)


def test_list_keys_filters_by_region() -> None:
    async def check(store: SQLiteStore) -> None:
        await store.upsert_region(BEIJING)
        await store.upsert_region(ZHEJIANG)
        await store.add_key(region_key("110000", 1))
        await store.add_key(region_key("330000", 2))
        assert {k.region for k in await store.list_keys("110000")} == {"110000"}
        assert {k.region for k in await store.list_keys("330000")} == {"330000"}
        assert len(await store.list_keys()) == 2
        assert await store.list_keys("120000") == []

    run(check)


def test_registry_version_increases_on_every_change_only() -> None:
    async def check(store: SQLiteStore) -> list[int]:
        versions = [await store.registry_version()]

        async def step(action: Awaitable[Any]) -> None:
            await action
            versions.append(await store.registry_version())

        kid = region_key().kid
        await step(store.upsert_region(BEIJING))  # change
        await step(store.upsert_region(BEIJING))  # no change
        await step(store.set_region_enabled("110000", False))  # change
        await step(store.set_region_enabled("110000", False))  # no change
        await step(store.add_key(region_key()))  # change
        await step(store.add_key(region_key()))  # no change
        await step(store.revoke_key("110000", kid, T0))  # change
        await step(store.revoke_key("110000", kid, T0 + timedelta(1)))  # no change
        await step(store.revoke_key("110000", kid, T0 - timedelta(1)))  # change
        await step(store.put_conversions([conversion("a", region="110000")]))  # not registry
        return versions

    assert run(check) == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_conversions_insert_or_ignore() -> None:
    async def check(store: SQLiteStore) -> None:
        await store.upsert_region(ZHEJIANG)
        first = conversion("src-1")
        await store.put_conversions([first, conversion("src-2")])
        # A retried batch with a different converted code for src-1: the first conversion wins.
        await store.put_conversions(
            [
                conversion("src-1", converted_code="HC1:other", converted_code_id="c-other"),
                conversion("src-3"),
            ]
        )
        assert await store.get_conversion("330000", "src-1") == first
        assert await store.get_conversion("330000", "missing") is None
        assert await store.get_conversion("110000", "src-1") is None
        listed = await store.list_conversions("330000")
        assert [r.source_key for r in listed] == ["src-1", "src-2", "src-3"]
        assert len(await store.list_conversions(limit=2)) == 2
        assert await store.list_conversions("110000") == []

    run(check)


def test_put_conversions_is_one_transaction() -> None:
    async def check(store: SQLiteStore) -> None:
        await store.upsert_region(ZHEJIANG)
        await store.put_conversions([conversion("src-1")])
        with pytest.raises(AlreadyExistsError):
            # src-2 reuses src-1's converted code id: the whole batch is refused.
            await store.put_conversions(
                [conversion("src-3"), conversion("src-2", converted_code_id="c-src-1")]
            )
        with pytest.raises(NotFoundError):
            await store.put_conversions([conversion("src-4"), conversion("x", region="110000")])
        assert [r.source_key for r in await store.list_conversions()] == ["src-1"]

    run(check)


def test_conversion_round_trip_with_revocation() -> None:
    record = conversion("src-1", revoked_at=T0 + timedelta(hours=2))

    async def check(store: SQLiteStore) -> ConversionRecord | None:
        await store.upsert_region(ZHEJIANG)
        await store.put_conversions([record])
        return await store.get_conversion("330000", "src-1")

    assert run(check) == record


@pytest.mark.parametrize(
    "limit",
    [pytest.param(0, id="zero"), pytest.param(-1, id="negative"), pytest.param(10**6, id="huge")],
)
def test_list_conversions_rejects_bad_limit(limit: int) -> None:
    async def check(store: SQLiteStore) -> None:
        with pytest.raises(ValueError):
            await store.list_conversions(limit=limit)

    run(check)


def test_data_survives_reopen(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"

    async def write(store: SQLiteStore) -> None:
        await store.upsert_region(BEIJING)
        await store.add_key(region_key())

    async def read(store: SQLiteStore) -> tuple[int, list[Region], list[RegionKey]]:
        return await store.registry_version(), await store.list_regions(), await store.list_keys()

    run(write, db)
    assert run(read, db) == (2, [BEIJING], [region_key()])


def test_schema_is_versioned_and_wal(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    run(lambda store: store.ping(), db)
    run(lambda store: store.ping(), db)  # reopening does not re-run migrations
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert rows == [(version,) for version, _ in MIGRATIONS]  # each migration ran once
    assert mode == "wal"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    run(lambda store: store.ping(), db)
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigurationError, match="upgrade"):
        run(lambda store: store.ping(), db)


# --- failures ----------------------------------------------------------------------------------


def test_closed_store_is_unavailable() -> None:
    async def check() -> None:
        store = await SQLiteStore.open(":memory:")
        await store.close()
        await store.close()  # idempotent
        with pytest.raises(StoreUnavailableError):
            await store.ping()
        with pytest.raises(StoreUnavailableError):
            await store.upsert_region(BEIJING)
        with pytest.raises(StoreUnavailableError):
            await store.list_keys()

    asyncio.run(check())


@pytest.mark.parametrize(
    "make_path",
    [
        pytest.param(lambda tmp: tmp / "missing-dir" / "registry.db", id="missing-directory"),
        pytest.param(lambda tmp: tmp, id="path-is-a-directory"),
    ],
)
def test_unopenable_path_is_unavailable(make_path: Callable[[Path], Path], tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError):
        run(lambda store: store.ping(), make_path(tmp_path))


def test_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    db.write_bytes(b"this is not a database at all, just some bytes" * 100)
    with pytest.raises(StoreUnavailableError):
        run(lambda store: store.ping(), db)


def test_read_only_database_refuses_writes_and_keeps_data(tmp_path: Path) -> None:
    """An unwritable database (simulated with SQLite's query_only, since tests may run as root)."""
    db = tmp_path / "registry.db"
    run(lambda store: store.upsert_region(BEIJING), db)

    async def check(store: SQLiteStore) -> None:
        await store._db.run_plain("ro", lambda c: c.execute("PRAGMA query_only = ON").fetchall())
        with pytest.raises(StoreUnavailableError):
            await store.upsert_region(ZHEJIANG)
        with pytest.raises(StoreUnavailableError):
            await store.add_key(region_key())
        # The store is still usable and nothing was half-written.
        assert await store.list_regions() == [BEIJING]
        assert await store.registry_version() == 1

    run(check, db)


def test_locked_database_is_unavailable_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    run(lambda store: store.upsert_region(BEIJING), db)
    blocker = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")

        async def check(store: SQLiteStore) -> None:
            with pytest.raises(StoreUnavailableError):
                await store.set_region_enabled("110000", False)

        import keys.store.sqlite as sqlite_module

        original = sqlite_module.BUSY_TIMEOUT_SECONDS
        sqlite_module.BUSY_TIMEOUT_SECONDS = 0.1
        try:
            run(check, db)
        finally:
            sqlite_module.BUSY_TIMEOUT_SECONDS = original
    finally:
        blocker.rollback()
        blocker.close()
    assert run(lambda store: store.list_regions(), db) == [BEIJING]


def test_concurrent_writes_on_one_store_are_serialised() -> None:
    async def check(store: SQLiteStore) -> None:
        await store.upsert_region(BEIJING)
        results = await asyncio.gather(*(store.add_key(region_key(seed=i)) for i in range(1, 21)))
        assert all(results)
        assert len(await store.list_keys()) == 20
        assert await store.registry_version() == 21

    run(check)
