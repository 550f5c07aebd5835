"""The trust registry's rules as pure plans, with no database (issue 9 item 2).

A store reads the state, the plan says what to write, the store writes exactly that. These
tables pin the rules themselves: the anchor-replacement policy of a partner file, what a key
set adds, keeps, removes and restores, and which conversions a revocation batch reaches.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from trust_support import key as keyset_key

from keys.errors import AlreadyExistsError, ConcurrentChangeError, KeyIdReusedError
from keys.model import KeyStatus, Mode, Region, RegionKey
from keys.partner import AnchorKeys
from keys.records import KeySetChange, RevocationBatchChange
from keys.trustplans import (
    KeySetPlan,
    RemovedKey,
    StoredConversion,
    conversions_to_revoke,
    plan_install,
    plan_keyset,
)

T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
H = timedelta(hours=1)
BJ = Region("110000", "Beijing", Mode.SHOW, timedelta(hours=24))
ANCHORS = AnchorKeys.generate().anchor_set()
OTHER_ANCHORS = AnchorKeys.generate(prefix="b").anchor_set()


# --- installing a partner file ---------------------------------------------------------------


@pytest.mark.parametrize(
    "before, current, replace_anchors, created, anchors_changed, region_changed, duplicate",
    [
        pytest.param(None, None, False, True, True, False, False, id="new-region"),
        pytest.param(BJ, None, False, False, True, False, False, id="region-without-anchors"),
        pytest.param(BJ, ANCHORS, False, False, False, False, True, id="same-content"),
        pytest.param(replace(BJ, name="Peking"), ANCHORS, False, False, False, True, False,
                     id="renamed"),
        pytest.param(BJ, OTHER_ANCHORS, True, False, True, False, False, id="break-glass"),
    ],
)  # fmt: skip
def test_install_plans(
    before: Region | None,
    current: object,
    replace_anchors: bool,
    created: bool,
    anchors_changed: bool,
    region_changed: bool,
    duplicate: bool,
) -> None:
    generation = 0 if current is None else 1
    plan = plan_install(
        BJ,
        ANCHORS,
        before=before,
        current=current,  # type: ignore[arg-type]
        generation=generation,
        replace=replace_anchors,
        actor="operator:t",
        now=T0,
    )
    r = plan.result
    assert (r.created, r.anchors_changed, r.region_changed, r.duplicate) == (
        created, anchors_changed, region_changed, duplicate,
    )  # fmt: skip
    assert r.anchors_generation == generation + (1 if anchors_changed else 0)
    assert (plan.audit is None) == duplicate
    assert (plan.anchors is not None) == anchors_changed
    if duplicate:
        assert plan.region is None


def test_other_anchors_without_replace_are_refused() -> None:
    with pytest.raises(AlreadyExistsError, match="already has other anchors"):
        plan_install(BJ, ANCHORS, before=BJ, current=OTHER_ANCHORS, generation=1,
                     replace=False, actor="operator:t", now=T0)  # fmt: skip


def test_an_update_keeps_the_enabled_flag() -> None:
    disabled = replace(BJ, enabled=False)
    plan = plan_install(replace(BJ, name="Peking"), ANCHORS, before=disabled, current=ANCHORS,
                        generation=1, replace=False, actor="operator:t", now=T0)  # fmt: skip
    assert plan.region is not None and plan.region.enabled is False


# --- key sets --------------------------------------------------------------------------------


K1, K2, K3 = (keyset_key(k) for k in ("k1", "k2", "k3"))  # each a new key pair
BY_KID = {k.kid: k for k in (K1, K2, K3)}


def _region_key(kid: str, *, revoked: datetime | None = None) -> RegionKey:
    k = BY_KID[kid]
    return RegionKey(
        "110000", kid, k.public_key, k.not_before, k.not_after,
        KeyStatus.REVOKED if revoked else KeyStatus.ACTIVE, revoked,
    )  # fmt: skip


def _change(*keys: object, version: int = 2, expected: tuple[int, int] = (1, 1)) -> KeySetChange:
    return KeySetChange(
        region="110000",
        version=version,
        expires=T0 + 24 * H,
        keys=tuple(
            RegionKey("110000", k.kid, k.public_key, k.not_before, k.not_after)  # type: ignore[attr-defined]
            for k in keys
        ),
        anchors=None,
        digest="d" * 64,
        envelope=b"{}",
        expected_version=expected[0],
        expected_generation=expected[1],
        actor="partner:110000",
        at=T0,
    )


def _plan(
    change: KeySetChange,
    current: list[RegionKey],
    removed: dict[str, RemovedKey] | None = None,
) -> KeySetPlan:
    return plan_keyset(
        change, version=1, generation=1, anchors_before=ANCHORS, current=current,
        removed=removed or {},
    )  # fmt: skip


def test_a_key_set_adds_keeps_and_removes() -> None:
    plan = _plan(_change(K1, K3), [_region_key("k1"), _region_key("k2")])
    assert plan.remove == ("k2",)
    assert [k.kid for k in plan.put] == ["k1", "k3"]
    assert (plan.result.keys_added, plan.result.keys_kept, plan.result.keys_removed) == (
        ("k3",), ("k1",), ("k2",),
    )  # fmt: skip
    assert plan.audit.action == "keyset.apply"


def test_a_kept_key_keeps_its_revocation() -> None:
    plan = _plan(_change(K1), [_region_key("k1", revoked=T0 - H)])
    (k1,) = plan.put
    assert k1.status is KeyStatus.REVOKED and k1.revoked_at == T0 - H


def test_a_returning_key_keeps_the_revocation_it_had_when_removed() -> None:
    gone = RemovedKey("k2", K2.public_key.alg.value, K2.public_key.spki, T0 - 2 * H)
    plan = _plan(_change(K1, K2), [_region_key("k1")], {"k2": gone})
    assert plan.restore == ("k2",)
    k2 = next(k for k in plan.put if k.kid == "k2")
    assert k2.revoked_at == T0 - 2 * H and k2.status is KeyStatus.REVOKED


@pytest.mark.parametrize(
    "current, removed",
    [
        pytest.param([replace(_region_key("k1"), public_key=K2.public_key)], {}, id="now"),
        pytest.param([], {"k1": RemovedKey("k1", K2.public_key.alg.value, K2.public_key.spki,
                                           None)}, id="before"),
    ],
)  # fmt: skip
def test_a_key_id_naming_another_key_is_refused(
    current: list[RegionKey], removed: dict[str, RemovedKey]
) -> None:
    with pytest.raises(KeyIdReusedError):
        _plan(_change(K1), current, removed)


def test_a_key_set_checked_against_another_version_is_refused() -> None:
    with pytest.raises(ConcurrentChangeError):
        _plan(_change(K1, expected=(0, 1)), [])


# --- revocation batches ----------------------------------------------------------------------


def _batch(codes: tuple[str, ...] = (), holders: tuple[str, ...] = ()) -> RevocationBatchChange:
    return RevocationBatchChange(
        "230000", "b1", T0, "e" * 64, codes, holders, "partner:230000", T0 + H
    )


@pytest.mark.parametrize(
    "batch, conversion, revoked",
    [
        pytest.param(_batch(codes=("c1-a",)), StoredConversion("c1-a", "h1-x", T0 + H, None),
                     T0, id="by-code-issued-after"),
        pytest.param(_batch(holders=("h1-x",)), StoredConversion("c1-a", "h1-x", T0 - H, None),
                     T0, id="by-holder-issued-before"),
        pytest.param(_batch(holders=("h1-x",)), StoredConversion("c1-a", "h1-x", T0 + H, None),
                     None, id="by-holder-issued-after"),
        pytest.param(_batch(codes=("c1-a",)),
                     StoredConversion("c1-a", "h1-x", T0 - H, T0 - H / 2), None,
                     id="already-revoked-earlier"),
        pytest.param(_batch(codes=("c1-a",)), StoredConversion("c1-a", "h1-x", T0 - H, T0 + H),
                     T0, id="moves-earlier"),
        pytest.param(_batch(codes=("c1-b",)), StoredConversion("c1-a", "h1-x", T0 - H, None),
                     None, id="another-code"),
    ],
)  # fmt: skip
def test_which_conversions_a_batch_revokes(
    batch: RevocationBatchChange, conversion: StoredConversion, revoked: datetime | None
) -> None:
    expected = {} if revoked is None else {conversion.source_key: revoked}
    assert conversions_to_revoke(batch, [conversion]) == expected
