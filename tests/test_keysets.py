"""Region key sets: thresholds, versions, expiry and anchor rotation, as named case tables.

Modelled on python-tuf's key-rotation tests: each row names a situation and its outcome.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trust_support import DAY, T0, Harness, key, scenario

from keys.anchors import Anchor, AnchorSet
from keys.crypto import PrivateKey, b64url_decode, b64url_encode
from keys.errors import GatewayError
from keys.model import KeyStatus
from keys.partner import AnchorKeys, PartnerSigner
from keys.signed import Envelope, Signature
from keys.statements import KeySet

BEIJING = "110000"
TIANJIN = "120000"
EXPIRES = T0 + 30 * DAY

# one set of keys per module run: generating anchors is cheap, but signatures must be stable
X = PartnerSigner.generate(BEIJING)
Y = PartnerSigner.generate(TIANJIN)
K1, K2, K3 = key("k1"), key("k2"), key("k3")
STRANGER = PrivateKey.generate()


async def attempt(h: Harness, envelope: bytes, *, caller: str = BEIJING) -> str:
    try:
        await h.trust.publish_keyset(envelope, caller_region=caller, now=T0)
    except GatewayError as exc:
        return exc.reason
    return "OK"


def signed_v1() -> bytes:
    return KeySet(BEIJING, 1, EXPIRES, (K1,)).to_signed()


def anchor(i: int) -> tuple[str, PrivateKey]:
    return X.anchors.keys[i]


# --- thresholds ----------------------------------------------------------------------------------


@pytest.mark.doc("trust-registry.md §3", "trust-registry.md §4")
@pytest.mark.parametrize(
    ("signatures", "expected"),
    [
        pytest.param(lambda m: [anchor(0), anchor(1)], "OK", id="threshold-met"),
        pytest.param(lambda m: [anchor(0), anchor(1), anchor(2)], "OK", id="all-anchors"),
        pytest.param(lambda m: [anchor(0)], "THRESHOLD_NOT_MET", id="threshold-not-met"),
        pytest.param(lambda m: [], "THRESHOLD_NOT_MET", id="no-signatures"),
        pytest.param(
            lambda m: [anchor(0), anchor(0)], "THRESHOLD_NOT_MET", id="duplicate-signatures-one-key"
        ),
        pytest.param(
            lambda m: [anchor(0), ("stranger", STRANGER)],
            "THRESHOLD_NOT_MET",
            id="unknown-key-not-counted",
        ),
        pytest.param(
            lambda m: [anchor(0), (anchor(1)[0], STRANGER)],
            "THRESHOLD_NOT_MET",
            id="unknown-key-using-an-anchor-kid",
        ),
        pytest.param(
            lambda m: [("stranger", STRANGER), anchor(2), anchor(0)],
            "OK",
            id="unknown-key-ignored-when-threshold-met",
        ),
    ],
)
def test_keyset_needs_a_threshold_of_distinct_current_anchors(
    tmp_path: Path, signatures, expected
) -> None:
    async def body(h: Harness) -> str:
        await h.onboard(X)
        signed = signed_v1()
        return await attempt(h, Envelope.sign(signed, signatures(signed)).to_bytes())

    assert scenario(tmp_path / "r.db", body) == expected


@pytest.mark.doc("trust-registry.md §3")
def test_a_bad_signature_does_not_hide_a_good_one_by_the_same_key(tmp_path: Path) -> None:
    signed = signed_v1()
    good = Envelope.sign(signed, [anchor(0), anchor(1)])
    bad = Signature(anchor(0)[0], bytes(64))
    envelope = Envelope(signed, (bad, *good.signatures)).to_bytes()

    async def body(h: Harness) -> str:
        await h.onboard(X)
        return await attempt(h, envelope)

    assert scenario(tmp_path / "r.db", body) == "OK"


@pytest.mark.doc('trust-registry.md "The trust registry"', 'trust-registry.md §3')
def test_signatures_cover_the_exact_bytes(tmp_path: Path) -> None:
    """Re-serialised (non-canonical) or altered bytes are refused, never "fixed"."""
    signed = signed_v1()
    spaced = json.dumps(json.loads(signed), indent=1).encode()
    altered = signed.replace(b'"version":1', b'"version":2')

    async def body(h: Harness) -> list[str]:
        await h.onboard(X)
        return [
            await attempt(h, Envelope.sign(spaced, [anchor(0), anchor(1)]).to_bytes()),
            await attempt(
                h,
                Envelope(
                    altered, Envelope.sign(signed, [anchor(0), anchor(1)]).signatures
                ).to_bytes(),
            ),
        ]

    assert scenario(tmp_path / "r.db", body) == ["MALFORMED", "THRESHOLD_NOT_MET"]


# --- versions ------------------------------------------------------------------------------------


@pytest.mark.doc("trust-registry.md §4")
@pytest.mark.parametrize(
    ("version", "keys", "expected"),
    [
        pytest.param(3, (K3,), "OK", id="next-version"),
        pytest.param(1, (K3,), "VERSION_ROLLBACK", id="rollback-to-v1"),
        pytest.param(2, (K3,), "VERSION_REPLAY", id="equal-version-other-body"),
        pytest.param(4, (K3,), "VERSION_GAP", id="version-gap"),
        pytest.param(99, (K3,), "VERSION_GAP", id="far-future-version"),
    ],
)
def test_keyset_version_must_be_current_plus_one(tmp_path: Path, version, keys, expected) -> None:
    async def body(h: Harness) -> str:
        await h.onboard(X)
        await h.publish(X, X.keyset(1, (K1,), expires=EXPIRES))
        await h.publish(X, X.keyset(2, (K1, K2), expires=EXPIRES))
        return await attempt(h, X.keyset(version, keys, expires=EXPIRES))

    assert scenario(tmp_path / "r.db", body) == expected


@pytest.mark.doc("trust-registry.md §4")
def test_the_first_keyset_is_version_one(tmp_path: Path) -> None:
    async def body(h: Harness) -> str:
        await h.onboard(X)
        return await attempt(h, X.keyset(2, (K1,), expires=EXPIRES))

    assert scenario(tmp_path / "r.db", body) == "VERSION_GAP"


@pytest.mark.doc("trust-registry.md §4", "trust-registry.md §7")
def test_a_retry_of_the_same_submission_is_acknowledged_not_applied_twice(tmp_path: Path) -> None:
    v1 = X.keyset(1, (K1,), expires=EXPIRES)
    v2 = X.keyset(2, (K2,), expires=EXPIRES)

    async def body(h: Harness) -> None:
        await h.onboard(X)
        first = await h.publish(X, v1)
        again = await h.publish(X, v1, now=T0 + DAY)
        assert not first.duplicate and again.duplicate
        assert again.version == first.version == 1 and again.digest == first.digest
        assert again.accepted_at == first.accepted_at
        await h.publish(X, v2)
        late = await h.publish(X, v1)  # the old retry arrives after v2: acknowledged, no rollback
        assert late.duplicate and late.version == 1
        assert [k.kid for k in h.registry.snapshot.keys(BEIJING)] == ["k2"]
        _, entries = await h.store.read_audit(0, 100)
        assert [e.action for e in entries].count("keyset.apply") == 2

    scenario(tmp_path / "r.db", body)


@pytest.mark.doc("trust-registry.md §7")
def test_a_retry_with_other_signatures_over_the_same_bytes_is_a_duplicate(tmp_path: Path) -> None:
    async def body(h: Harness) -> bool:
        await h.onboard(X)
        statement = KeySet(BEIJING, 1, EXPIRES, (K1,)).to_signed()
        await h.publish(X, X.envelope(statement, [anchor(0), anchor(1)]))
        again = await h.publish(X, X.envelope(statement, [anchor(1), anchor(2)]))
        return bool(again.duplicate)

    assert scenario(tmp_path / "r.db", body)


# --- expiry --------------------------------------------------------------------------------------


@pytest.mark.doc("trust-registry.md §4")
@pytest.mark.parametrize(
    ("expires", "expected"),
    [
        pytest.param(T0 + DAY, "OK", id="valid"),
        pytest.param(T0 + DAY / 86400, "OK", id="one-second-left"),
        pytest.param(T0, "KEYSET_EXPIRED", id="expires-now"),
        pytest.param(T0 - DAY, "KEYSET_EXPIRED", id="expired"),
    ],
)
def test_an_expired_keyset_is_refused(tmp_path: Path, expires, expected) -> None:
    async def body(h: Harness) -> str:
        await h.onboard(X)
        return await attempt(h, X.keyset(1, (K1,), expires=expires))

    assert scenario(tmp_path / "r.db", body) == expected


# --- anchor rotation (TUF root rotation) ---------------------------------------------------------

NEW = AnchorKeys.generate(3, 2, prefix="new-")


@pytest.mark.doc("trust-registry.md §4")
@pytest.mark.parametrize(
    ("old_signers", "new_signers", "expected"),
    [
        pytest.param((0, 1), (0, 1), "OK", id="old-and-new-threshold"),
        pytest.param((0, 1, 2), (0, 1, 2), "OK", id="all-old-and-all-new"),
        pytest.param((0, 1), (0,), "THRESHOLD_NOT_MET", id="old-threshold-only"),
        pytest.param((0, 1), (), "THRESHOLD_NOT_MET", id="old-only-no-new"),
        pytest.param((0,), (0, 1), "THRESHOLD_NOT_MET", id="new-threshold-only"),
        pytest.param((), (0, 1, 2), "THRESHOLD_NOT_MET", id="new-only-no-old"),
    ],
)
def test_rotating_anchors_needs_old_and_new_thresholds(
    tmp_path: Path, old_signers, new_signers, expected
) -> None:
    signers = [X.anchors.keys[i] for i in old_signers] + [NEW.keys[i] for i in new_signers]

    async def body(h: Harness) -> str:
        await h.onboard(X)
        await h.publish(X, X.keyset(1, (K1,), expires=EXPIRES))
        return await attempt(
            h, X.keyset(2, (K1,), expires=EXPIRES, new_anchors=NEW.anchor_set(), signers=signers)
        )

    assert scenario(tmp_path / "r.db", body) == expected


@pytest.mark.doc("trust-registry.md §4")
def test_after_rotation_only_the_new_anchors_sign(tmp_path: Path) -> None:
    rotate = X.keyset(
        2,
        (K1,),
        expires=EXPIRES,
        new_anchors=NEW.anchor_set(),
        signers=[*X.anchors.signers(), *NEW.signers()],
    )

    async def body(h: Harness) -> list[str]:
        await h.onboard(X)
        await h.publish(X, X.keyset(1, (K1,), expires=EXPIRES))
        result = await h.publish(X, rotate)
        assert result.anchors_rotated
        by_old = X.keyset(3, (K2,), expires=EXPIRES)
        by_new = X.keyset(3, (K2,), expires=EXPIRES, signers=NEW.signers())
        trust = await h.store.region_trust(BEIJING)
        assert trust.anchors == NEW.anchor_set() and trust.anchors_generation == 2
        return [await attempt(h, by_old), await attempt(h, by_new)]

    assert scenario(tmp_path / "r.db", body) == ["THRESHOLD_NOT_MET", "OK"]


def test_an_anchor_set_may_not_list_one_key_twice() -> None:
    private = PrivateKey.generate()
    with pytest.raises(ValueError, match="twice"):
        AnchorSet((Anchor("a", private.public_key()), Anchor("b", private.public_key())), 2)


# --- cross-region writes -------------------------------------------------------------------------


@pytest.mark.doc("trust-registry.md §8")
@pytest.mark.parametrize(
    ("statement_region", "signed_by", "caller", "expected"),
    [
        pytest.param(BEIJING, "X", BEIJING, "OK", id="own-region"),
        pytest.param(BEIJING, "X", TIANJIN, "REGION_FORBIDDEN", id="x-submission-from-caller-y"),
        pytest.param(BEIJING, "Y", BEIJING, "REGION_FORBIDDEN", id="x-submission-signed-by-y"),
        pytest.param(TIANJIN, "Y", BEIJING, "REGION_FORBIDDEN", id="y-statement-over-x-link"),
        pytest.param(BEIJING, "Y", TIANJIN, "REGION_FORBIDDEN", id="y-signs-and-sends-for-x"),
    ],
)
def test_a_partner_writes_only_its_own_region(
    tmp_path: Path, statement_region, signed_by, caller, expected
) -> None:
    signer = {"X": X, "Y": Y}[signed_by]
    statement = KeySet(statement_region, 1, EXPIRES, (K1,)).to_signed()
    envelope = signer.envelope(statement)

    async def body(h: Harness) -> str:
        await h.onboard(X, Y)
        outcome = await attempt(h, envelope, caller=caller)
        assert h.registry.snapshot.keys(TIANJIN if caller == BEIJING else BEIJING) == ()
        return outcome

    assert scenario(tmp_path / "r.db", body) == expected


# --- what applying a key set does ----------------------------------------------------------------


@pytest.mark.doc("trust-registry.md §4")
def test_keys_absent_from_the_new_set_are_removed_and_stop_verifying(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.onboard(X)
        await h.publish(X, X.keyset(1, (K1, K2), expires=EXPIRES))
        assert {k.kid for k in h.registry.snapshot.keys(BEIJING)} == {"k1", "k2"}
        result = await h.publish(X, X.keyset(2, (K2, K3), expires=EXPIRES))
        assert (result.keys_added, result.keys_removed, result.keys_kept) == (
            ("k3",),
            ("k1",),
            ("k2",),
        )
        assert h.registry.snapshot.keys_for(BEIJING, "k1") == ()
        assert h.registry.snapshot.keyset_versions[BEIJING] == 2

    scenario(tmp_path / "r.db", body)


@pytest.mark.doc("trust-registry.md §4")
def test_a_key_id_never_names_another_key(tmp_path: Path) -> None:
    impostor = key("k1")

    async def body(h: Harness) -> list[str]:
        await h.onboard(X)
        await h.publish(X, X.keyset(1, (K1,), expires=EXPIRES))
        now_listed = await attempt(h, X.keyset(2, (impostor,), expires=EXPIRES))
        await h.publish(X, X.keyset(2, (K2,), expires=EXPIRES))  # k1 removed
        once_listed = await attempt(h, X.keyset(3, (impostor,), expires=EXPIRES))
        return [now_listed, once_listed]

    assert scenario(tmp_path / "r.db", body) == ["KEY_ID_REUSED", "KEY_ID_REUSED"]


@pytest.mark.doc("trust-registry.md §4", "trust-registry.md §5")
def test_a_revoked_key_stays_revoked_through_removal_and_return(tmp_path: Path) -> None:
    compromised = T0 - 5 * DAY

    async def body(h: Harness) -> None:
        await h.onboard(X)
        await h.publish(X, X.keyset(1, (K1,), expires=EXPIRES))
        await h.trust.revoke_key(X.key_revocation("k1", compromised), caller_region=BEIJING, now=T0)
        await h.publish(X, X.keyset(2, (K1, K2), expires=EXPIRES))  # listed again: still revoked
        (k1,) = h.registry.snapshot.keys_for(BEIJING, "k1")
        assert k1.status is KeyStatus.REVOKED and k1.revoked_at == compromised
        await h.publish(X, X.keyset(3, (K2,), expires=EXPIRES))  # removed
        await h.publish(X, X.keyset(4, (K1, K2), expires=EXPIRES))  # back
        (k1,) = h.registry.snapshot.keys_for(BEIJING, "k1")
        assert k1.revoked_at == compromised

    scenario(tmp_path / "r.db", body)


@pytest.mark.doc("trust-registry.md §7")
def test_a_failed_submission_changes_nothing(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.onboard(X)
        await h.publish(X, X.keyset(1, (K1,), expires=EXPIRES))
        before = await h.store.read_registry()
        head_before, _ = await h.store.read_audit(0, 1)
        assert await attempt(h, X.keyset(2, (K2, key("k1")), expires=EXPIRES)) == "KEY_ID_REUSED"
        assert await h.store.read_registry() == before
        assert (await h.store.read_audit(0, 1))[0] == head_before

    scenario(tmp_path / "r.db", body)


@pytest.mark.doc("trust-registry.md §4")
@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(lambda o: o.update(version=0), "MALFORMED", id="version-zero"),
        pytest.param(lambda o: o.update(extra=1), "MALFORMED", id="unknown-member"),
        pytest.param(lambda o: o.update(type="trustgw/keyset/v2"), "MALFORMED", id="other-type"),
        pytest.param(lambda o: o.update(region="11000"), "MALFORMED", id="bad-region"),
        pytest.param(lambda o: o["keys"][0].update(alg="ES256"), "MALFORMED", id="alg-mismatch"),
        pytest.param(
            lambda o: o["keys"][0].update(not_after=o["keys"][0]["not_before"]),
            "MALFORMED",
            id="empty-validity",
        ),
        pytest.param(lambda o: o["keys"].append(dict(o["keys"][0])), "MALFORMED", id="kid-twice"),
        pytest.param(
            lambda o: o["keys"][0]["public_key"].update(d="AAAA"), "MALFORMED", id="private-jwk"
        ),
        pytest.param(lambda o: o["keys"][0].update(kid="has space"), "MALFORMED", id="bad-kid"),
    ],
)
def test_malformed_keysets_are_refused(tmp_path: Path, mutate, expected) -> None:
    obj = json.loads(signed_v1())
    mutate(obj)
    from keys.signed import canonical_json

    envelope = X.envelope(canonical_json(obj))

    async def body(h: Harness) -> str:
        await h.onboard(X)
        return await attempt(h, envelope)

    assert scenario(tmp_path / "r.db", body) == expected


@pytest.mark.doc("trust-registry.md §3")
@pytest.mark.parametrize(
    "envelope",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"[]", id="not-an-object"),
        pytest.param(b'{"signed":"e30","signatures":[],"x":1}', id="extra-member"),
        pytest.param(b'{"signed":"e30=","signatures":[]}', id="padded-base64"),
        pytest.param(b'{"signed":"e30","signatures":[{"keyid":"a"}]}', id="signature-no-sig"),
        pytest.param(b'{"signed":"e30","signatures":"a"}', id="signatures-not-list"),
        pytest.param(
            b'{"signed":"' + b"A" * (3 * 1024 * 1024) + b'","signatures":[]}', id="oversized"
        ),
    ],
)
def test_malformed_envelopes_are_refused(tmp_path: Path, envelope: bytes) -> None:
    async def body(h: Harness) -> str:
        await h.onboard(X)
        return await attempt(h, envelope)

    assert scenario(tmp_path / "r.db", body) in {"MALFORMED", "OVERSIZED"}


@pytest.mark.doc("trust-registry.md §4", "trust-registry.md §11")
def test_a_region_without_anchors_or_unknown_is_refused(tmp_path: Path) -> None:
    async def body(h: Harness) -> list[str]:
        unknown = await attempt(h, X.keyset(1, (K1,), expires=EXPIRES))
        await h.registry.add_region(X.region)  # onboarded the old way: no anchors
        missing = await attempt(h, X.keyset(1, (K1,), expires=EXPIRES))
        return [unknown, missing]

    assert scenario(tmp_path / "r.db", body) == ["REGION_UNKNOWN", "ANCHORS_MISSING"]


@pytest.mark.doc("trust-registry.md §3")
def test_envelope_round_trip() -> None:
    envelope = Envelope.sign(b'{"a":1}', [anchor(0)])
    again = Envelope.from_bytes(envelope.to_bytes())
    assert again == envelope
    assert b64url_decode(envelope.to_json()["signed"]) == b'{"a":1}'
    assert envelope.to_json()["signatures"][0]["sig"] == b64url_encode(envelope.signatures[0].sig)
