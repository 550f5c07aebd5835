"""KeyRegistry and RegistrySnapshot: lookups stay within a region; changes are picked up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keys.crypto import PrivateKey
from keys.errors import NotFoundError, StoreUnavailableError
from keys.model import KeyLookup, KeyStatus, Mode, Region, RegionKey
from keys.registry import KeyRegistry, RegistrySnapshot
from keys.store import SQLiteStore

T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
BEIJING = Region("110000", "Beijing", Mode.SHOW, timedelta(hours=24))
TIANJIN = Region("120000", "Tianjin", Mode.SHOW, timedelta(hours=24))


def region_key(region: str, seed: int, **changes: Any) -> RegionKey:
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


# Two regions that use the *same* key id for different keys: the classic confusion attack.
BJ_KEY = region_key("110000", 1, kid="shared-kid")
TJ_KEY = region_key("120000", 2, kid="shared-kid")
BJ_OLD = region_key("110000", 3, not_before=T0 - timedelta(days=400), status=KeyStatus.RETIRED)
BJ_REVOKED = region_key("110000", 4, status=KeyStatus.REVOKED, revoked_at=T0)


def snapshot() -> RegistrySnapshot:
    return RegistrySnapshot.build(7, [BEIJING, TIANJIN], [TJ_KEY, BJ_REVOKED, BJ_OLD, BJ_KEY])


@pytest.mark.parametrize(
    ("region", "hint", "expected"),
    [
        pytest.param("110000", "shared-kid", (BJ_KEY,), id="hint-in-beijing"),
        pytest.param("120000", "shared-kid", (TJ_KEY,), id="same-hint-in-tianjin"),
        pytest.param("120000", BJ_OLD.kid, (), id="other-regions-kid-not-found"),
        pytest.param("110000", None, (BJ_KEY, BJ_OLD, BJ_REVOKED), id="no-hint-active-first"),
        pytest.param("130000", None, (), id="unknown-region"),
        pytest.param("130000", "shared-kid", (), id="unknown-region-with-hint"),
        pytest.param("110000", "missing", (), id="unknown-kid"),
    ],
)
def test_keys_for_never_crosses_regions(
    region: str, hint: str | None, expected: tuple[RegionKey, ...]
) -> None:
    lookup: KeyLookup = snapshot()
    found = lookup.keys_for(region, hint)
    assert found == expected
    assert all(key.region == region for key in found)


def test_snapshot_queries() -> None:
    snap = snapshot()
    assert snap.version == 7
    assert snap.region("110000") == BEIJING
    assert snap.region("990000") is None
    assert set(snap.keys()) == {BJ_KEY, BJ_OLD, BJ_REVOKED, TJ_KEY}
    assert snap.keys("120000") == (TJ_KEY,)
    assert snap.keys("990000") == ()


def test_snapshot_is_immutable() -> None:
    snap = snapshot()
    with pytest.raises(AttributeError):
        snap.version = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.regions["130000"] = BEIJING  # type: ignore[index]


def test_snapshot_does_not_follow_the_callers_dict() -> None:
    regions = {"110000": BEIJING}
    snap = RegistrySnapshot(1, regions, ())
    regions["120000"] = TIANJIN
    assert snap.region("120000") is None


def test_snapshot_refuses_misfiled_region() -> None:
    with pytest.raises(ValueError):
        RegistrySnapshot(1, {"120000": BEIJING}, ())


def run_with_registry(coro_fn: Any, path: str | Path = ":memory:") -> Any:
    async def main() -> Any:
        store = await SQLiteStore.open(path)
        try:
            return await coro_fn(store, KeyRegistry(store))
        finally:
            await store.close()

    return asyncio.run(main())


def test_snapshot_before_load_is_a_runtime_error() -> None:
    async def check(store: SQLiteStore, registry: KeyRegistry) -> None:
        with pytest.raises(RuntimeError):
            _ = registry.snapshot

    run_with_registry(check)


def test_writes_through_the_registry_update_the_snapshot() -> None:
    async def check(store: SQLiteStore, registry: KeyRegistry) -> None:
        first = await registry.load()
        assert first.version == 0 and first.keys() == ()
        await registry.add_region(BEIJING)
        assert await registry.add_key(BJ_KEY) is True
        assert await registry.add_key(BJ_KEY) is False
        assert registry.snapshot.keys_for("110000", "shared-kid") == (BJ_KEY,)
        revoked = await registry.revoke_key("110000", "shared-kid", T0)
        assert registry.snapshot.keys_for("110000", "shared-kid") == (revoked,)
        await registry.set_region_enabled("110000", False)
        region = registry.snapshot.region("110000")
        assert region is not None and region.enabled is False
        # The first snapshot, held by a reader, never changed.
        assert first.version == 0 and first.region("110000") is None
        with pytest.raises(NotFoundError):
            await registry.set_region_enabled("990000", True)

    run_with_registry(check)


def test_refresh_if_changed_is_cheap_when_nothing_changed() -> None:
    async def check(store: SQLiteStore, registry: KeyRegistry) -> None:
        await registry.add_region(BEIJING)
        before = registry.snapshot
        assert await registry.refresh_if_changed() is False
        assert registry.snapshot is before

    run_with_registry(check)


def test_refresh_picks_up_a_change_made_through_a_second_store(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"

    async def check(store: SQLiteStore, registry: KeyRegistry) -> None:
        await registry.add_region(BEIJING)
        other = await SQLiteStore.open(db)  # another replica, or the operator's CLI
        try:
            await other.add_key(BJ_KEY)
            await other.upsert_region(TIANJIN)
        finally:
            await other.close()
        assert registry.snapshot.keys_for("110000", "shared-kid") == ()
        assert await registry.refresh_if_changed() is True
        assert registry.snapshot.keys_for("110000", "shared-kid") == (BJ_KEY,)
        assert registry.snapshot.region("120000") == TIANJIN
        assert await registry.refresh_if_changed() is False

    run_with_registry(check, db)


def test_refresh_before_load_loads() -> None:
    async def check(store: SQLiteStore, registry: KeyRegistry) -> None:
        await store.upsert_region(BEIJING)
        assert await registry.refresh_if_changed() is True
        assert registry.snapshot.region("110000") == BEIJING

    run_with_registry(check)


def test_failed_refresh_keeps_the_previous_snapshot() -> None:
    async def main() -> None:
        store = await SQLiteStore.open(":memory:")
        registry = KeyRegistry(store)
        await registry.add_region(BEIJING)
        held = registry.snapshot
        await store.close()
        with pytest.raises(StoreUnavailableError):
            await registry.refresh_if_changed()
        assert registry.snapshot is held

    asyncio.run(main())
