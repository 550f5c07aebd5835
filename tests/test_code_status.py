"""GetCodeStatus: partners ask the gateway about the home province's own codes (issue 14, mutual).

Pins docs/partners.md §10 (the question, the answer, the limits) and docs/verifying.md "Status
documents" (the offline check): the answer is the status document of the online wire, for region
370000, signed with the gateway's attest key; it verifies with the keys the gateway publishes,
across an attest-key rotation; a revocation shows at the next call; a code the gateway never
issued is "unknown" and its document says nothing else; bad input gets a stable reason, never
INTERNAL; only partner certificates may ask, at a bounded rate.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from registry_grpc_support import NOW, Client, client, error_reason, listed, make_pki, partner_for
from support.aio import run, serving
from support.wait import eventually

from adapters.regions import REGION_SPECS
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import registry_pb2 as rpb
from gateway.codestatus import RateLimiter
from gateway.sdk import trust_from_proto, verify_code_status
from gateway.tokens import GatewayTrust
from keys.crypto import b64url_decode
from keys.errors import GatewayError
from keys.model import Mode
from keys.pseudonym import holder_hash
from keys.statusdoc import StatusClaims, StatusDocument
from keys.timeutil import from_unix
from keys.trustlist import PinnedKey, TrustListVerifier

pytestmark = pytest.mark.integration  # a real server (tests/support/tiers.py)

CONVERT = next(s for s in REGION_SPECS if s.code == "230000")  # Heilongjiang: offline, SM2
assert CONVERT.mode is Mode.CONVERT
NONCE = "bm9uY2Utbm9uY2Utbm9uY2U"
HOUR = timedelta(hours=1)
HOLDER = ("23010219900307001X", "Wang Wei")  # a holder ID number and name of the source code


def reason_of(call: Any) -> str:
    try:
        call()
    except GatewayError as exc:
        return exc.reason
    return "OK"


async def failure(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        result = await call
    except grpc.aio.AioRpcError as exc:
        return error_reason(exc)
    raise AssertionError(f"the call succeeded: {result}")


async def ask(c: Client, **fields: str) -> str:
    request = rpb.GetCodeStatusRequest(nonce=fields.pop("nonce", NONCE), **fields)
    response = await c.partner.GetCodeStatus(request, timeout=10)
    return response.status_document


async def published(c: Client) -> GatewayTrust:
    return trust_from_proto(await c.recognition.GetGatewayKeys(pb.GetGatewayKeysRequest()))


def unlimited(gateway: Any) -> None:
    """Lift the per-partner rate limit: a test that polls a condition asks every 10 ms."""
    gateway.code_status.limiter = RateLimiter(1e9, 10**9)


def signed_at(document: str) -> Any:
    """The document's own ``checked_at`` (read unverified): when the serving gateway signed it,
    on the real clock; each test verifies there, or later on purpose."""
    return StatusClaims.from_json(json.loads(StatusDocument.parse(document).payload)).checked_at


async def home_code(c: Client, code: str) -> pb.RecogniseResponse:
    response = await c.recognise(code)
    assert response.reason == "RECOGNISED" and response.converted.code.startswith("SD1:")
    return response


@pytest.fixture
def pki(tmp_path: Path) -> Any:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def world(prepared_dir, pki):
    """``world(body)`` runs ``body(gateway, clients)`` against a real gateway over mTLS."""
    data_dir = prepared_dir(NOW)
    state: dict[str, int] = {}

    def go(body: Any) -> Any:
        async def scenario() -> Any:
            async with serving(data_dir, pki["server"]) as (gateway, port):
                state["port"] = port
                clients = {name: client(port, pki[name]) for name in pki if name != "server"}
                try:
                    return await body(gateway, clients)
                finally:
                    for c in clients.values():
                        await c.close()

        return run(scenario())

    go.data_dir = data_dir  # type: ignore[attr-defined]
    go.state = state  # type: ignore[attr-defined]
    return go


@pytest.mark.doc("partners.md §10.1", 'verifying.md "Status documents"')
def test_a_partner_gets_a_signed_valid_answer_by_code_and_by_code_id(world, codes) -> None:
    make = codes(CONVERT.code, NOW)

    async def body(gateway, c: dict[str, Client]) -> Any:
        converted = (await home_code(c["verifier"], make(holder=HOLDER))).converted
        by_code = await ask(c["partner"], code=converted.code)
        by_id = await ask(c["other"], code_id=converted.code_id, nonce=NONCE + "x")
        return converted, by_code, by_id, await published(c["partner"])

    converted, by_code, by_id, trust = world(body)
    now = signed_at(by_id)
    first = verify_code_status(by_code, trust, now, code_id=converted.code_id, nonce=NONCE)
    second = verify_code_status(by_id, trust, now, code_id=converted.code_id, nonce=NONCE + "x")
    for claims in (first, second):
        assert (claims.region, claims.issuer, claims.status, claims.colour) == (
            "370000", "trustgw", "valid", "green",
        )  # fmt: skip
        assert claims.valid_until is not None and claims.valid_from is not None
        assert int(claims.valid_until.timestamp()) == converted.expires_at
        assert claims.valid_from <= claims.checked_at <= claims.valid_until
        assert 0 < claims.max_age <= 60
    # The holder reference is keyed per asking partner: two partners cannot join on it, and it
    # is neither the home code's own pseudonym nor anything computed without the secret.
    assert first.holder_ref != second.holder_ref
    payload = json.loads(StatusDocument.parse(by_code).payload)
    holder = json.loads(b64url_decode(converted.code[4:].split(".")[0]))["holder"]
    assert holder.startswith("h1-") and holder not in json.dumps(payload)
    for document in (by_code, by_id):
        text = StatusDocument.parse(document).payload.decode()
        for personal in (HOLDER[0], HOLDER[1], holder_hash(CONVERT.code, HOLDER[0])):
            assert personal not in text  # no identifier, nor its unkeyed hash
    header = json.loads(b64url_decode(by_code.split(".")[0]))
    assert header["typ"] == "trustgw-status+jwt" and header["alg"] == "EdDSA"
    # The answer is the other question's for no other nonce or code id.
    assert reason_of(lambda: verify_code_status(by_code, trust, now, nonce=NONCE + "x")) == (
        "STATUS_MISMATCH"
    )
    assert reason_of(lambda: verify_code_status(by_code, trust, now, code_id="SD" + "0" * 30)) == (
        "STATUS_MISMATCH"
    )
    # Kept past checked_at + max_age (+ skew), it is stale.
    late = first.checked_at + timedelta(seconds=first.max_age) + timedelta(minutes=6)
    assert reason_of(lambda: verify_code_status(by_code, trust, late)) == "STATUS_MISMATCH"
    # Changed by one character, it does not verify.
    head, pay, sig = by_code.split(".")
    forged = f"{head}.{pay}.{sig[:-2]}{'A' if sig[-2] != 'A' else 'B'}{sig[-1]}"
    assert reason_of(lambda: verify_code_status(forged, trust, now)) == "SIGNATURE_INVALID"


@pytest.mark.doc("partners.md §10.2")
def test_a_code_the_gateway_never_issued_is_unknown_and_nothing_else(world, codes) -> None:
    make = codes(CONVERT.code, NOW)

    async def body(gateway, c: dict[str, Client]) -> Any:
        converted = (await home_code(c["verifier"], make())).converted
        other = (await home_code(c["verifier"], make())).converted
        # A code text under a real id that is not the text the gateway issued under it:
        # another code's signature, or a changed payload.
        head, _, _ = converted.code.partition(".")
        spliced = f"{head}.{other.code.partition('.')[2]}"
        return [
            await ask(c["partner"], code_id="SD" + "0" * 30),
            await ask(c["partner"], code=spliced),
        ], await published(c["partner"])

    documents, trust = world(body)
    for document in documents:
        claims = verify_code_status(document, trust, signed_at(document))
        assert (claims.status, claims.max_age) == ("unknown", 0)
        assert (claims.colour, claims.holder_ref, claims.valid_from, claims.valid_until) == (
            None, None, None, None,
        )  # fmt: skip
        payload = json.loads(StatusDocument.parse(document).payload)
        assert set(payload) == {
            "v", "region", "issuer", "code_id", "nonce", "status", "checked_at", "max_age",
        }  # fmt: skip


@pytest.mark.doc("partners.md §10.2")
def test_a_revocation_of_the_source_shows_at_the_next_call(world, simulator, codes) -> None:
    """No cache: the call after the partner's revocation batch answers "revoked"."""
    partner = partner_for(CONVERT)
    make = codes(CONVERT.code, NOW)
    source = make(code_id="revoke-me-0001")

    async def body(gateway, c: dict[str, Client]) -> Any:
        await gateway.trust.install_partner(partner.partner_file(), actor="operator:t", now=NOW)
        keyset = partner.keyset(
            1, [listed(simulator.issuer(CONVERT.code))], expires=NOW + 24 * HOUR
        )
        await gateway.trust.publish_keyset(keyset, caller_region=CONVERT.code, now=NOW)
        converted = (await home_code(c["verifier"], source)).converted
        before = await ask(c["partner"], code=converted.code)
        batch = partner.revocations(
            "b-0001", NOW - timedelta(seconds=5), code_ids=["revoke-me-0001"]
        )
        await gateway.trust.publish_revocations(batch, caller_region=CONVERT.code, now=NOW)
        after = await ask(c["partner"], code=converted.code, nonce=NONCE + "2")
        return before, after, await published(c["partner"])

    before, after, trust = world(body)
    assert verify_code_status(before, trust, signed_at(before)).status == "valid"
    revoked = verify_code_status(after, trust, signed_at(after), nonce=NONCE + "2")
    assert (revoked.status, revoked.colour) == ("revoked", "green")


@pytest.mark.doc("partners.md §10.2")
def test_a_withdrawn_issuing_key_makes_its_home_codes_revoked(world, codes, capsys) -> None:
    """``keys revoke`` of the gateway's issue key from before the code was signed: the next
    answers after the reload say "revoked" (docs/operations.md, "Withdrawing a compromised
    gateway key")."""
    from gateway.cli import main

    make = codes(CONVERT.code, NOW)
    data_dir = world.data_dir

    async def body(gateway, c: dict[str, Client]) -> Any:
        converted = (await home_code(c["verifier"], make())).converted
        before = await ask(c["partner"], code_id=converted.code_id)
        compromised = str(int(NOW.timestamp()) - 3600)  # before the code was signed
        args = ["keys", "revoke", "--data-dir", str(data_dir), "--role", "issue",
                "--kid", converted.key_id, "--compromised-at", compromised]  # fmt: skip
        assert await asyncio.to_thread(main, args) == 0, capsys.readouterr().err

        async def revoked() -> str | None:
            document = await ask(c["partner"], code_id=converted.code_id)
            status = json.loads(StatusDocument.parse(document).payload)["status"]
            return document if status == "revoked" else None

        unlimited(gateway)  # the poll below asks faster than a partner may
        after = await eventually(revoked, what="the withdrawal reaches the status call")
        return before, after, await published(c["partner"])

    before, after, trust = world(body)
    assert verify_code_status(before, trust, signed_at(before)).status == "valid"
    claims = verify_code_status(after, trust, signed_at(after))
    assert (claims.status, claims.max_age) == ("revoked", 3600)


@pytest.mark.doc("partners.md §10.2")
def test_an_expired_home_code_answers_expired(world, codes) -> None:
    make = codes(CONVERT.code, NOW)

    async def body(gateway, c: dict[str, Client]) -> Any:
        converted = (await home_code(c["verifier"], make())).converted
        later = NOW + timedelta(days=2)  # past the source's validity, inside the key's
        document = await gateway.code_status.answer(
            code="", code_id=converted.code_id, nonce=NONCE, asker="110000", now=later
        )
        return document, await published(c["partner"]), later

    document, trust, later = world(body)
    claims = verify_code_status(document, trust, later)
    assert claims.status == "expired" and claims.valid_until is not None
    assert claims.valid_until < later


@pytest.mark.doc("partners.md §10.3", 'api.md "Limits"')
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, "INVALID_REQUEST", id="neither-code-nor-id"),
        pytest.param(
            {"code": "SD1:e30.AA", "code_id": "SD" + "0" * 30}, "INVALID_REQUEST", id="both"
        ),
        pytest.param({"code_id": "SD" + "0" * 30, "nonce": ""}, "MALFORMED", id="no-nonce"),
        pytest.param({"code_id": "SD" + "0" * 30, "nonce": "short"}, "MALFORMED", id="short-nonce"),
        pytest.param({"code_id": "SD" + "0" * 30, "nonce": "n" * 65}, "MALFORMED", id="long-nonce"),
        pytest.param({"code_id": "SD 00"}, "MALFORMED", id="bad-code-id"),
        pytest.param({"code_id": "x" * 65}, "MALFORMED", id="long-code-id"),
        pytest.param({"code": "BJ1:not-a-home-code"}, "MALFORMED", id="not-sd1"),
        pytest.param({"code": "SD1:%%%.AA"}, "MALFORMED", id="bad-base64"),
        pytest.param({"code": "SD1:e30.AA"}, "MALFORMED", id="payload-without-id"),
        pytest.param({"code": "SD1:" + "A" * 5000 + ".AA"}, "OVERSIZED", id="oversized-code"),
    ],
)
def test_bad_questions_get_a_stable_reason_never_internal(world, fields, expected) -> None:
    async def body(gateway, c: dict[str, Client]) -> Any:
        return await failure(ask(c["partner"], **fields))

    assert world(body) == (grpc.StatusCode.INVALID_ARGUMENT, expected)


@pytest.mark.doc("partners.md §10.3", 'api.md "Limits"')
def test_only_partners_may_ask_within_the_size_and_rate_limits(world) -> None:
    async def body(gateway, c: dict[str, Client]) -> Any:
        refused = [
            await failure(ask(c[name], code_id="SD" + "0" * 30))
            for name in ("verifier", "operator")
        ]
        too_large = await failure(ask(c["partner"], code="SD1:" + "A" * 9000 + ".AA"))
        clock = [0.0]
        gateway.code_status.limiter = RateLimiter(1.0, 3, clock=lambda: clock[0])
        answered = [await ask(c["partner"], code_id="SD" + "0" * 30) for _ in range(3)]
        limited = await failure(ask(c["partner"], code_id="SD" + "0" * 30))
        other = await ask(c["other"], code_id="SD" + "0" * 30)  # another partner's allowance
        clock[0] += 1.0  # a second later, one more call
        again = await ask(c["partner"], code_id="SD" + "0" * 30)
        return refused, too_large, answered, limited, other, again

    refused, too_large, answered, limited, other, again = world(body)
    assert refused == [(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")] * 2
    assert too_large == (grpc.StatusCode.RESOURCE_EXHAUSTED, "REQUEST_TOO_LARGE")
    assert len(answered) == 3 and other and again
    assert limited == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")


@pytest.mark.doc('verifying.md "Status documents"')
def test_answers_verify_with_the_trust_list_across_an_attest_key_rotation(
    world, codes, capsys
) -> None:
    """Before and after ``keys rotate --role attest``: each document verifies with the keys the
    signed trust list publishes afterwards (the retired key stays listed while it is valid)."""
    from gateway.cli import main

    make = codes(CONVERT.code, NOW)
    data_dir = world.data_dir

    async def body(gateway, c: dict[str, Client]) -> Any:
        converted = (await home_code(c["verifier"], make())).converted
        old = await ask(c["partner"], code=converted.code)
        args = ["keys", "rotate", "--data-dir", str(data_dir), "--role", "attest", "--json",
                "--activate-in", "0"]  # fmt: skip
        assert await asyncio.to_thread(main, args) == 0
        new_kid = json.loads(capsys.readouterr().out)["kid"]

        async def signed_by_new_key() -> str | None:
            document = await ask(c["partner"], code=converted.code)
            return document if StatusDocument.parse(document).kid == new_kid else None

        unlimited(gateway)  # the poll below asks faster than a partner may
        new = await eventually(signed_by_new_key, what="the new attest key signs")
        listed_now = await c["partner"].trustlist.GetTrustList(rpb.GetTrustListRequest())
        return old, new, new_kid, listed_now, gateway.published_keys()

    old, new, new_kid, listed_now, keys = world(body)
    trust_list = TrustListVerifier(PinnedKey.of(keys)).verify(
        listed_now.envelope, from_unix(listed_now.issued_at)
    )
    trust = GatewayTrust.from_trustlist(trust_list)
    kids = [StatusDocument.parse(d).kid for d in (old, new)]
    assert kids[0] != kids[1] == new_kid
    for document in (old, new):
        claims: StatusClaims = verify_code_status(document, trust, signed_at(document))
        assert claims.status == "valid"


@pytest.mark.doc("partners.md §10.4")
def test_the_partner_command_asks_and_verifies(world, codes, pki, capsys, tmp_path) -> None:
    """``trustgw partner-tools code-status``: exit 0 for a valid code, 1 for any other status,
    one ``trustgw: REASON: message`` line for a bad code id (before anything connects)."""
    from gateway.cli import main

    make = codes(CONVERT.code, NOW)
    files = pki["partner"]
    tls = ["--cert", str(files.cert), "--key", str(files.key), "--ca", str(files.ca)]

    async def body(gateway, c: dict[str, Client]) -> Any:
        converted = (await home_code(c["verifier"], make())).converted
        port = world.state["port"]
        base = ["partner-tools", "code-status", "--gateway", f"localhost:{port}", *tls, "--json"]
        ran = []
        for code in (converted.code, converted.code_id, "SD" + "0" * 30):
            status = await asyncio.to_thread(main, [*base, code])
            ran.append((status, json.loads(capsys.readouterr().out)))
        bad = await asyncio.to_thread(main, [*base, "not a code id"])
        return ran, bad, capsys.readouterr().err

    ran, bad, err = world(body)
    assert [(status, out["status"]) for status, out in ran] == [
        (0, "valid"), (0, "valid"), (1, "unknown"),
    ]  # fmt: skip
    assert ran[0][1]["colour"] == "green" and ran[0][1]["status_document"].count(".") == 2
    assert bad == 1 and err.strip().startswith("trustgw: MALFORMED: ")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.doc("partners.md §10.1", 'verifying.md "Algorithms"')
def test_a_deployment_that_signs_with_sm2_answers_with_sm2(tmp_path, simulator, codes) -> None:
    """``--gateway-algorithm SM2``: the status document's ``alg`` is SM2 (the attest key's), and
    it verifies with the published SM2 key (over a plaintext development server)."""
    pytest.importorskip("tongsuopy", reason="SM2 needs the tongsuopy wheel (docs/crypto.md)")
    from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
    from gateway.api.v1 import registry_pb2_grpc as rpb_grpc
    from gateway.demo import prepare
    from keys.crypto import Algorithm

    data_dir = tmp_path / "sm2"
    data_dir.mkdir()
    run(prepare(data_dir, simulator, NOW, gateway_algorithm=Algorithm.SM2))
    make = codes(CONVERT.code, NOW)

    async def scenario() -> Any:
        async with serving(data_dir) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                recognition = pb_grpc.RecognitionServiceStub(channel)
                answer = await recognition.Recognise(pb.RecogniseRequest(code=make()), timeout=10)
                partner = rpb_grpc.PartnerServiceStub(channel)
                request = rpb.GetCodeStatusRequest(code=answer.converted.code, nonce=NONCE)
                response = await partner.GetCodeStatus(request, timeout=10)
                keys = await recognition.GetGatewayKeys(pb.GetGatewayKeysRequest(), timeout=10)
                return response.status_document, trust_from_proto(keys)

    document, trust = run(scenario())
    assert StatusDocument.parse(document).alg is Algorithm.SM2
    claims = verify_code_status(document, trust, signed_at(document), nonce=NONCE)
    assert (claims.status, claims.colour) == ("valid", "green")


@pytest.mark.doc("partners.md §10.1")
def test_the_gateway_answers_with_the_document_it_checks_from_partners(world, codes) -> None:
    """One document both ways (docs/partners.md §9 and §10): the checks the gateway applies to a
    partner's answer (adapters.online.verify_status_document) accept the gateway's own answer,
    given its attest key as the key of region 370000 and the question as asked."""
    from adapters.online import StatusQuestion, refusal, verify_status_document
    from keys.model import RegionKey

    make = codes(CONVERT.code, NOW)

    async def body(gateway, c: dict[str, Client]) -> Any:
        converted = (await home_code(c["verifier"], make())).converted
        document = await ask(c["partner"], code_id=converted.code_id)
        return converted, document, gateway.published_keys()

    converted, document, keys = world(body)
    at = signed_at(document)

    class Keys:
        def keys_for(self, region: str, kid: str | None) -> tuple[RegionKey, ...]:
            return tuple(
                RegionKey("370000", k.kid, k.public_key, k.not_before, k.not_after)
                for k in keys
                if k.role.value == "attest" and region == "370000" and kid in (None, k.kid)
            )

    question = StatusQuestion("370000", "trustgw", converted.code_id, NONCE, at)
    claims, key = verify_status_document(document, question, Keys(), at)
    assert (claims.status, key.kid) == ("valid", StatusDocument.parse(document).kid)
    assert refusal(claims, at) is None  # honoured, as a partner's valid answer would be
