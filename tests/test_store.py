"""What only SQLiteStore has: its conversion inspection methods, its file and its pragmas.

Every role protocol's behaviour (regions, keys, versions, failures, ...) is the store
conformance suite's, run against every backend: tests/store_conformance/.
"""

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
    NotFoundError,
    StoreUnavailableError,
)
from keys.model import ConversionRecord, Mode, Region, RegionKey
from keys.store import MIGRATIONS, SQLiteStore

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


def test_schema_is_versioned_and_wal(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    run(lambda store: store.ping(), db)
    run(lambda store: store.ping(), db)  # reopening does not re-run migrations
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert rows == [(version,) for version, _ in MIGRATIONS]  # each migration ran once
    assert mode == "wal"


# --- failures ----------------------------------------------------------------------------------


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
