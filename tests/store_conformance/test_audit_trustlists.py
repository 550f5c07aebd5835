"""AuditStore and TrustListStore: one hash chain read in order, trust-list content versions."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from itertools import pairwise
from typing import Any

import pytest

from keys.audit import GENESIS_HASH, verify_store
from keys.errors import AuditIntegrityError, ConcurrentChangeError
from keys.records import TrustListVersion
from keys.store import Store
from store_conformance.backends import Backend
from store_conformance.data import (
    ACTOR,
    BEIJING,
    T0,
    ZHEJIANG,
    anchors,
    conversion,
    digest,
    keyset,
    recognition,
    region_key,
    revocation_batch,
)


async def every_audited_write(store: Store) -> None:
    """One of each audited change, each at its own time."""
    at = [T0 + timedelta(minutes=n) for n in range(8)]
    await store.install_partner(BEIJING, anchors(50), replace=False, actor=ACTOR, now=at[0])
    await store.upsert_region(ZHEJIANG, actor="operator:two", now=at[1])
    await store.set_region_enabled("330000", False, actor=ACTOR, now=at[2])
    await store.add_key(region_key("330000", 2), actor=ACTOR, now=at[3])
    await store.revoke_key("330000", region_key("330000", 2).kid, T0, actor=ACTOR, now=at[4])
    await store.apply_keyset(keyset("110000", 1, (region_key(),), expected_version=0, at=at[5]))
    await store.apply_key_revocation(
        "110000", region_key().kid, T0, digest=digest("r"), actor="partner:110000", now=at[6]
    )
    await store.apply_revocation_batch(revocation_batch("110000", "b-1", codes=("x",)))


def test_every_audited_change_is_one_entry_of_one_chain_in_order(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await every_audited_write(store)
        # Not audited: conversions, the recognition log, trust-list versions, no-op changes.
        await store.claim_conversions([conversion("a", region="110000")])
        await store.append_recognitions([recognition(1)])
        await store.record_trustlist(digest("l"), b"{}", expected_latest=0, now=T0)
        await store.set_region_enabled("330000", False, actor=ACTOR, now=T0)
        head, entries = await store.read_audit(0, 100)
        assert [(e.seq, e.action, e.region, e.actor) for e in entries] == [
            (1, "partner.install", "110000", ACTOR),
            (2, "region.upsert", "330000", "operator:two"),
            (3, "region.disable", "330000", ACTOR),
            (4, "key.add", "330000", ACTOR),
            (5, "key.revoke", "330000", ACTOR),
            (6, "keyset.apply", "110000", "partner:110000"),
            (7, "key.revoke", "110000", "partner:110000"),
            (8, "revocations.apply", "110000", "partner:110000"),
        ]
        assert [e.at for e in entries[:7]] == [T0 + timedelta(minutes=n) for n in range(7)]
        assert entries[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in pairwise(entries))
        assert (head.count, head.hash) == (8, entries[-1].hash)
        assert await verify_store(store) == head

    arun(scenario())


def test_the_audit_trail_is_read_in_pages_after_a_sequence_number(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await every_audited_write(store)
        head, everything = await store.read_audit(0, 100)
        pages = []
        after = 0
        while True:
            page_head, page = await store.read_audit(after, 3)
            assert page_head == head
            if not page:
                break
            pages.append([e.seq for e in page])
            after = page[-1].seq
        assert pages == [[1, 2, 3], [4, 5, 6], [7, 8]]
        assert (await store.read_audit(5, 100))[1] == everything[5:]
        assert (await store.read_audit(8, 100))[1] == []

    arun(scenario())


@pytest.mark.parametrize("limit", [0, -1, 100_001])
def test_a_bad_audit_page_size_is_a_value_error(store: Store, arun: Any, limit: int) -> None:
    with pytest.raises(ValueError):
        arun(store.read_audit(0, limit))


def test_an_audit_entry_changed_behind_the_stores_back_is_detected(
    backend: Backend, store: Store, arun: Any
) -> None:
    arun(every_audited_write(store))
    backend.execute("UPDATE audit_log SET actor = 'operator:mallory' WHERE seq = 3")
    with pytest.raises(AuditIntegrityError) as caught:
        arun(verify_store(store))
    assert caught.value.reason == "AUDIT_TAMPERED"


def test_audit_writes_from_two_stores_at_once_stay_one_chain(backend: Backend, arun: Any) -> None:
    """Two processes (or replicas) on one database: one linear chain, no seq used twice."""

    async def scenario() -> None:
        one, two = await backend.open(), await backend.open()
        try:
            await one.upsert_region(BEIJING, actor=ACTOR, now=T0)
            await asyncio.gather(
                *(
                    store.add_key(region_key(seed=seed), actor=f"operator:s{n}", now=T0)
                    for seed in range(1, 13)
                    for n, store in enumerate((one, two))
                    if seed % 2 == n
                )
            )
            head = await verify_store(two)
            assert head.count == 13
            assert head == await verify_store(one)
        finally:
            await one.close()
            await two.close()

    arun(scenario())


def test_trust_list_versions_count_up_from_one_and_are_kept(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        assert await store.latest_trustlist() is None
        assert await store.get_trustlist(1) is None
        first = await store.record_trustlist(digest("1"), b'{"n":1}', expected_latest=0, now=T0)
        assert first == TrustListVersion(1, digest("1"), b'{"n":1}', T0)
        later = T0 + timedelta(hours=1)
        second = await store.record_trustlist(digest("2"), b'{"n":2}', expected_latest=1, now=later)
        assert (second.version, second.created_at) == (2, later)
        assert await store.latest_trustlist() == second
        kept = await store.get_trustlist(1)
        assert kept == first and kept is not None and kept.created_at == T0
        assert await store.get_trustlist(3) is None

    arun(scenario())


def test_recording_the_latest_content_again_is_no_new_version(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        first = await store.record_trustlist(digest("1"), b"1", expected_latest=0, now=T0)
        again = await store.record_trustlist(digest("1"), b"1", expected_latest=0, now=T0)
        assert again == first
        assert (await store.latest_trustlist()) == first

    arun(scenario())


def test_a_trust_list_recorded_over_a_stale_version_is_refused(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.record_trustlist(digest("1"), b"1", expected_latest=0, now=T0)
        with pytest.raises(ConcurrentChangeError) as caught:
            await store.record_trustlist(digest("2"), b"2", expected_latest=0, now=T0)
        assert caught.value.reason == "CONCURRENT_CHANGE"
        latest = await store.latest_trustlist()
        assert latest is not None and (latest.version, latest.content) == (1, b"1")

    arun(scenario())


def test_two_stores_publishing_at_once_never_share_a_version(backend: Backend, arun: Any) -> None:
    async def scenario() -> None:
        one, two = await backend.open(), await backend.open()
        try:
            results = await asyncio.gather(
                one.record_trustlist(digest("a"), b"a", expected_latest=0, now=T0),
                two.record_trustlist(digest("b"), b"b", expected_latest=0, now=T0),
                return_exceptions=True,
            )
            won = [r for r in results if isinstance(r, TrustListVersion)]
            lost = [r for r in results if not isinstance(r, TrustListVersion)]
            assert len(won) == 1 and [type(e) for e in lost] == [ConcurrentChangeError]
            assert await one.latest_trustlist() == await two.latest_trustlist() == won[0]
        finally:
            await one.close()
            await two.close()

    arun(scenario())
