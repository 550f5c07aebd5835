"""RegistryStore and HealthStore: regions and keys, idempotence, conflicts, revocation, versions.

Moved here from tests/test_store.py (which keeps what only SQLite has): the same behaviour is
now required of every backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any

import pytest

from keys.audit import GENESIS_HASH
from keys.errors import (
    AlreadyExistsError,
    ConcurrentChangeError,
    KeyIdReusedError,
    NotFoundError,
)
from keys.model import KeyStatus, Mode, Region, RegionKey
from keys.store import Store
from store_conformance.backends import Backend
from store_conformance.data import (
    ACTOR,
    BEIJING,
    SHANGHAI,
    T0,
    ZHEJIANG,
    anchors,
    conversion,
    keyset,
    private,
    region_key,
)


def test_a_fresh_database_is_empty_at_version_zero(store: Store, arun: Any) -> None:
    async def read() -> tuple[Any, ...]:
        await store.ping()
        data = await store.read_registry()
        head, entries = await store.read_audit(0, 10)
        return (
            await store.registry_version(),
            await store.list_regions(),
            await store.list_keys(),
            data.version,
            data.regions,
            data.keys,
            data.keyset_versions,
            (head.count, head.hash, entries),
            await store.latest_trustlist(),
            await store.all_anchors(),
            await store.list_revocations(),
        )

    assert arun(read()) == (
        0, [], [], 0, (), (), (), (0, GENESIS_HASH, []), None, {}, ([], []),
    )  # fmt: skip


def test_regions_round_trip_ordered_by_code_and_are_replaced(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        for region in (ZHEJIANG, BEIJING, SHANGHAI):
            await store.upsert_region(region, actor=ACTOR, now=T0)
        assert await store.list_regions() == [BEIJING, SHANGHAI, ZHEJIANG]
        renamed = Region("110000", "Beijing City", Mode.CONVERT, timedelta(hours=6), False)
        await store.upsert_region(renamed, actor=ACTOR, now=T0)
        assert await store.list_regions() == [renamed, SHANGHAI, ZHEJIANG]
        assert (await store.read_registry()).regions == (renamed, SHANGHAI, ZHEJIANG)

    arun(scenario())


def test_a_region_is_enabled_and_disabled_and_an_unknown_one_is_not_found(
    store: Store, arun: Any
) -> None:
    async def scenario() -> None:
        await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
        await store.set_region_enabled("110000", False, actor=ACTOR, now=T0)
        assert (await store.list_regions())[0].enabled is False
        await store.set_region_enabled("110000", True, actor=ACTOR, now=T0)
        assert (await store.list_regions())[0].enabled is True
        with pytest.raises(NotFoundError) as caught:
            await store.set_region_enabled("990000", True, actor=ACTOR, now=T0)
        assert caught.value.reason == "NOT_FOUND"

    arun(scenario())


def test_a_key_round_trips_and_still_verifies(store: Store, arun: Any) -> None:
    key = region_key()

    async def scenario() -> list[RegionKey]:
        await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
        assert await store.add_key(key, actor=ACTOR, now=T0) is True
        return await store.list_keys("110000")

    [stored] = arun(scenario())
    assert stored == key
    stored.public_key.verify(b"code", private(1).sign(b"code"))


def test_times_are_stored_to_the_second(store: Store, arun: Any) -> None:
    key = region_key(not_before=T0 + timedelta(microseconds=700_000))

    async def scenario() -> list[RegionKey]:
        await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
        await store.add_key(key, actor=ACTOR, now=T0)
        assert await store.add_key(key, actor=ACTOR, now=T0) is False  # the same after truncation
        return await store.list_keys()

    [stored] = arun(scenario())
    assert stored.not_before == T0


def test_adding_a_key_twice_is_an_idempotent_retry(store: Store, arun: Any) -> None:
    async def scenario() -> tuple[bool, bool, int, int]:
        await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
        first = await store.add_key(region_key(), actor=ACTOR, now=T0)
        version = await store.registry_version()
        second = await store.add_key(region_key(), actor=ACTOR, now=T0)
        return first, second, version, await store.registry_version()

    first, second, before, after = arun(scenario())
    assert (first, second) == (True, False)
    assert before == after


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"not_after": T0 + timedelta(days=10)}, id="other-validity"),
        pytest.param({"public_key": private(2).public_key()}, id="other-key-material"),
        pytest.param({"status": KeyStatus.REVOKED, "revoked_at": T0}, id="status-through-add"),
    ],
)
def test_the_same_kid_with_other_content_conflicts_and_changes_nothing(
    store: Store, arun: Any, changes: dict[str, Any]
) -> None:
    original = region_key()

    async def scenario() -> None:
        await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
        await store.add_key(original, actor=ACTOR, now=T0)
        version = await store.registry_version()
        with pytest.raises(AlreadyExistsError):
            await store.add_key(region_key(kid=original.kid, **changes), actor=ACTOR, now=T0)
        assert await store.list_keys() == [original]
        assert await store.registry_version() == version

    arun(scenario())


def test_a_late_retry_of_an_add_does_not_unrevoke(store: Store, arun: Any) -> None:
    async def scenario() -> list[RegionKey]:
        await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
        await store.add_key(region_key(), actor=ACTOR, now=T0)
        await store.revoke_key("110000", region_key().kid, T0, actor=ACTOR, now=T0)
        assert await store.add_key(region_key(), actor=ACTOR, now=T0) is False
        return await store.list_keys()

    [stored] = arun(scenario())
    assert (stored.status, stored.revoked_at) == (KeyStatus.REVOKED, T0)


def test_a_key_of_an_unknown_region_is_not_found(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        with pytest.raises(NotFoundError):
            await store.add_key(region_key(), actor=ACTOR, now=T0)
        assert await store.list_keys() == []
        assert await store.registry_version() == 0

    arun(scenario())


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        pytest.param(T0, T0 + timedelta(hours=1), T0, id="later-revocation-keeps-earlier"),
        pytest.param(T0, T0 - timedelta(hours=1), T0 - timedelta(hours=1), id="earlier-wins"),
        pytest.param(T0, T0, T0, id="same-time"),
    ],
)
def test_a_revocation_only_ever_moves_earlier(
    store: Store, arun: Any, first: datetime, second: datetime, expected: datetime
) -> None:
    kid = region_key().kid

    async def scenario() -> RegionKey:
        await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
        await store.add_key(region_key(), actor=ACTOR, now=T0)
        revoked = await store.revoke_key("110000", kid, first, actor=ACTOR, now=T0)
        assert (revoked.status, revoked.revoked_at) == (KeyStatus.REVOKED, first)
        returned = await store.revoke_key("110000", kid, second, actor=ACTOR, now=T0)
        [stored] = await store.list_keys()
        assert returned == stored
        return stored

    assert arun(scenario()).revoked_at == expected


def test_revoking_an_unknown_key_is_not_found(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
        with pytest.raises(NotFoundError):
            await store.revoke_key("110000", "nope", T0, actor=ACTOR, now=T0)
        with pytest.raises(NotFoundError):
            await store.revoke_key("990000", "nope", T0, actor=ACTOR, now=T0)

    arun(scenario())


def test_keys_are_listed_by_region_then_not_before_then_kid(store: Store, arun: Any) -> None:
    later = T0 - timedelta(days=1)
    keys = [
        region_key("330000", 5),
        region_key("110000", 4, not_before=later),
        region_key("110000", 3),
        region_key("110000", 2),
        region_key("310000", 6),
    ]

    async def scenario() -> tuple[list[RegionKey], list[RegionKey], tuple[RegionKey, ...]]:
        for region in (BEIJING, SHANGHAI, ZHEJIANG):
            await store.upsert_region(region, actor=ACTOR, now=T0)
        for key in keys:
            await store.add_key(key, actor=ACTOR, now=T0)
        assert await store.list_keys("120000") == []
        return (
            await store.list_keys(),
            await store.list_keys("110000"),
            (await store.read_registry()).keys,
        )

    every, beijing, registry = arun(scenario())
    expected = sorted(keys, key=lambda k: (k.region, k.not_before, k.kid))
    assert every == expected and list(registry) == expected
    assert beijing == [k for k in expected if k.region == "110000"]


def test_the_registry_version_increases_on_every_change_only(store: Store, arun: Any) -> None:
    async def scenario() -> list[int]:
        versions = [await store.registry_version()]

        async def step(action: Awaitable[Any]) -> None:
            await action
            versions.append(await store.registry_version())

        kid = region_key().kid
        await step(store.upsert_region(BEIJING, actor=ACTOR, now=T0))  # change
        await step(store.upsert_region(BEIJING, actor=ACTOR, now=T0))  # no change
        await step(store.set_region_enabled("110000", False, actor=ACTOR, now=T0))  # change
        await step(store.set_region_enabled("110000", False, actor=ACTOR, now=T0))  # no change
        await step(store.add_key(region_key(), actor=ACTOR, now=T0))  # change
        await step(store.add_key(region_key(), actor=ACTOR, now=T0))  # no change
        await step(store.revoke_key("110000", kid, T0, actor=ACTOR, now=T0))  # change
        await step(store.revoke_key("110000", kid, T0 + timedelta(1), actor=ACTOR, now=T0))
        await step(store.revoke_key("110000", kid, T0 - timedelta(1), actor=ACTOR, now=T0))
        await step(store.upsert_region(ZHEJIANG, actor=ACTOR, now=T0))
        await step(store.claim_conversions([conversion("a")]))  # not the registry
        assert (await store.read_registry()).version == versions[-1]
        return versions

    assert arun(scenario()) == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 6, 6]


def test_region_trust_reads_a_region_its_anchors_and_keys(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        empty = await store.region_trust("110000")
        assert (empty.region, empty.anchors, empty.anchors_generation, empty.keyset_version) == (
            None, None, 0, 0,
        )  # fmt: skip
        await store.install_partner(BEIJING, anchors(50), replace=False, actor=ACTOR, now=T0)
        await store.add_key(region_key(), actor=ACTOR, now=T0)
        trust = await store.region_trust("110000")
        assert trust.region == BEIJING
        assert trust.anchors == anchors(50)
        assert (trust.anchors_generation, trust.keyset_version) == (1, 0)
        assert trust.keys == (region_key(),)

    arun(scenario())


def test_a_key_window_is_changed_only_from_the_window_it_was_read_with(
    store: Store, arun: Any
) -> None:
    current = region_key()
    shorter = region_key(not_after=T0 + timedelta(days=10))
    other = region_key(not_after=T0 + timedelta(days=20))

    async def scenario() -> None:
        await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
        await store.add_key(current, actor=ACTOR, now=T0)
        version = await store.registry_version()
        head, _ = await store.read_audit(0, 1)
        stored = await store.set_key_window(current, shorter, actor=ACTOR, now=T0)
        assert stored == shorter and await store.list_keys() == [shorter]
        assert await store.registry_version() > version
        after, entries = await store.read_audit(head.count, 10)
        assert after.count == head.count + 1 and entries[-1].action == "key.update"
        with pytest.raises(ConcurrentChangeError) as caught:
            await store.set_key_window(current, other, actor=ACTOR, now=T0)  # stale read
        assert caught.value.reason == "CONCURRENT_CHANGE"
        assert await store.list_keys() == [shorter]

    arun(scenario())


def test_a_kid_reused_for_another_key_in_a_key_set_is_refused(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.install_partner(BEIJING, anchors(50), replace=False, actor=ACTOR, now=T0)
        first = region_key(seed=1)
        await store.apply_keyset(keyset("110000", 1, (first,), expected_version=0))
        impostor = region_key(seed=2, kid=first.kid)
        with pytest.raises(KeyIdReusedError) as caught:
            await store.apply_keyset(keyset("110000", 2, (impostor,), expected_version=1))
        assert caught.value.reason == "KEY_ID_REUSED"
        assert await store.list_keys() == [first]

    arun(scenario())


def test_what_one_store_writes_another_on_the_same_database_reads(
    backend: Backend, arun: Any
) -> None:
    async def scenario() -> tuple[Any, ...]:
        writer = await backend.open()
        try:
            await writer.upsert_region(BEIJING, actor=ACTOR, now=T0)
            await writer.add_key(region_key(), actor=ACTOR, now=T0)
        finally:
            await writer.close()
        reader = await backend.open()
        try:
            return (
                await reader.registry_version(),
                await reader.list_regions(),
                await reader.list_keys(),
            )
        finally:
            await reader.close()

    assert arun(scenario()) == (2, [BEIJING], [region_key()])


def test_concurrent_writes_on_one_store_all_land(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.upsert_region(BEIJING, actor=ACTOR, now=T0)
        results = await asyncio.gather(
            *(store.add_key(region_key(seed=i), actor=ACTOR, now=T0) for i in range(1, 21))
        )
        assert all(results)
        assert len(await store.list_keys()) == 20
        assert await store.registry_version() == 21
        head, entries = await store.read_audit(0, 100)
        assert head.count == 21 and [e.seq for e in entries] == list(range(1, 22))

    arun(scenario())
