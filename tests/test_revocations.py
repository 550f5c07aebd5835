"""Key revocation with a compromise time, code and holder revocations, and what they do to the
decision and to converted codes. Codes come from the partner simulator; time is passed in."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from trust_support import DAY, SECRET, T0, Harness, harness, key

from adapters.base import Colour
from adapters.simulator import PartnerIssuer, fake_holder
from gateway.engine import Conversions, Recogniser, Recognition
from keys.errors import GatewayError
from keys.keystore import KeyDirectory
from keys.model import Mode
from keys.partner import PartnerSigner
from keys.pseudonym import Pseudonymiser, holder_hash
from keys.records import RevocationBatchChange
from keys.signed import Envelope
from keys.statements import KeySetKey, code_hash

SHOW = "110000"  # Beijing: show mode, EdDSA, max age 1 day
CONVERT = "230000"  # Heilongjiang: convert mode, EdDSA
HOUR = timedelta(hours=1)
T = TypeVar("T")


@dataclass
class Region:
    issuer: PartnerIssuer
    partner: PartnerSigner
    rng: random.Random

    @property
    def code(self) -> str:
        return self.issuer.spec.code

    def signing_key(self) -> KeySetKey:
        return KeySetKey(
            self.issuer.kid, self.issuer.key.public_key(), T0 - 30 * DAY, T0 + 365 * DAY
        )

    def code_text(self, issued_at: datetime, *, code_id: str = "", holder: str = "") -> str:
        holder_id, name = fake_holder(self.rng)
        return self.issuer.issue(
            holder_id=holder or holder_id,
            holder_name=name,
            colour=Colour.GREEN,
            issued_at=issued_at,
            expires_at=issued_at + 20 * HOUR,
            code_id=code_id or None,
        )


def region(code: str) -> Region:
    issuer = PartnerIssuer.generate(code)
    spec = issuer.spec
    partner = PartnerSigner.generate(code, mode=spec.mode, max_age=spec.max_age)
    return Region(issuer, partner, random.Random(code))


@dataclass
class World:
    h: Harness
    recogniser: Recogniser
    conversions: Conversions

    async def decide(self, code: str, now: datetime) -> Recognition:
        return await self.recogniser.recognise(code, now)

    async def submit(self, r: Region, kind: str, envelope: bytes, now: datetime = T0) -> object:
        operation = {
            "keyset": self.h.trust.publish_keyset,
            "key-revocation": self.h.trust.revoke_key,
            "revocations": self.h.trust.publish_revocations,
        }[kind]
        return await operation(envelope, caller_region=r.code, now=now)


def world(tmp_path: Path, *regions: Region, body: Callable[[World], Awaitable[T]]) -> T:
    async def main() -> T:
        keys = KeyDirectory.create(tmp_path / "keys", dev=True, passphrase=None, now=T0 - 30 * DAY)
        async with harness(tmp_path / "r.db") as h:
            # the engine and the registry share the pseudonym secret, as in a running gateway
            conversions = Conversions(h.store)
            recogniser = Recogniser(
                lambda: h.registry.snapshot, keys, Pseudonymiser(SECRET), conversions
            )
            w = World(h, recogniser, conversions)
            for r in regions:
                await h.onboard(r.partner)
                await w.submit(
                    r, "keyset", r.partner.keyset(1, (r.signing_key(),), expires=T0 + 30 * DAY)
                )
            return await body(w)

    return asyncio.run(main())


# --- key revocation with a compromise time -------------------------------------------------------


@pytest.mark.doc("trust-registry.md §5")
@pytest.mark.parametrize(
    ("issued", "reason"),
    [
        pytest.param(-3 * HOUR, "RECOGNISED", id="issued-before-compromise"),
        pytest.param(-2 * HOUR - timedelta(seconds=1), "RECOGNISED", id="one-second-before"),
        pytest.param(-2 * HOUR, "KEY_REVOKED", id="issued-at-compromise"),
        pytest.param(-1 * HOUR, "KEY_REVOKED", id="issued-after-compromise"),
    ],
)
def test_codes_issued_at_or_after_the_compromise_time_stop_at_once(
    tmp_path: Path, issued: timedelta, reason: str
) -> None:
    r = region(SHOW)
    now = T0

    async def body(w: World) -> str:
        code = r.code_text(now + issued)
        assert (await w.decide(code, now)).reason == "RECOGNISED"
        await w.submit(r, "key-revocation", r.partner.key_revocation(r.issuer.kid, now - 2 * HOUR))
        return (await w.decide(code, now)).reason

    assert world(tmp_path, r, body=body) == reason


@pytest.mark.doc("trust-registry.md §5")
@pytest.mark.parametrize(
    ("times", "final"),
    [
        pytest.param((-2, -5), -5, id="moves-earlier"),
        pytest.param((-5, -2), -5, id="never-moves-later"),
        pytest.param((-5, -5), -5, id="same-time-again"),
        pytest.param((-2, 3), -2, id="future-time-after-past"),
    ],
)
def test_a_key_revocation_only_moves_earlier(tmp_path: Path, times, final) -> None:
    r = region(SHOW)

    async def body(w: World) -> datetime | None:
        for i, hours in enumerate(times):
            result = await w.submit(
                r,
                "key-revocation",
                r.partner.key_revocation(r.issuer.kid, T0 + hours * HOUR),
                now=T0 + i * timedelta(seconds=1),
            )
        (k,) = w.h.registry.snapshot.keys_for(r.code, r.issuer.kid)
        assert result.revoked_at == k.revoked_at  # type: ignore[attr-defined]
        return k.revoked_at

    assert world(tmp_path, r, body=body) == T0 + final * HOUR


@pytest.mark.doc("trust-registry.md §5")
def test_a_removed_key_stops_verifying_and_a_revocation_names_it_still(tmp_path: Path) -> None:
    r = region(SHOW)

    async def body(w: World) -> list[str]:
        code = r.code_text(T0 - HOUR)
        await w.submit(r, "keyset", r.partner.keyset(2, (key("other"),), expires=T0 + DAY))
        removed = (await w.decide(code, T0)).reason
        await w.submit(r, "key-revocation", r.partner.key_revocation(r.issuer.kid, T0 - 2 * HOUR))
        await w.submit(r, "keyset", r.partner.keyset(3, (r.signing_key(),), expires=T0 + DAY))
        return [removed, (await w.decide(code, T0)).reason]

    assert world(tmp_path, r, body=body) == ["KEY_UNKNOWN", "KEY_REVOKED"]


@pytest.mark.doc("trust-registry.md §5")
def test_revoking_an_unknown_key_is_not_found(tmp_path: Path) -> None:
    r = region(SHOW)

    async def body(w: World) -> str:
        try:
            await w.submit(r, "key-revocation", r.partner.key_revocation("nope", T0))
        except GatewayError as exc:
            return exc.reason
        return "OK"

    assert world(tmp_path, r, body=body) == "NOT_FOUND"


# --- code and holder revocations -----------------------------------------------------------------


@pytest.mark.doc("trust-registry.md §6")
@pytest.mark.parametrize(
    ("effective", "now", "reason"),
    [
        pytest.param(-HOUR, 0 * HOUR, "CODE_REVOKED", id="effective-in-the-past"),
        pytest.param(0 * HOUR, 0 * HOUR, "CODE_REVOKED", id="effective-now"),
        pytest.param(HOUR, 0 * HOUR, "RECOGNISED", id="effective-later"),
        pytest.param(HOUR, 2 * HOUR, "CODE_REVOKED", id="effective-later-then-reached"),
        pytest.param(-10 * HOUR, 0 * HOUR, "CODE_REVOKED", id="before-the-code-was-issued"),
    ],
)
def test_a_revoked_code_is_refused_from_its_effective_time(
    tmp_path: Path, effective, now, reason
) -> None:
    r = region(SHOW)

    async def body(w: World) -> str:
        code = r.code_text(T0 - 3 * HOUR, code_id="c0ffee01")
        other = r.code_text(T0 - 3 * HOUR, code_id="c0ffee02")
        await w.submit(
            r, "revocations", r.partner.revocations("b1", T0 + effective, code_ids=["c0ffee01"])
        )
        assert (await w.decide(other, T0 + now)).reason == "RECOGNISED"
        return (await w.decide(code, T0 + now)).reason

    assert world(tmp_path, r, body=body) == reason


@pytest.mark.doc("trust-registry.md §6")
@pytest.mark.parametrize(
    ("issued", "effective", "now", "reason"),
    [
        pytest.param(-3, -1, 0, "CODE_REVOKED", id="code-issued-before-holder-turned-red"),
        pytest.param(-1, -2, 0, "RECOGNISED", id="code-issued-after-the-revocation"),
        pytest.param(-3, 1, 0, "RECOGNISED", id="revocation-not-yet-effective"),
        pytest.param(-3, 1, 2, "CODE_REVOKED", id="revocation-reached"),
        pytest.param(-2, -2, 0, "RECOGNISED", id="issued-exactly-at-effective-time"),
    ],
)
def test_a_revoked_holder_loses_codes_issued_before_the_effective_time(
    tmp_path: Path, issued, effective, now, reason
) -> None:
    r = region(SHOW)
    holder = "110101199003070011"

    async def body(w: World) -> str:
        code = r.code_text(T0 + issued * HOUR, holder=holder)
        someone_else = r.code_text(T0 + issued * HOUR)
        batch = r.partner.revocations("h1", T0 + effective * HOUR, holder_ids=[holder.lower()])
        await w.submit(r, "revocations", batch)
        assert (await w.decide(someone_else, T0 + now * HOUR)).reason == "RECOGNISED"
        return (await w.decide(code, T0 + now * HOUR)).reason

    assert world(tmp_path, r, body=body) == reason


@pytest.mark.doc("trust-registry.md §6")
def test_a_converted_code_is_revoked_with_its_source(tmp_path: Path) -> None:
    r = region(CONVERT)
    holder = "230102198512041233"

    async def body(w: World) -> None:
        by_code = r.code_text(T0 - 3 * HOUR, code_id="feed0001")
        by_holder = r.code_text(T0 - 3 * HOUR, code_id="feed0002", holder=holder)
        kept = r.code_text(T0 - 3 * HOUR, code_id="feed0003")
        for code in (by_code, by_holder, kept):
            decision = await w.decide(code, T0 - HOUR)
            assert decision.reason == "RECOGNISED" and decision.converted is not None
        first = await w.submit(
            r,
            "revocations",
            r.partner.revocations("b1", T0 - 30 * 60 * timedelta(seconds=1), code_ids=["feed0001"]),
        )
        second = await w.submit(
            r, "revocations", r.partner.revocations("b2", T0, holder_ids=[holder])
        )
        assert first.conversions_revoked == 1 and second.conversions_revoked == 1  # type: ignore[attr-defined]
        records = {c.source_key: c for c in await w.h.store.list_conversions(r.code)}
        key = Pseudonymiser(SECRET).code_key
        assert records[key(r.code, "feed0001")].revoked_at == T0 - timedelta(minutes=30)
        assert records[key(r.code, "feed0002")].revoked_at == T0
        assert records[key(r.code, "feed0003")].revoked_at is None
        assert (await w.decide(by_code, T0)).reason == "CODE_REVOKED"

    world(tmp_path, r, body=body)


@pytest.mark.doc("trust-registry.md §6")
def test_a_full_batch_revokes_every_code_and_holder_it_names(tmp_path: Path) -> None:
    """A batch of 10,000 entries (keyed on a worker thread, joined to the index on one): the
    codes and holders it names are refused at once, converted sources with them, others not."""
    r = region(CONVERT)
    holder = "230102198512041233"

    async def body(w: World) -> None:
        named = r.code_text(T0 - 3 * HOUR, code_id="batch-4999")
        by_holder = r.code_text(T0 - 3 * HOUR, code_id="other-1", holder=holder)
        kept = r.code_text(T0 - 3 * HOUR, code_id="other-2")
        assert (await w.decide(named, T0 - HOUR)).converted is not None
        batch = r.partner.revocations(
            "big",
            T0 - 2 * HOUR,
            code_ids=[f"batch-{i}" for i in range(5000)],
            holder_ids=[holder, *(f"{i:018d}" for i in range(4999))],
        )
        result = await w.submit(r, "revocations", batch)
        assert result.conversions_revoked == 1  # type: ignore[attr-defined]
        assert (await w.decide(named, T0)).reason == "CODE_REVOKED"
        assert (await w.decide(by_holder, T0)).reason == "CODE_REVOKED"
        assert (await w.decide(kept, T0)).reason == "RECOGNISED"

    world(tmp_path, r, body=body)


@pytest.mark.doc("trust-registry.md §6")
def test_a_conversion_racing_a_revocation_is_revoked_on_insert(tmp_path: Path) -> None:
    """The registry snapshot lags the store: a conversion recorded after the batch still gets
    revoked by the store itself."""
    r = region(CONVERT)

    async def body(w: World) -> None:
        await w.h.store.apply_revocation_batch(
            RevocationBatchChange(
                r.code,
                "b1",
                T0 - HOUR,
                "0" * 64,
                (Pseudonymiser(SECRET).from_code_hash(code_hash(r.code, "feed0009")),),
                (),
                "partner:230000",
                T0,
            )
        )
        # this process's snapshot is stale on purpose: the store alone must catch it
        stale = w.h.registry.snapshot
        w.recogniser._snapshot = lambda: stale  # type: ignore[method-assign]
        code = r.code_text(T0 - 3 * HOUR, code_id="feed0009")
        assert (await w.decide(code, T0)).reason == "RECOGNISED"
        (record,) = await w.h.store.list_conversions(r.code)
        assert record.revoked_at == T0 - HOUR

    world(tmp_path, r, body=body)


# --- batches: idempotency, conflicts, regions ----------------------------------------------------


@pytest.mark.doc("trust-registry.md §6", "trust-registry.md §7")
def test_a_batch_retry_is_acknowledged_and_a_reused_batch_id_refused(tmp_path: Path) -> None:
    r = region(SHOW)

    async def body(w: World) -> str:
        batch = r.partner.revocations("b1", T0, code_ids=["aa", "bb"])
        first = await w.submit(r, "revocations", batch)
        again = await w.submit(r, "revocations", batch, now=T0 + DAY)
        assert not first.duplicate and again.duplicate  # type: ignore[attr-defined]
        assert again.codes == 2  # type: ignore[attr-defined]
        _, entries = await w.h.store.read_audit(0, 1000)
        assert [e.action for e in entries].count("revocations.apply") == 1
        try:
            await w.submit(r, "revocations", r.partner.revocations("b1", T0, code_ids=["cc"]))
        except GatewayError as exc:
            return exc.reason
        return "OK"

    assert world(tmp_path, r, body=body) == "BATCH_ID_REUSED"


KINDS = ["key-revocation", "revocations"]


@pytest.mark.doc("trust-registry.md §6", "trust-registry.md §8")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("signed_by", "caller", "expected"),
    [
        pytest.param("X", "X", "OK", id="own-region"),
        pytest.param("X", "Y", "REGION_FORBIDDEN", id="from-caller-y"),
        pytest.param("Y", "X", "REGION_FORBIDDEN", id="signed-by-y-anchors"),
        pytest.param("X-one", "X", "THRESHOLD_NOT_MET", id="below-threshold"),
    ],
)
def test_revocations_are_signed_by_a_threshold_of_the_own_regions_anchors(
    tmp_path: Path, kind, signed_by, caller, expected
) -> None:
    x, y = region(SHOW), region("340000")

    async def body(w: World) -> str:
        signer = y.partner if signed_by == "Y" else x.partner
        signers = x.partner.anchors.signers(["110000-a0"]) if signed_by == "X-one" else None
        if kind == "key-revocation":
            statement = x.partner.key_revocation(x.issuer.kid, T0, signers=signers)
        else:
            statement = x.partner.revocations("b1", T0, code_ids=["c1"], signers=signers)
        if signed_by == "Y":
            statement = signer.envelope(Envelope.from_bytes(statement).signed)
        caller_region = {"X": x.code, "Y": y.code}[caller]
        operation = (
            w.h.trust.revoke_key if kind == "key-revocation" else (w.h.trust.publish_revocations)
        )
        try:
            await operation(statement, caller_region=caller_region, now=T0)
        except GatewayError as exc:
            assert len(w.h.registry.snapshot.revocations) == 0
            return exc.reason
        return "OK"

    assert world(tmp_path, x, y, body=body) == expected


# --- no raw or unkeyed identifiers of people -----------------------------------------------------


@pytest.mark.doc("trust-registry.md §6")
def test_holder_hashes_are_stored_only_as_keyed_pseudonyms(tmp_path: Path) -> None:
    r = region(SHOW)
    holder = "110101199003070011"
    hashed = holder_hash(r.code, holder)

    async def body(w: World) -> None:
        await w.submit(r, "revocations", r.partner.revocations("b1", T0, holder_ids=[holder]))

    world(tmp_path, r, body=body)
    with sqlite3.connect(tmp_path / "r.db") as conn:
        dump = "\n".join(conn.iterdump())
        (stored,) = conn.execute("SELECT holder FROM holder_revocations").fetchone()
    assert hashed not in dump and holder not in dump
    assert stored == Pseudonymiser(SECRET)(r.code, holder)


@pytest.mark.doc("trust-registry.md §6")
@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param("11010119900307001x", id="lower-case-x"),
        pytest.param(" 11010119900307001X\n", id="white-space"),
        pytest.param("".join(chr(ord(c) + 0xFEE0) for c in "11010119900307001X"), id="full-width"),
    ],
)
def test_pseudonyms_and_holder_hashes_normalise_the_same_way(spelling: str) -> None:
    p = Pseudonymiser(SECRET)
    canonical = "11010119900307001X"
    assert holder_hash(SHOW, spelling) == holder_hash(SHOW, canonical)
    assert (
        p(SHOW, spelling) == p(SHOW, canonical) == p.from_holder_hash(holder_hash(SHOW, canonical))
    )
    assert p(SHOW, canonical) != p("120000", canonical)  # the region is part of the hash
    assert p(SHOW, canonical).startswith("h1-")


@pytest.mark.parametrize("bad", ["", "A" * 64, "0" * 63, "0" * 65, ("0" * 63) + "g"])
def test_from_holder_hash_takes_only_lower_case_sha256_hex(bad: str) -> None:
    with pytest.raises(ValueError):
        Pseudonymiser(SECRET).from_holder_hash(bad)


def test_the_convert_region_converts() -> None:
    assert region(CONVERT).issuer.spec.mode is Mode.CONVERT
