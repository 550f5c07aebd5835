"""GatewayKeyStore: the gateway's own keys, sealed, beside the registry (what every replica reads).

The sealing is :mod:`keys.keyring`'s (tests/test_gateway_keyring.py); the store keeps the sealed
bytes as given, creates the keyring once, and applies each change whole against the generation
it was planned from. Every change is audited and increases the registry version (replicas
watching it reload their keys).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from keys.errors import AlreadyExistsError, ConcurrentChangeError
from keys.keyring import KeyringChange, KeyringRecord, SealedKey
from keys.keyset import GatewayKeyInfo, KeyRole
from keys.model import KeyStatus
from keys.store import Store
from store_conformance.backends import Backend
from store_conformance.data import ACTOR, T0, private, snapshot


def sealed(role: KeyRole, seed: int, *, days: int = 0) -> SealedKey:
    """A gateway key of ``role`` (its private half as opaque sealed bytes, as the store sees it)."""
    public = private(seed).public_key()
    start = T0 + timedelta(days=days)
    info = GatewayKeyInfo(
        role, public.fingerprint(), public, start, start + timedelta(days=90), KeyStatus.ACTIVE
    )
    return SealedKey(info, b"sealed:" + bytes([seed]) * 40)


ISSUE_OLD = sealed(KeyRole.ISSUE, 71, days=-30)
ISSUE = sealed(KeyRole.ISSUE, 72)
ATTEST = sealed(KeyRole.ATTEST, 73)
TRUSTLIST = sealed(KeyRole.TRUSTLIST, 74)
RECORD = KeyringRecord(
    generation=1,
    kdf='{"kdf": "scrypt", "n": 16384, "r": 8, "p": 1, "salt": "c2FsdA"}',
    check=b"check-blob",
    secret=b"sealed-pseudonym-secret",
    keys=(TRUSTLIST, ISSUE, ATTEST, ISSUE_OLD),
)
# As read back: keys ordered by role, then not_before, then kid, on every backend.
STORED = replace(RECORD, keys=(ATTEST, ISSUE_OLD, ISSUE, TRUSTLIST))


def test_a_database_holds_no_keyring_until_one_is_created(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        assert await store.keyring_generation() == 0
        assert await store.read_keyring() is None
        assert await store.create_keyring(RECORD, actor=ACTOR) is True
        assert await store.keyring_generation() == 1
        assert await store.read_keyring() == STORED

    arun(scenario())


def test_creating_a_keyring_is_audited_and_moves_the_registry_version(
    store: Store, arun: Any
) -> None:
    async def scenario() -> None:
        version = await store.registry_version()
        await store.create_keyring(RECORD, actor=ACTOR)
        assert await store.registry_version() > version
        _, entries = await store.read_audit(0, 10)
        assert [(e.action, e.actor, e.region) for e in entries] == [
            ("gateway_keyring.create", ACTOR, "370000")
        ]
        assert b"sealed" not in repr(entries).encode()  # public halves only in the trail

    arun(scenario())


def test_a_second_keyring_is_not_created_over_the_first(backend: Backend, arun: Any) -> None:
    """The first ``trustgw init`` of a deployment creates it; every later one (another
    replica's) joins it: False, nothing written."""

    async def scenario() -> None:
        one, two = await backend.open(), await backend.open()
        try:
            assert await one.create_keyring(RECORD, actor=ACTOR) is True
            before = await snapshot(two)
            other = replace(RECORD, secret=b"another secret", keys=(ISSUE,))
            assert await two.create_keyring(other, actor=ACTOR) is False
            assert await snapshot(two) == before
            assert await two.read_keyring() == await one.read_keyring()
        finally:
            await one.close()
            await two.close()

    arun(scenario())


def test_a_change_is_applied_whole_and_moves_the_generation(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.create_keyring(RECORD, actor=ACTOR)
        version = await store.registry_version()
        withdrawn = replace(ISSUE.info, status=KeyStatus.REVOKED, revoked_at=T0)
        new_issue = sealed(KeyRole.ISSUE, 75, days=1)
        change = KeyringChange(
            expected_generation=1,
            add=(new_issue,),
            update=(withdrawn,),
            drop=((KeyRole.ISSUE, ISSUE_OLD.kid),),
            action="gateway_key.withdraw",
            actor=ACTOR,
            at=T0,
        )
        assert await store.change_keyring(change) == 2
        stored = await store.read_keyring()
        assert stored is not None and stored.generation == 2
        assert stored.keys == (ATTEST, SealedKey(withdrawn, ISSUE.sealed), new_issue, TRUSTLIST)
        assert await store.keyring_generation() == 2
        assert await store.registry_version() > version
        _, entries = await store.read_audit(1, 10)
        assert [(e.action, e.at) for e in entries] == [("gateway_key.withdraw", T0)]

    arun(scenario())


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(KeyringChange(expected_generation=0, add=(sealed(KeyRole.ATTEST, 76),)),
                     id="stale-generation"),
        pytest.param(KeyringChange(expected_generation=2, add=(sealed(KeyRole.ATTEST, 76),)),
                     id="future-generation"),
    ],
)  # fmt: skip
def test_a_change_planned_from_another_generation_changes_nothing(
    store: Store, arun: Any, change: KeyringChange
) -> None:
    async def scenario() -> None:
        await store.create_keyring(RECORD, actor=ACTOR)
        before = await snapshot(store)
        with pytest.raises(ConcurrentChangeError) as caught:
            await store.change_keyring(change)
        assert caught.value.reason == "CONCURRENT_CHANGE"
        assert await snapshot(store) == before
        assert await store.read_keyring() == STORED

    arun(scenario())


def test_a_change_without_a_keyring_is_a_concurrent_change(store: Store, arun: Any) -> None:
    with pytest.raises(ConcurrentChangeError):
        arun(store.change_keyring(KeyringChange(expected_generation=0, add=(ISSUE,))))
    assert arun(store.read_keyring()) is None


def test_adding_a_stored_key_again_refuses_the_whole_change(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.create_keyring(RECORD, actor=ACTOR)
        before = await snapshot(store)
        change = KeyringChange(expected_generation=1, add=(sealed(KeyRole.ATTEST, 77), ISSUE))
        with pytest.raises(AlreadyExistsError):
            await store.change_keyring(change)
        assert await snapshot(store) == before
        assert await store.read_keyring() == STORED

    arun(scenario())


def test_two_stores_changing_one_generation_at_once_apply_one_change(
    backend: Backend, arun: Any
) -> None:
    """Two machines rotating at once: one change wins, the other re-reads and re-plans."""

    async def scenario() -> None:
        one, two = await backend.open(), await backend.open()
        try:
            await one.create_keyring(RECORD, actor=ACTOR)
            changes = [
                KeyringChange(expected_generation=1, add=(sealed(KeyRole.ATTEST, seed),))
                for seed in (78, 79)
            ]
            results = await asyncio.gather(
                one.change_keyring(changes[0]), two.change_keyring(changes[1]),
                return_exceptions=True,
            )  # fmt: skip
            assert sorted(type(r).__name__ for r in results) == ["ConcurrentChangeError", "int"]
            assert 2 in results
            stored = await two.read_keyring()
            assert stored is not None and stored.generation == 2 and len(stored.keys) == 5
        finally:
            await one.close()
            await two.close()

    arun(scenario())
