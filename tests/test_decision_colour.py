"""A refused decision carries the code's colour, mode and region once the code verified, and
not before (issue 8 item 8). Pins docs/api.md, "Decisions" (the paragraph after the table), and
the `colour` row of `RecogniseResponse`; in process and over gRPC."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from registry_grpc_support import (
    DAY,
    NOW,
    SHOW,
    client,
    factory,
    listed,
    make_pki,
    partner_for,
)
from signed_support import engine
from support.aio import run, serving

from adapters.base import Colour
from adapters.regions import REGION_SPECS
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.api.v1 import registry_pb2 as rpb
from keys.model import Mode
from keys.registry import KeyRegistry
from keys.store import SQLiteStore

HOUR = timedelta(hours=1)
CONVERT = next(s for s in REGION_SPECS if s.mode is Mode.CONVERT)
COLOURS = {
    Colour.GREEN: pb.COLOUR_GREEN,
    Colour.YELLOW: pb.COLOUR_YELLOW,
    Colour.RED: pb.COLOUR_RED,
    None: pb.COLOUR_UNSPECIFIED,
}
MODES = {Mode.SHOW: pb.MODE_SHOW, Mode.CONVERT: pb.MODE_CONVERT}

# (colour, age, ttl) of a code issued relative to NOW, and the decision expected: the colour is
# set exactly when the code verified (None: COLOUR_UNSPECIFIED).
VERIFIED_CASES = [
    pytest.param(Colour.GREEN, HOUR, -HOUR / 2, "CODE_EXPIRED", id="expired-green"),
    pytest.param(Colour.RED, HOUR, -HOUR / 2, "CODE_EXPIRED", id="expired-red"),
    pytest.param(Colour.YELLOW, 30 * DAY, 60 * DAY, "CODE_TOO_OLD", id="too-old-yellow"),
    pytest.param(Colour.GREEN, -HOUR, 2 * HOUR, "CODE_NOT_YET_VALID", id="future-green"),
    pytest.param(Colour.RED, HOUR, HOUR, "NOT_GREEN", id="red"),
    pytest.param(Colour.GREEN, HOUR, HOUR, "RECOGNISED", id="green"),
]


@pytest.mark.parametrize("spec", [SHOW, CONVERT], ids=lambda s: s.mode.value)
@pytest.mark.parametrize(("colour", "age", "ttl", "expected"), VERIFIED_CASES)
def test_in_process_a_verified_code_keeps_its_colour_when_refused(
    prepared_dir, codes, spec, colour, age, ttl, expected
) -> None:
    data_dir = prepared_dir(NOW)
    code = codes(spec.code, NOW)(colour, age=age, ttl=ttl)

    async def scenario():
        async with engine(data_dir) as e:
            return await e.recogniser.recognise(code, NOW)

    decision = run(scenario())
    assert decision.reason == expected
    assert (decision.colour, decision.mode, decision.region) == (colour, spec.mode, spec.code)


def test_in_process_a_code_that_did_not_verify_has_no_colour(
    prepared_dir, codes, simulator
) -> None:
    data_dir = prepared_dir(NOW)
    make = codes(SHOW.code, NOW)
    forged = make(Colour.GREEN, forged=True)
    after_compromise = make(Colour.RED, age=HOUR)
    too_early = make(Colour.GREEN, age=40 * DAY, ttl=50 * DAY)  # before the key's not_before

    async def scenario():
        store = await SQLiteStore.open(data_dir / "trustgw.db")
        try:
            kid = simulator.issuer(SHOW.code).kid
            await KeyRegistry(store).revoke_key(SHOW.code, kid, NOW - 2 * HOUR)
        finally:
            await store.close()
        async with engine(data_dir) as e:
            return [
                await e.recogniser.recognise(c, NOW) for c in (forged, after_compromise, too_early)
            ]

    signature, revoked, not_valid = run(scenario())
    reasons = [d.reason for d in (signature, revoked, not_valid)]
    assert reasons == ["SIGNATURE_INVALID", "KEY_REVOKED", "KEY_NOT_VALID"]
    for decision in (signature, revoked, not_valid):
        assert decision.colour is None, decision.reason
        assert (decision.mode, decision.region) == (SHOW.mode, SHOW.code)


@pytest.mark.integration
def test_over_grpc_refused_verified_codes_carry_their_colour(tmp_path, prepared_dir, simulator):
    """Every reason after verification, over mTLS, including CODE_REVOKED; and none before."""
    data_dir = prepared_dir(NOW)
    pki = make_pki(tmp_path / "pki")
    partner = partner_for(SHOW)
    issuer = simulator.issuer(SHOW.code)
    make = factory(issuer)
    codes = {
        "CODE_REVOKED": (make(Colour.YELLOW, code_id="c0ffee01"), Colour.YELLOW),
        "CODE_EXPIRED": (make(Colour.RED, age=2 * HOUR, ttl=-HOUR), Colour.RED),
        "CODE_TOO_OLD": (make(Colour.GREEN, age=3 * DAY, ttl=5 * DAY), Colour.GREEN),
        "CODE_NOT_YET_VALID": (make(Colour.GREEN, age=-HOUR, ttl=2 * HOUR), Colour.GREEN),
        "NOT_GREEN": (make(Colour.YELLOW), Colour.YELLOW),
        "SIGNATURE_INVALID": (make(Colour.GREEN, forged=True), None),
    }

    async def scenario() -> dict[str, pb.RecogniseResponse]:
        async with serving(data_dir, pki["server"]) as (gateway, port):
            await gateway.trust.install_partner(
                partner.partner_file(), actor="operator:test", now=NOW
            )
            p, v = client(port, pki["partner"]), client(port, pki["verifier"])
            try:
                await p.publish(partner.keyset(1, [listed(issuer)], expires=NOW + DAY))
                batch = partner.revocations("b-1", NOW - HOUR, code_ids=["c0ffee01"])
                await p.partner.PublishRevocations(rpb.SubmissionRequest(submission=batch))
                return {reason: await v.recognise(code) for reason, (code, _) in codes.items()}
            finally:
                await p.close()
                await v.close()

    responses = run(scenario())
    for reason, (_, colour) in codes.items():
        response = responses[reason]
        assert response.reason == reason
        assert response.colour == COLOURS[colour], reason
        assert (response.mode, response.region) == (MODES[SHOW.mode], SHOW.code)
        assert not response.recognised and not response.HasField("attestation")


@pytest.mark.integration
def test_over_grpc_a_stream_carries_the_colour_too(prepared_dir, codes) -> None:
    data_dir = prepared_dir(NOW)
    make = codes(CONVERT.code, NOW)
    expired = make(Colour.YELLOW, age=2 * HOUR, ttl=-HOUR)

    async def scenario() -> list[pb.RecogniseResponse]:
        async with serving(data_dir) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                call = stub.RecogniseStream(
                    iter([pb.RecogniseRequest(request_id="1", code=expired)]), timeout=10
                )
                return [r async for r in call]

    (response,) = run(scenario())
    assert (response.reason, response.colour, response.mode) == (
        "CODE_EXPIRED",
        pb.COLOUR_YELLOW,
        pb.MODE_CONVERT,
    )
