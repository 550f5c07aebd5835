"""TrustStore: partner installation, anchors, key sets, key revocations, revocation batches.

The rules are the plans of :mod:`keys.trustplans`; what every backend must do is apply them
atomically, keep each submission's result for its retries, and read the state back the same.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from keys.errors import (
    AlreadyExistsError,
    BatchConflictError,
    ConcurrentChangeError,
    NotFoundError,
)
from keys.model import KeyStatus, Mode, Region
from keys.records import CodeRevocation, HolderRevocation, SubmissionKind
from keys.store import Store
from store_conformance.data import (
    ACTOR,
    BEIJING,
    SHANGHAI,
    T0,
    ZHEJIANG,
    anchors,
    conversion,
    digest,
    keyset,
    region_key,
    revocation_batch,
    snapshot,
)


def test_installing_a_partner_creates_then_repeats_as_a_duplicate(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        first = await store.install_partner(
            BEIJING, anchors(50), replace=False, actor=ACTOR, now=T0
        )
        assert (first.created, first.anchors_changed, first.anchors_generation) == (True, True, 1)
        assert first.fingerprint == anchors(50).fingerprint()
        version = await store.registry_version()
        again = await store.install_partner(
            BEIJING, anchors(50), replace=False, actor=ACTOR, now=T0
        )
        assert again.duplicate and again.anchors_generation == 1
        assert await store.registry_version() == version
        assert await store.list_regions() == [BEIJING]

    arun(scenario())


def test_an_installed_region_keeps_its_enabled_flag_when_updated(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.install_partner(BEIJING, anchors(50), replace=False, actor=ACTOR, now=T0)
        await store.set_region_enabled("110000", False, actor=ACTOR, now=T0)
        renamed = Region("110000", "Beijing City", Mode.SHOW, timedelta(hours=12))
        result = await store.install_partner(
            renamed, anchors(50), replace=False, actor=ACTOR, now=T0
        )
        assert (result.created, result.region_changed, result.anchors_changed) == (
            False, True, False,
        )  # fmt: skip
        [stored] = await store.list_regions()
        assert (stored.name, stored.max_age, stored.enabled) == (
            "Beijing City", timedelta(hours=12), False,
        )  # fmt: skip

    arun(scenario())


def test_other_anchors_are_refused_unless_replaced_explicitly(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.install_partner(BEIJING, anchors(50), replace=False, actor=ACTOR, now=T0)
        before = await snapshot(store)
        with pytest.raises(AlreadyExistsError) as caught:
            await store.install_partner(BEIJING, anchors(51), replace=False, actor=ACTOR, now=T0)
        assert caught.value.reason == "ALREADY_EXISTS"
        assert await snapshot(store) == before
        replaced = await store.install_partner(
            BEIJING, anchors(51, 52, threshold=2), replace=True, actor=ACTOR, now=T0
        )
        assert (replaced.anchors_changed, replaced.anchors_generation) == (True, 2)
        assert await store.all_anchors() == {"110000": anchors(51, 52, threshold=2)}

    arun(scenario())


def test_all_anchors_gives_every_regions_current_set(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.install_partner(ZHEJIANG, anchors(60), replace=False, actor=ACTOR, now=T0)
        await store.install_partner(BEIJING, anchors(50), replace=False, actor=ACTOR, now=T0)
        await store.install_partner(BEIJING, anchors(51), replace=True, actor=ACTOR, now=T0)
        await store.upsert_region(SHANGHAI, actor=ACTOR, now=T0)  # no anchors
        found = await store.all_anchors()
        assert found == {"110000": anchors(51), "330000": anchors(60)}
        assert list(found) == ["110000", "330000"]

    arun(scenario())


def test_a_key_set_replaces_the_keys_and_its_retry_is_a_duplicate(store: Store, arun: Any) -> None:
    k1, k2, k3 = region_key(seed=1), region_key(seed=2), region_key(seed=3)

    async def scenario() -> None:
        await store.install_partner(BEIJING, anchors(50), replace=False, actor=ACTOR, now=T0)
        v1 = keyset("110000", 1, (k1, k2), expected_version=0)
        first = await store.apply_keyset(v1)
        assert (first.kind, first.version, first.duplicate) == (SubmissionKind.KEYSET, 1, False)
        assert set(first.keys_added) == {k1.kid, k2.kid}
        v2 = keyset("110000", 2, (k2, k3), expected_version=1)
        second = await store.apply_keyset(v2)
        assert (second.keys_added, second.keys_removed, second.keys_kept) == (
            (k3.kid,), (k1.kid,), (k2.kid,),
        )  # fmt: skip
        assert {k.kid for k in await store.list_keys()} == {k2.kid, k3.kid}
        trust = await store.region_trust("110000")
        assert trust.keyset_version == 2
        assert (await store.read_registry()).keyset_versions == (("110000", 2),)
        version = await store.registry_version()
        retry = await store.apply_keyset(v2)
        assert retry.duplicate and retry.version == 2 and retry.keys_removed == (k1.kid,)
        assert await store.registry_version() == version
        found = await store.find_submission(v2.digest)
        assert found is not None and found.duplicate and found.keys_added == (k3.kid,)
        assert await store.find_submission(digest("never submitted")) is None

    arun(scenario())


def test_a_key_set_checked_against_a_stale_version_changes_nothing(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.install_partner(BEIJING, anchors(50), replace=False, actor=ACTOR, now=T0)
        await store.apply_keyset(keyset("110000", 1, (region_key(seed=1),), expected_version=0))
        before = await snapshot(store)
        stale = keyset("110000", 2, (region_key(seed=2),), expected_version=0)
        with pytest.raises(ConcurrentChangeError):
            await store.apply_keyset(stale)
        rotated = keyset("110000", 2, (region_key(seed=2),), expected_version=1,
                         expected_generation=2)  # fmt: skip
        with pytest.raises(ConcurrentChangeError):
            await store.apply_keyset(rotated)
        assert await snapshot(store) == before

    arun(scenario())


def test_a_key_set_for_an_unknown_region_is_not_found(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        with pytest.raises(NotFoundError):
            await store.apply_keyset(keyset("110000", 1, (region_key(),), expected_version=0))
        assert (
            await store.find_submission(
                keyset("110000", 1, (region_key(),), expected_version=0).digest
            )
            is None
        )

    arun(scenario())


def test_a_key_set_that_rotates_anchors_installs_the_next_generation(
    store: Store, arun: Any
) -> None:
    async def scenario() -> None:
        await store.install_partner(BEIJING, anchors(50), replace=False, actor=ACTOR, now=T0)
        change = keyset("110000", 1, (region_key(),), expected_version=0, new_anchors=anchors(53))
        result = await store.apply_keyset(change)
        assert result.anchors_rotated
        trust = await store.region_trust("110000")
        assert (trust.anchors, trust.anchors_generation) == (anchors(53), 2)

    arun(scenario())


def test_a_removed_key_keeps_its_revocation_when_it_returns(store: Store, arun: Any) -> None:
    k1, k2 = region_key(seed=1), region_key(seed=2)

    async def scenario() -> None:
        await store.install_partner(BEIJING, anchors(50), replace=False, actor=ACTOR, now=T0)
        await store.apply_keyset(keyset("110000", 1, (k1, k2), expected_version=0))
        await store.apply_keyset(keyset("110000", 2, (k2,), expected_version=1))
        # A removed key can still be revoked (codes it signed may still be shown) ...
        revoked = await store.apply_key_revocation(
            "110000", k1.kid, T0, digest=digest("rev k1"), actor=ACTOR, now=T0
        )
        assert (revoked.kind, revoked.kid, revoked.revoked_at) == (
            SubmissionKind.KEY_REVOCATION, k1.kid, T0,
        )  # fmt: skip
        # ... and the revocation survives its return.
        await store.apply_keyset(keyset("110000", 3, (k1, k2), expected_version=2))
        back = {k.kid: k for k in await store.list_keys("110000")}[k1.kid]
        assert (back.status, back.revoked_at) == (KeyStatus.REVOKED, T0)

    arun(scenario())


def test_a_key_revocation_only_moves_earlier_and_its_retry_is_a_duplicate(
    store: Store, arun: Any
) -> None:
    key = region_key()

    async def scenario() -> None:
        await store.install_partner(BEIJING, anchors(50), replace=False, actor=ACTOR, now=T0)
        await store.add_key(key, actor=ACTOR, now=T0)
        first = await store.apply_key_revocation(
            "110000", key.kid, T0, digest=digest("r1"), actor=ACTOR, now=T0
        )
        assert first.revoked_at == T0 and not first.duplicate
        later = await store.apply_key_revocation(
            "110000", key.kid, T0 + timedelta(hours=1), digest=digest("r2"), actor=ACTOR, now=T0
        )
        assert later.revoked_at == T0
        retry = await store.apply_key_revocation(
            "110000", key.kid, T0 - timedelta(days=9), digest=digest("r1"), actor=ACTOR, now=T0
        )
        assert retry.duplicate and retry.revoked_at == T0  # the earlier result, not re-applied
        [stored] = await store.list_keys()
        assert (stored.status, stored.revoked_at) == (KeyStatus.REVOKED, T0)

    arun(scenario())


def test_revoking_a_key_the_region_never_had_is_not_found(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.install_partner(BEIJING, anchors(50), replace=False, actor=ACTOR, now=T0)
        before = await snapshot(store)
        with pytest.raises(NotFoundError):
            await store.apply_key_revocation(
                "110000", "never", T0, digest=digest("r"), actor=ACTOR, now=T0
            )
        assert await snapshot(store) == before
        assert await store.find_submission(digest("r")) is None

    arun(scenario())


def test_a_revocation_batch_revokes_codes_holders_and_their_conversions(
    store: Store, arun: Any
) -> None:
    async def scenario() -> None:
        await store.install_partner(ZHEJIANG, anchors(60), replace=False, actor=ACTOR, now=T0)
        earlier = T0 - timedelta(hours=1)
        await store.claim_conversions(
            [
                conversion("a"),
                conversion("b", holder="h1-holder", issued_at=earlier),
                conversion("c", holder="h1-holder", issued_at=T0 + timedelta(hours=1)),
                conversion("d"),
            ]
        )
        batch = revocation_batch("330000", "b-1", codes=("a", "zz"), holders=("h1-holder",))
        result = await store.apply_revocation_batch(batch)
        assert (result.kind, result.batch_id, result.codes, result.holders) == (
            SubmissionKind.REVOCATIONS, "b-1", 2, 1,
        )  # fmt: skip
        # "a" by its code, "b" by its holder (issued before the effective time); not "c", "d".
        assert result.conversions_revoked == 2
        stored = {
            r.source_key: r.revoked_at
            for r in await store.claim_conversions([conversion(s) for s in "abcd"])
        }
        assert stored == {"a": T0, "b": T0, "c": None, "d": None}
        codes, holders = await store.list_revocations("330000")
        assert codes == [  # ordered by region and code key
            CodeRevocation("330000", "a", T0), CodeRevocation("330000", "zz", T0),
        ]  # fmt: skip
        assert holders == [HolderRevocation("330000", "h1-holder", T0)]
        retry = await store.apply_revocation_batch(batch)
        assert retry.duplicate and retry.conversions_revoked == 2

    arun(scenario())


def test_a_batch_id_reused_for_another_batch_is_refused(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.install_partner(ZHEJIANG, anchors(60), replace=False, actor=ACTOR, now=T0)
        await store.apply_revocation_batch(revocation_batch("330000", "b-1", codes=("a",)))
        before = await snapshot(store)
        other = revocation_batch("330000", "b-1", codes=("b",), tag="other")
        with pytest.raises(BatchConflictError) as caught:
            await store.apply_revocation_batch(other)
        assert caught.value.reason == "BATCH_ID_REUSED"
        assert await snapshot(store) == before

    arun(scenario())


def test_a_revocation_batch_for_an_unknown_region_is_not_found(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        with pytest.raises(NotFoundError):
            await store.apply_revocation_batch(revocation_batch("330000", "b-1", codes=("a",)))
        assert await store.list_revocations() == ([], [])

    arun(scenario())


def test_a_code_revocation_only_moves_earlier(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.install_partner(ZHEJIANG, anchors(60), replace=False, actor=ACTOR, now=T0)
        await store.apply_revocation_batch(revocation_batch("330000", "b-1", codes=("a",)))
        later = T0 + timedelta(days=1)
        earlier = T0 - timedelta(days=1)
        await store.apply_revocation_batch(
            revocation_batch("330000", "b-2", codes=("a",), effective_at=later)
        )
        assert (await store.list_revocations())[0] == [CodeRevocation("330000", "a", T0)]
        await store.apply_revocation_batch(
            revocation_batch("330000", "b-3", codes=("a",), effective_at=earlier)
        )
        assert (await store.list_revocations())[0] == [CodeRevocation("330000", "a", earlier)]

    arun(scenario())


def test_revocations_are_listed_per_region_or_all_in_one_order(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        for partner, seed in ((ZHEJIANG, 60), (SHANGHAI, 61)):
            await store.install_partner(partner, anchors(seed), replace=False, actor=ACTOR, now=T0)
        later = T0 + timedelta(hours=1)
        for region in ("330000", "310000"):  # inserted out of order, listed in order
            await store.apply_revocation_batch(
                revocation_batch(region, "b", codes=("k2", "k1"), holders=("h2", "h1"))
            )
        await store.apply_revocation_batch(
            revocation_batch("330000", "c", holders=("h1",), effective_at=later)
        )
        codes, holders = await store.list_revocations()
        assert [(c.region, c.code_key) for c in codes] == [
            ("310000", "k1"), ("310000", "k2"), ("330000", "k1"), ("330000", "k2"),
        ]  # fmt: skip
        assert [(h.region, h.holder, h.effective_at) for h in holders] == [
            ("310000", "h1", T0), ("310000", "h2", T0),
            ("330000", "h1", T0), ("330000", "h1", later), ("330000", "h2", T0),
        ]  # fmt: skip
        only = await store.list_revocations("310000")
        assert only == (
            [CodeRevocation("310000", "k1", T0), CodeRevocation("310000", "k2", T0)],
            [HolderRevocation("310000", "h1", T0), HolderRevocation("310000", "h2", T0)],
        )
        data = await store.read_registry()
        assert (list(data.code_revocations), list(data.holder_revocations)) == (codes, holders)

    arun(scenario())
