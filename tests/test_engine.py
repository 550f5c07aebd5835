"""The decision, for every partner region and every kind of code.

The engine runs over a real SQLite store and the real adapters; codes come from the partner
simulator; time is passed in explicitly.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from support.aio import run
from support.clock import T0

from adapters.base import Colour
from adapters.regions import REGION_SPECS
from gateway import tokens
from gateway.engine import Conversions, Recogniser, Recognition
from keys.keystore import KeyDirectory
from keys.model import Mode
from keys.pseudonym import Pseudonymiser
from keys.registry import KeyRegistry
from keys.store import SQLiteStore
from tests.support.keyring import open_stored_keys

NOW = T0  # every call here takes its time: no real clock
REGIONS = [pytest.param(spec.code, id=f"{spec.code}-{spec.name}") for spec in REGION_SPECS]


class Engine:
    """A recogniser over a data directory, opened and closed around each scenario."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    async def __aenter__(self) -> Engine:
        self.store = await SQLiteStore.open(self.data_dir / "trustgw.db")
        self.registry = KeyRegistry(self.store)
        await self.registry.load()
        self.keys = await open_stored_keys(self.data_dir)
        self.conversions = Conversions(self.store)
        self.conversions.start()
        self.recogniser = Recogniser(
            lambda: self.registry.snapshot,
            self.keys,
            Pseudonymiser(self.keys.pseudonym_secret()),
            self.conversions,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conversions.stop()
        await self.store.close()

    def trust(self) -> tokens.GatewayTrust:
        return tokens.GatewayTrust(
            "370000",
            tuple(
                tokens.TrustedKey(i.kid, i.role.value, i.public_key, i.not_before, i.not_after)
                for i in self.keys.public_keys()
            ),
        )


def decide(data_dir: Path, *codes: str, now: datetime = NOW, hint: str = "") -> list[Recognition]:
    async def scenario() -> list[Recognition]:
        async with Engine(data_dir) as engine:
            return [await engine.recogniser.recognise(c, now, hint) for c in codes]

    return run(scenario())


@pytest.mark.doc('api.md "Decisions"')
@pytest.mark.parametrize("region", REGIONS)
def test_every_kind_of_code_gets_the_expected_decision(region, codes, prepared_dir) -> None:
    data_dir = prepared_dir(NOW)
    make = codes(region, NOW)
    green, yellow, red, expired, forged, too_old = decide(
        data_dir,
        make(Colour.GREEN),
        make(Colour.YELLOW),
        make(Colour.RED),
        make(Colour.GREEN, age=timedelta(hours=30), ttl=timedelta(hours=-6)),
        make(Colour.GREEN, forged=True),
        make(Colour.GREEN, age=timedelta(days=30), ttl=timedelta(days=30)),
    )
    assert (green.recognised, green.reason, green.region) == (True, "RECOGNISED", region)
    assert green.attestation is not None
    assert (yellow.reason, yellow.colour, yellow.attestation) == ("NOT_GREEN", Colour.YELLOW, None)
    assert (red.reason, red.colour, red.attestation) == ("NOT_GREEN", Colour.RED, None)
    assert (expired.recognised, expired.reason) == (False, "CODE_EXPIRED")
    assert (forged.recognised, forged.reason, forged.colour) == (False, "SIGNATURE_INVALID", None)
    assert (too_old.recognised, too_old.reason) == (False, "CODE_TOO_OLD")
    for refused in (yellow, red, expired, forged, too_old):
        assert refused.attestation is None and refused.converted is None
        assert refused.message


@pytest.mark.doc('verifying.md "Attestation format"')
@pytest.mark.parametrize("region", REGIONS)
def test_recognised_result_is_signed_and_bounded_by_the_code(region, codes, prepared_dir) -> None:
    data_dir = prepared_dir(NOW)
    spec = next(s for s in REGION_SPECS if s.code == region)
    ttl = timedelta(minutes=50)
    (decision,) = decide(data_dir, codes(region, NOW)(ttl=ttl))

    async def trust() -> tokens.GatewayTrust:
        async with Engine(data_dir) as engine:
            return engine.trust()

    gateway_trust = run(trust())
    assert decision.mode is spec.mode
    assert decision.attestation is not None and decision.valid_until is not None
    claims = tokens.verify_attestation(decision.attestation, gateway_trust, NOW)
    code_exp = NOW + ttl
    assert decision.valid_until <= code_exp
    assert claims["exp"] <= int(code_exp.timestamp())
    assert claims["region"] == region and claims["colour"] == "green"
    assert claims["holder"].startswith("h1-")
    if spec.mode is Mode.CONVERT:
        assert decision.converted is not None
        home = tokens.verify_home_code(decision.converted.code, gateway_trust, NOW)
        assert home["exp"] <= int(code_exp.timestamp())
        assert home["src"]["region"] == region
        assert home["holder"] == claims["holder"]
        assert claims["converted_code_id"] == decision.converted.code_id
    else:
        assert decision.converted is None


def _convert_region() -> str:
    return next(s.code for s in REGION_SPECS if s.mode is Mode.CONVERT)


@pytest.mark.doc('api.md "Recognise"')
def test_converting_the_same_code_twice_returns_the_same_code(codes, prepared_dir) -> None:
    data_dir = prepared_dir(NOW)
    code = codes(_convert_region(), NOW)()
    first, second = decide(data_dir, code, code)
    # Again in a new process (empty cache), later: the record in the store answers.
    (third,) = decide(data_dir, code, now=NOW + timedelta(minutes=5))
    assert first.converted is not None
    assert first.converted == second.converted == third.converted

    async def records() -> int:
        store = await SQLiteStore.open(data_dir / "trustgw.db")
        try:
            return len(await store.list_conversions())
        finally:
            await store.close()

    assert run(records()) == 1


def test_concurrent_conversions_of_one_code_create_one_record(codes, prepared_dir) -> None:
    import asyncio

    data_dir = prepared_dir(NOW)
    code = codes(_convert_region(), NOW)()

    async def scenario() -> tuple[list[Recognition], int]:
        async with Engine(data_dir) as engine:
            decisions = await asyncio.gather(
                *(engine.recogniser.recognise(code, NOW) for _ in range(20))
            )
            await engine.conversions.stop()
            return list(decisions), len(await engine.store.list_conversions())

    decisions, stored = run(scenario())
    assert len({d.converted for d in decisions}) == 1
    assert stored == 1


def test_the_holder_is_pseudonymous_and_stable(codes, prepared_dir) -> None:
    data_dir = prepared_dir(NOW)
    region = REGION_SPECS[0].code
    make = codes(region, NOW)
    holder = ("110101199003071233", "张三")
    a, b = decide(data_dir, make(holder=holder), make(holder=holder))
    assert a.attestation is not None and b.attestation is not None
    assert b"110101199003071233" not in a.attestation.payload
    assert "张三".encode() not in a.attestation.payload
    assert (
        json.loads(a.attestation.payload)["holder"] == json.loads(b.attestation.payload)["holder"]
    )


def test_key_revoked_before_issue_refuses_and_after_issue_keeps(
    codes, prepared_dir, simulator
) -> None:
    data_dir = prepared_dir(NOW)
    region = REGION_SPECS[1].code
    make = codes(region, NOW)
    before = make(age=timedelta(hours=3))  # issued 3 h ago
    after = make(age=timedelta(minutes=30))  # issued 30 min ago
    kid = simulator.issuer(region).kid

    async def revoke() -> None:
        store = await SQLiteStore.open(data_dir / "trustgw.db")
        try:
            await KeyRegistry(store).revoke_key(region, kid, NOW - timedelta(hours=1))
        finally:
            await store.close()

    run(revoke())
    early, late = decide(data_dir, before, after)
    assert (early.recognised, early.reason) == (True, "RECOGNISED")
    assert (late.recognised, late.reason) == (False, "KEY_REVOKED")


def test_code_issued_outside_the_keys_validity_is_refused(codes, prepared_dir) -> None:
    data_dir = prepared_dir(NOW)
    # prepare() registers keys valid from NOW - 30 days.
    code = codes(REGION_SPECS[2].code, NOW)(age=timedelta(days=31), ttl=timedelta(days=40))
    (decision,) = decide(data_dir, code)
    assert decision.reason == "KEY_NOT_VALID"


def test_code_from_the_future_is_refused(codes, prepared_dir) -> None:
    data_dir = prepared_dir(NOW)
    code = codes(REGION_SPECS[3].code, NOW)(age=timedelta(hours=-1))
    (decision,) = decide(data_dir, code)
    assert decision.reason == "CODE_NOT_YET_VALID"


def test_disabled_region_is_refused(codes, prepared_dir) -> None:
    data_dir = prepared_dir(NOW)
    region = REGION_SPECS[4].code

    async def disable() -> None:
        store = await SQLiteStore.open(data_dir / "trustgw.db")
        try:
            await store.set_region_enabled(region, False)
        finally:
            await store.close()

    run(disable())
    (decision,) = decide(data_dir, codes(region, NOW)())
    assert (decision.reason, decision.region) == ("REGION_DISABLED", region)


@pytest.mark.doc('api.md "Messages"')
def test_region_hint_must_match_the_code(codes, prepared_dir) -> None:
    data_dir = prepared_dir(NOW)
    code = codes(REGION_SPECS[0].code, NOW)()
    (decision,) = decide(data_dir, code, hint=REGION_SPECS[1].code)
    assert decision.reason == "REGION_MISMATCH"
    (decision,) = decide(data_dir, code, hint=REGION_SPECS[0].code)
    assert decision.reason == "RECOGNISED"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("", "MALFORMED", id="empty"),
        pytest.param("   \n", "MALFORMED", id="blank"),
        pytest.param("hello world", "REGION_UNKNOWN", id="no-known-prefix"),
        pytest.param("x" * 5000, "OVERSIZED", id="oversized"),
        pytest.param("\x00\xff\ufffd", "REGION_UNKNOWN", id="binary-junk"),
    ],
)
def test_bad_input_gets_a_reason(text, reason, prepared_dir) -> None:
    (decision,) = decide(prepared_dir(NOW), text)
    assert (decision.recognised, decision.reason) == (False, reason)
    assert decision.message


@pytest.mark.parametrize("region", REGIONS)
def test_truncated_and_mangled_codes_are_refused_with_a_reason(region, codes, prepared_dir) -> None:
    code = codes(region, NOW)()
    mangled = [
        code[: len(code) // 2],
        code[:-1],
        code + "A",
        code[: len(code) // 2] + "!" + code[len(code) // 2 + 1 :],
        code.replace(code[-8:], "////////"),
    ]
    for decision in decide(prepared_dir(NOW), *mangled):
        assert not decision.recognised
        assert decision.reason in {
            "MALFORMED",
            "OVERSIZED",
            "SIGNATURE_INVALID",
            "KEY_UNKNOWN",
            "REGION_UNKNOWN",
            "ALGORITHM_UNSUPPORTED",
        }, decision


@pytest.mark.doc('verifying.md "Attestation format"')
def test_attestation_never_outlives_its_signing_key(codes, prepared_dir) -> None:
    """A key about to retire signs decisions valid only until its own end."""
    import dataclasses

    data_dir = prepared_dir(NOW)
    key_end = NOW + timedelta(minutes=10)

    class EndingSoon:
        def __init__(self, keys: KeyDirectory) -> None:
            self._keys = keys

        def signer(self, role, now):
            info, key = self._keys.signer(role, now)
            return dataclasses.replace(info, not_after=key_end), key

    async def scenario() -> Recognition:
        async with Engine(data_dir) as engine:
            recogniser = Recogniser(
                lambda: engine.registry.snapshot,
                EndingSoon(engine.keys),
                Pseudonymiser(engine.keys.pseudonym_secret()),
                engine.conversions,
            )
            return await recogniser.recognise(codes(REGION_SPECS[0].code, NOW)(), NOW)

    decision = run(scenario())
    assert decision.recognised and decision.valid_until == key_end
    assert decision.attestation is not None
    assert json.loads(decision.attestation.payload)["exp"] == int(key_end.timestamp())
