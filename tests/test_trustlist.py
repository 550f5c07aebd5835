"""The signed trust list: versions, deltas, expiry, rollback, signatures, trustlist key rotation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from trust_support import DAY, T0, Harness, harness, key

from keys.crypto import PrivateKey
from keys.errors import GatewayError
from keys.keystore import MANIFEST, KeyDirectory, KeyRole
from keys.partner import PartnerSigner
from keys.signed import Envelope
from keys.trustclaims import TRUSTLIST_DELTA_TYPE
from keys.trustlist import PinnedKey, PublishedTrustList, TrustListVerifier
from keys.trustpublisher import TrustListPublisher

X = PartnerSigner.generate("110000")
Y = PartnerSigner.generate("120000")
HOUR = timedelta(hours=1)
T = TypeVar("T")
X1, X2, X3, Y1 = key("x1"), key("x2"), key("x3"), key("y1")


@dataclass
class Gateway:
    h: Harness
    keys: KeyDirectory
    publisher: TrustListPublisher

    def pinned(self) -> list[PinnedKey]:
        return PinnedKey.of(self.keys.public_keys())

    def verifier(self, last_seen: int = 0) -> TrustListVerifier:
        return TrustListVerifier(self.pinned(), last_seen)


def gateway(tmp_path: Path, body: Callable[[Gateway], Awaitable[T]], ttl: timedelta = DAY) -> T:
    async def main() -> T:
        keys_path = tmp_path / "keys"
        if keys_path.exists():
            keys = KeyDirectory.open(keys_path, passphrase=None)
        else:
            keys = KeyDirectory.create(keys_path, dev=True, passphrase=None, now=T0 - 30 * DAY)
        async with harness(tmp_path / "r.db") as h:
            publisher = TrustListPublisher(
                h.store, lambda: h.registry.snapshot, lambda: keys, ttl=ttl
            )
            return await body(Gateway(h, keys, publisher))

    return asyncio.run(main())


async def setup(g: Gateway) -> None:
    await g.h.onboard(X, Y)
    await g.h.publish(X, X.keyset(1, (X1, X2), expires=T0 + DAY))
    await g.h.publish(Y, Y.keyset(1, (Y1,), expires=T0 + DAY))


def reason(call: Callable[[], object]) -> str:
    try:
        call()
    except GatewayError as exc:
        return exc.reason
    return "OK"


# --- versions and content -----------------------------------------------------------------------


@pytest.mark.doc("trust-registry.md §9")
def test_the_version_bumps_exactly_when_the_content_changes(tmp_path: Path) -> None:
    async def body(g: Gateway) -> list[int]:
        versions = [(await g.publisher.full(T0)).version]
        await setup(g)
        versions.append((await g.publisher.full(T0)).version)
        versions.append((await g.publisher.full(T0 + HOUR)).version)  # unchanged content
        await g.h.trust.revoke_key(X.key_revocation("x1", T0), caller_region="110000", now=T0)
        versions.append((await g.publisher.full(T0)).version)
        await g.h.registry.set_region_enabled("120000", False, actor="operator:cli", now=T0)
        versions.append((await g.publisher.full(T0)).version)
        g.keys.rotate(KeyRole.ATTEST, T0)
        versions.append((await g.publisher.full(T0)).version)
        return versions

    assert gateway(tmp_path, body) == [1, 2, 2, 3, 4, 5]
    # the version is persisted: a restarted gateway continues from it
    assert gateway(tmp_path, lambda g: g.publisher.full(T0)).version == 5


@pytest.mark.doc("trust-registry.md §9")
def test_the_list_holds_every_region_key_and_the_gateway_keys(tmp_path: Path) -> None:
    async def body(g: Gateway) -> None:
        await setup(g)
        await g.h.trust.revoke_key(X.key_revocation("x1", T0), caller_region="110000", now=T0)
        listed = g.verifier().verify((await g.publisher.full(T0)).envelope, T0)
        assert [(k["owner"], k["kid"]) for k in listed.keys(role="code")] == [
            ("110000", "x1"), ("110000", "x2"), ("120000", "y1"),
        ]  # fmt: skip
        (x1,) = listed.keys("110000", "code")[:1]
        assert x1["status"] == "revoked" and x1["revoked_at"] == int(T0.timestamp())
        roles = sorted(k["role"] for k in listed.keys("370000"))
        assert roles == ["attest", "issue", "place", "trustlist"]
        assert [r["keyset_version"] for r in listed.content["regions"]] == [1, 1]
        assert listed.public_key(listed.keys("120000")[0]) == (
            g.h.registry.snapshot.keys("120000")[0].public_key
        )

    gateway(tmp_path, body)


@pytest.mark.doc("trust-registry.md §9")
def test_a_disabled_region_has_no_keys_in_the_list(tmp_path: Path) -> None:
    async def body(g: Gateway) -> list[str]:
        await setup(g)
        await g.h.registry.set_region_enabled("120000", False, actor="operator:cli", now=T0)
        listed = g.verifier().verify((await g.publisher.full(T0)).envelope, T0)
        return sorted({k["owner"] for k in listed.keys(role="code")})

    assert gateway(tmp_path, body) == ["110000"]


# --- deltas ------------------------------------------------------------------------------------


@pytest.mark.doc("trust-registry.md §9")
def test_a_delta_lists_changes_and_removed_keys_and_adds_up_to_the_full_list(
    tmp_path: Path,
) -> None:
    async def body(g: Gateway) -> None:
        await setup(g)
        verifier = g.verifier()
        v1 = verifier.verify((await g.publisher.full(T0)).envelope, T0)
        await g.h.publish(X, X.keyset(2, (X2, X3), expires=T0 + DAY))  # -x1 +x3
        delta = await g.publisher.delta(v1.version, T0)
        body = json.loads(Envelope.from_bytes(delta.envelope).signed)
        assert body["type"] == TRUSTLIST_DELTA_TYPE and body["since"] == v1.version
        assert [(k["owner"], k["kid"]) for k in body["upserted"]] == [("110000", "x3")]
        assert body["removed"] == [{"owner": "110000", "kid": "x1"}]
        after = verifier.verify(delta.envelope, T0)
        full = g.verifier().verify((await g.publisher.full(T0)).envelope, T0)
        assert after.version == full.version == v1.version + 1
        assert after.content == full.content and after.digest == full.digest

    gateway(tmp_path, body)


@pytest.mark.doc("trust-registry.md §9")
@pytest.mark.parametrize(
    ("since", "kind"),
    [
        pytest.param(0, "full", id="since-zero"),
        pytest.param(99, "full", id="since-the-future"),
        pytest.param(1, "delta", id="since-known"),
        pytest.param(2, "delta", id="since-current-is-empty-delta"),
    ],
)
def test_delta_falls_back_to_the_full_list(tmp_path: Path, since: int, kind: str) -> None:
    async def body(g: Gateway) -> PublishedTrustList:
        await g.publisher.full(T0)
        await setup(g)
        return await g.publisher.delta(since, T0)

    signed = gateway(tmp_path, body)
    assert ("full" if signed.since is None else "delta") == kind


def test_a_delta_for_a_version_the_verifier_does_not_hold_is_refused(tmp_path: Path) -> None:
    async def body(g: Gateway) -> str:
        await g.publisher.full(T0)
        await setup(g)
        delta = await g.publisher.delta(1, T0)
        return reason(lambda: g.verifier().verify(delta.envelope, T0))

    assert gateway(tmp_path, body) == "TRUSTLIST_CONFLICT"


# --- what a verifier refuses -------------------------------------------------------------------


def _flip_signature(envelope: bytes) -> bytes:
    parsed = Envelope.from_bytes(envelope)
    sigs = tuple(type(s)(s.keyid, bytes([s.sig[0] ^ 1]) + s.sig[1:]) for s in parsed.signatures)
    return Envelope(parsed.signed, sigs).to_bytes()


def _tamper_signed(envelope: bytes) -> bytes:
    parsed = Envelope.from_bytes(envelope)
    signed = parsed.signed.replace(b'"status":"active"', b'"status":"retired"', 1)
    return Envelope(signed, parsed.signatures).to_bytes()


def _signed_by_stranger(envelope: bytes) -> bytes:
    parsed = Envelope.from_bytes(envelope)
    return Envelope.sign(parsed.signed, [("stranger", PrivateKey.generate())]).to_bytes()


def _stranger_using_a_trusted_kid(envelope: bytes) -> bytes:
    parsed = Envelope.from_bytes(envelope)
    kid = parsed.signatures[0].keyid
    return Envelope.sign(parsed.signed, [(kid, PrivateKey.generate())]).to_bytes()


@pytest.mark.doc("trust-registry.md §9")
@pytest.mark.parametrize(
    ("mutate", "now", "last_seen", "expected"),
    [
        pytest.param(None, T0, 0, "OK", id="valid"),
        pytest.param(None, T0 + DAY - timedelta(seconds=1), 0, "OK", id="one-second-left"),
        pytest.param(None, T0 + DAY, 0, "TRUSTLIST_EXPIRED", id="expired"),
        pytest.param(None, T0 + 30 * DAY, 0, "TRUSTLIST_EXPIRED", id="frozen-for-a-month"),
        pytest.param(None, T0, 2, "OK", id="same-version-again"),
        pytest.param(None, T0, 3, "TRUSTLIST_ROLLBACK", id="older-than-last-seen"),
        pytest.param(_flip_signature, T0, 0, "SIGNATURE_INVALID", id="bad-signature"),
        pytest.param(_tamper_signed, T0, 0, "SIGNATURE_INVALID", id="tampered-content"),
        pytest.param(_signed_by_stranger, T0, 0, "SIGNATURE_INVALID", id="unknown-signer"),
        pytest.param(
            _stranger_using_a_trusted_kid,
            T0,
            0,
            "SIGNATURE_INVALID",
            id="stranger-with-trusted-kid",
        ),
        pytest.param(lambda e: b"{}", T0, 0, "MALFORMED", id="not-an-envelope"),
    ],
)
def test_what_a_verifier_accepts(tmp_path: Path, mutate, now, last_seen, expected) -> None:
    async def body(g: Gateway) -> str:
        await g.publisher.full(T0)
        await setup(g)
        envelope = (await g.publisher.full(T0)).envelope  # version 2
        data = envelope if mutate is None else mutate(envelope)
        return reason(lambda: g.verifier(last_seen).verify(data, now))

    assert gateway(tmp_path, body) == expected


@pytest.mark.doc("trust-registry.md §9")
def test_a_verifier_refuses_to_go_back_to_an_older_list_it_was_served(tmp_path: Path) -> None:
    async def body(g: Gateway) -> list[str]:
        old = (await g.publisher.full(T0)).envelope
        await setup(g)
        new = (await g.publisher.full(T0)).envelope
        verifier = g.verifier()
        verifier.verify(new, T0)
        return [reason(lambda: verifier.verify(old, T0)), reason(lambda: verifier.verify(new, T0))]

    assert gateway(tmp_path, body) == ["TRUSTLIST_ROLLBACK", "OK"]


def test_the_lifetime_is_configurable_and_a_fresh_signature_extends_it(tmp_path: Path) -> None:
    async def body(g: Gateway) -> list[datetime]:
        first = await g.publisher.full(T0)
        reused = await g.publisher.full(T0 + 20 * 60 * timedelta(seconds=1))
        fresh = await g.publisher.full(T0 + 40 * 60 * timedelta(seconds=1))
        assert reused == first and fresh.version == first.version
        return [first.expires, fresh.expires]

    expiries = gateway(tmp_path, body, ttl=HOUR)
    assert expiries == [T0 + HOUR, T0 + 40 * 60 * timedelta(seconds=1) + HOUR]


# --- trustlist key rotation ----------------------------------------------------------------------


def _only_signed_by(envelope: bytes, kid: str) -> bytes:
    parsed = Envelope.from_bytes(envelope)
    return Envelope(parsed.signed, tuple(s for s in parsed.signatures if s.keyid == kid)).to_bytes()


@pytest.mark.doc("trust-registry.md §9")
@pytest.mark.parametrize(
    ("saw_announcement", "signed_by", "expected"),
    [
        pytest.param(True, "new", "OK", id="new-key-was-in-the-previous-list"),
        pytest.param(True, "both", "OK", id="announced-and-signed-by-both"),
        pytest.param(False, "both", "OK", id="missed-announcement-old-key-signs-too"),
        pytest.param(False, "new", "SIGNATURE_INVALID", id="missed-announcement-new-key-only"),
        pytest.param(False, "old", "OK", id="old-key-only-still-trusted"),
    ],
)
def test_a_rotated_trustlist_key_is_followed(
    tmp_path: Path, saw_announcement: bool, signed_by: str, expected: str
) -> None:
    async def body(g: Gateway) -> str:
        verifier = g.verifier()
        (old_kid,) = verifier.trusted_kids
        verifier.verify((await g.publisher.full(T0)).envelope, T0)
        new = g.keys.rotate(KeyRole.TRUSTLIST, T0, activate_at=T0 + HOUR)
        announced = await g.publisher.full(T0)  # lists the new key, signed by the old only
        assert {s.keyid for s in Envelope.from_bytes(announced.envelope).signatures} == {old_kid}
        if saw_announcement:
            verifier.verify(announced.envelope, T0)
            assert new.kid in verifier.trusted_kids
        await g.h.onboard(X)  # new content, new version, signed after activation
        later = (await g.publisher.full(T0 + 2 * HOUR)).envelope
        assert {s.keyid for s in Envelope.from_bytes(later).signatures} == {old_kid, new.kid}
        kid = {"new": new.kid, "old": old_kid}.get(signed_by)
        data = later if kid is None else _only_signed_by(later, kid)
        outcome = reason(lambda: verifier.verify(data, T0 + 2 * HOUR))
        if outcome == "OK":
            assert new.kid in verifier.trusted_kids  # trust follows the accepted list
        return outcome

    assert gateway(tmp_path, body) == expected


def test_a_verifier_needs_a_pinned_key() -> None:
    with pytest.raises(ValueError):
        TrustListVerifier([])


# --- key directories from before the trustlist role -------------------------------------------


def test_an_old_key_directory_gets_a_trustlist_key_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    KeyDirectory.create(path, dev=True, passphrase=None, now=T0)
    manifest = json.loads((path / MANIFEST).read_text())
    (entry,) = [k for k in manifest["keys"] if k["role"] == "trustlist"]
    manifest["keys"] = [k for k in manifest["keys"] if k["role"] != "trustlist"]
    (path / entry["file"]).unlink()
    (path / MANIFEST).write_text(json.dumps(manifest))
    opened = KeyDirectory.open(path, passphrase=None, now=T0 + DAY)
    info, _ = opened.signer(KeyRole.TRUSTLIST, T0 + DAY)
    assert info.not_before == T0 + DAY
    again = KeyDirectory.open(path, passphrase=None)
    assert [i.kid for i in again.public_keys() if i.role is KeyRole.TRUSTLIST] == [info.kid]
