"""Arrival declarations over real gRPC with mutual TLS, as the province's app back end makes them
(docs/api.md, "DeclarationService"; docs/rules.md).

Arrivals from partner regions with green, yellow and red codes, from a province that is not a
partner and from abroad; the same declaration twice, a superseding one, a revoked partner code;
every other role refused; bad input refused with its reason and nothing stored.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from registry_grpc_support import NOW, error_reason, listed, partner_for
from support.aio import run, serving
from support.codes import CodeFactory

from adapters.base import Colour
from adapters.fields import id_check_digit
from adapters.regions import REGION_SPECS
from adapters.simulator import PartnerSimulator
from gateway import tokens
from gateway.api.v1 import declaration_pb2 as pb
from gateway.api.v1 import declaration_pb2_grpc as pb_grpc
from gateway.api.v1 import recognition_pb2 as rpb
from gateway.api.v1 import recognition_pb2_grpc as rpb_grpc
from gateway.api.v1 import registry_pb2 as regpb
from gateway.api.v1 import registry_pb2_grpc as regpb_grpc
from gateway.eligibility import local_date
from gateway.pki import DevCA, TlsFiles
from gateway.sdk.channel import aio_channel
from keys.timeutil import from_unix

pytestmark = [
    pytest.mark.integration,  # a real server (tests/support/tiers.py)
    pytest.mark.doc(
        'api.md "DeclarationService"', 'api.md "Declare"', 'api.md "GetDeclaration"',
        'api.md "What is kept"', 'api.md "Who may call what"',
    ),
]  # fmt: skip

T = TypeVar("T")
BEIJING, SHANGHAI, HUBEI = "110000", "310000", "420000"
BJ = next(s for s in REGION_SPECS if s.code == BEIJING)


def _id(first17: str) -> str:
    return first17 + id_check_digit(first17)


ZHANG = (_id("11010119900307123"), "张三")
LI = (_id("31010419851224567"), "李四")
WANG = (_id("42010519780615234"), "王五")


def today() -> date:
    return local_date(NOW)  # dates relative to it stay well inside their rules' bounds


def days_ago(n: int) -> str:
    return (today() - timedelta(days=n)).isoformat()


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TlsFiles]:
    ca = DevCA.create(tmp_path / "pki", NOW)
    files = {"server": TlsFiles(*ca.issue("server", server=True, now=NOW), ca.cert_path)}
    for name, uri in [
        ("app", "trustgw://declarant-channel/sd-app"),
        ("verifier", "trustgw://verifier/checkpoint-7"),
        ("operator", "trustgw://operator/ops"),
        ("partner", f"trustgw://partner/{BEIJING}"),
    ]:
        files[name] = TlsFiles(*ca.issue(name, uri=uri, now=NOW), ca.cert_path)
    return files


Body = Callable[[Any, dict[str, grpc.aio.Channel]], Awaitable[T]]


@pytest.fixture
def world(prepared_dir, pki):
    """``world(body)`` runs ``body(gateway, channels)`` against a gateway over mTLS with the 14
    simulated partners onboarded; one channel per client certificate."""
    data_dir = prepared_dir(NOW)

    def go(body: Body[T]) -> T:
        async def scenario() -> T:
            async with serving(data_dir, pki["server"]) as (gateway, port):
                channels = {
                    name: aio_channel(f"localhost:{port}", pki[name])
                    for name in pki
                    if name != "server"
                }
                try:
                    return await body(gateway, channels)
                finally:
                    for channel in channels.values():
                        await channel.close()

        return run(scenario())

    return go


def code_of(simulator: PartnerSimulator, region: str, holder: tuple[str, str], **kw: Any) -> str:
    return CodeFactory(simulator.issuer(region), NOW, random.Random(5))(holder=holder, **kw)


def request(holder: tuple[str, str] = ZHANG, **fields: Any) -> pb.DeclareRequest:
    values: dict[str, Any] = {
        "id_number": holder[0],
        "origin": BEIJING,
        "arrival_date": days_ago(3),
        "places": [BEIJING],
        "temperature_celsius": 36.6,
    }
    values.update(fields)
    return pb.DeclareRequest(**values)


async def failure(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        result = await call
    except grpc.aio.AioRpcError as exc:
        return error_reason(exc)
    raise AssertionError(f"the call succeeded: {result}")


def rules(response: Any) -> list[str]:
    return [r.rule for r in response.failed_rules]


def test_arrivals_get_the_colour_and_green_from_day_the_rules_give(world, simulator) -> None:
    green = code_of(simulator, BEIJING, ZHANG)
    yellow = code_of(simulator, SHANGHAI, LI, colour=Colour.YELLOW)
    red_holder = (_id("11010119800101002"), "赵六")
    red = code_of(simulator, BEIJING, red_holder, colour=Colour.RED)
    traveller = (_id("11010119900307988"), "Zhou")
    via_korea = (_id("11010519900307555"), "Wu")

    async def body(gateway, ch: dict[str, grpc.aio.Channel]) -> list[pb.DeclareResponse]:
        app = pb_grpc.DeclarationServiceStub(ch["app"])
        return [
            await app.Declare(request(ZHANG, partner_code=green, request_id="r-1")),
            await app.Declare(request(LI, origin="310104", places=[SHANGHAI], partner_code=yellow)),
            await app.Declare(request(red_holder, partner_code=red)),
            await app.Declare(request(WANG, origin=HUBEI, places=[HUBEI])),
            await app.Declare(
                request(traveller, origin="jp", places=["JP"], arrival_date=days_ago(1))
            ),
            await app.Declare(
                request(
                    via_korea,
                    places=[BEIJING, "KR"],
                    partner_code=code_of(simulator, BEIJING, via_korea),
                )
            ),
        ]

    bj_green, sh_yellow, bj_red, hubei, abroad, korea = world(body)
    # A green partner code: exempt from rule 4, green at once, signed like a converted code.
    assert (bj_green.colour, rules(bj_green), bj_green.exempt) == (rpb.COLOUR_GREEN, [], True)
    assert bj_green.request_id == "r-1" and bj_green.partner_region == BEIJING
    assert bj_green.home_code.code_id == bj_green.declaration_id
    # Never better than the partner code; a yellow one is listed and leaves no green-from day.
    assert sh_yellow.colour == rpb.COLOUR_YELLOW and not sh_yellow.exempt
    assert rules(sh_yellow) == ["ARRIVED_UNDER_14_DAYS", "PARTNER_CODE_YELLOW"]
    assert sh_yellow.green_from == ""
    assert bj_red.colour == rpb.COLOUR_RED
    assert rules(bj_red) == ["ARRIVED_UNDER_14_DAYS", "PARTNER_CODE_RED"]
    # Not a partner, or abroad: 14 days of home observation from the arrival date.
    for answer, arrived in ((hubei, 3), (abroad, 1)):
        assert answer.colour == rpb.COLOUR_YELLOW
        assert rules(answer) == ["ARRIVED_UNDER_14_DAYS"]
        arrival = date.fromisoformat(days_ago(arrived))
        assert answer.green_from == (arrival + timedelta(days=14)).isoformat()
        assert answer.failed_rules[0].message.startswith("returned from outside the province")
    # A green partner code does not exempt a stay abroad in the last 14 days.
    assert (korea.colour, korea.exempt) == (rpb.COLOUR_YELLOW, False)
    assert rules(korea) == ["ARRIVED_UNDER_14_DAYS"]


def test_a_home_code_verifies_offline_and_names_its_origin(world, simulator) -> None:
    async def body(gateway, ch: dict[str, grpc.aio.Channel]) -> tuple[Any, Any]:
        app = pb_grpc.DeclarationServiceStub(ch["app"])
        answer = await app.Declare(request(WANG, origin="420100", places=[HUBEI]))
        keys = tokens.GatewayTrust.from_key_infos(gateway.published_keys(), now=NOW)
        return answer, keys

    answer, trust = world(body)
    # Valid up to its stated end (signed after NOW, the time the suite was collected).
    claims = tokens.verify_home_code(
        answer.home_code.code, trust, from_unix(answer.home_code.expires_at)
    )
    assert claims["colour"] == "yellow"
    assert claims["src"] == {"declaration": HUBEI}
    assert claims["id"] == answer.declaration_id
    green_day = date.fromisoformat(answer.green_from)
    assert green_day == date.fromisoformat(days_ago(3)) + timedelta(days=14)
    # Valid a week at most (the green-from day is later here).
    assert answer.home_code.expires_at <= int((NOW + timedelta(days=8)).timestamp())


def test_the_same_declaration_twice_gets_the_same_code_and_a_new_one_supersedes(
    world, simulator
) -> None:
    green = code_of(simulator, BEIJING, ZHANG)

    async def body(gateway, ch: dict[str, grpc.aio.Channel]) -> list[Any]:
        app = pb_grpc.DeclarationServiceStub(ch["app"])
        first = await app.Declare(request(ZHANG, partner_code=green))
        again = await app.Declare(request(ZHANG, partner_code=green))
        revised = await app.Declare(request(ZHANG, partner_code=green, dry_cough=True))
        old = await app.GetDeclaration(
            pb.GetDeclarationRequest(declaration_id=first.declaration_id)
        )
        new = await app.GetDeclaration(
            pb.GetDeclarationRequest(declaration_id=revised.declaration_id)
        )
        counted = await gateway.store.count_declarations()
        return [first, again, revised, old, new, counted]

    first, again, revised, old, new, counted = world(body)
    assert again.duplicate and not first.duplicate
    assert (again.declaration_id, again.home_code.code) == (
        first.declaration_id,
        first.home_code.code,
    )
    assert revised.superseded == first.declaration_id
    assert (revised.colour, rules(revised)) == (rpb.COLOUR_YELLOW, ["SYMPTOMS"])
    assert (old.status, old.superseded_by) == ("superseded", revised.declaration_id)
    assert old.revoked_at > 0
    assert (new.status, new.revoked_at) == ("current", 0)
    assert [c.count for c in counted] == [1]  # one holder, one standing declaration


def test_revoking_the_partner_code_revokes_the_home_code_made_from_it(world, simulator) -> None:
    partner = partner_for(BJ)
    issuer = simulator.issuer(BEIJING)
    code = code_of(simulator, BEIJING, ZHANG, code_id="bj-c0ffee")

    async def body(gateway, ch: dict[str, grpc.aio.Channel]) -> list[Any]:
        await gateway.trust.install_partner(partner.partner_file(), actor="operator:t", now=NOW)
        p = regpb_grpc.PartnerServiceStub(ch["partner"])
        await p.PublishKeySet(
            regpb.SubmissionRequest(
                submission=partner.keyset(1, [listed(issuer)], expires=NOW + timedelta(days=1))
            )
        )
        app = pb_grpc.DeclarationServiceStub(ch["app"])
        made = await app.Declare(request(ZHANG, partner_code=code))
        batch = partner.revocations("b-1", NOW - timedelta(minutes=1), code_ids=["bj-c0ffee"])
        receipt = await p.PublishRevocations(regpb.SubmissionRequest(submission=batch))
        after = await app.GetDeclaration(
            pb.GetDeclarationRequest(declaration_id=made.declaration_id)
        )
        await gateway.refresh()
        again = await failure(app.Declare(request(ZHANG, partner_code=code)))
        return [made, receipt, after, again]

    made, receipt, after, again = world(body)
    assert made.colour == rpb.COLOUR_GREEN
    assert receipt.conversions_revoked == 1
    assert after.status == "revoked" and after.revoked_at > 0
    assert again == (grpc.StatusCode.INVALID_ARGUMENT, "CODE_REVOKED")


@pytest.mark.parametrize("role", ["verifier", "operator", "partner"])
def test_only_a_declarant_channel_may_declare(world, role: str) -> None:
    async def body(gateway, ch: dict[str, grpc.aio.Channel]) -> list[Any]:
        stub = pb_grpc.DeclarationServiceStub(ch[role])
        return [
            await failure(stub.Declare(request())),
            await failure(stub.GetDeclaration(pb.GetDeclarationRequest(declaration_id="SDx"))),
            await gateway.store.count_declarations(),
        ]

    declare, get, counted = world(body)
    assert declare == get == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert [c.count for c in counted] == [0]


BAD = [
    pytest.param({"id_number": "110101199003071234"}, "ID_NUMBER_INVALID", id="check-digit"),
    pytest.param({"id_number": "11010119900307123"}, "ID_NUMBER_INVALID", id="17-characters"),
    pytest.param({"id_number": "1" * 40}, "FIELD_TOO_LONG", id="id-number-too-long"),
    pytest.param({"arrival_date": "2026-02-30"}, "DATE_INVALID", id="impossible-date"),
    pytest.param({"arrival_date": "11/03/2026"}, "DATE_INVALID", id="not-iso"),
    pytest.param({"arrival_date": ""}, "DATE_INVALID", id="no-arrival"),
    pytest.param({"arrival_date": days_ago(-2)}, "DATE_OUT_OF_RANGE", id="arrival-in-future"),
    pytest.param({"arrival_date": days_ago(400)}, "DATE_OUT_OF_RANGE", id="arrival-too-old"),
    pytest.param({"origin": "990000"}, "ORIGIN_UNKNOWN", id="unknown-division"),
    pytest.param({"origin": "370102"}, "ORIGIN_UNKNOWN", id="home-province"),
    pytest.param({"origin": "XX"}, "ORIGIN_UNKNOWN", id="bad-country"),
    pytest.param({"origin": "CN"}, "ORIGIN_UNKNOWN", id="china-as-a-country"),
    pytest.param({"origin": "Z" * 40}, "FIELD_TOO_LONG", id="origin-too-long"),
    pytest.param({"places": ["110000", "QQ"]}, "PLACE_UNKNOWN", id="bad-place"),
    pytest.param({"places": ["110000"] * 33}, "FIELD_INVALID", id="too-many-places"),
    pytest.param({"temperature_celsius": 48.0}, "FIELD_INVALID", id="temperature"),
    pytest.param({"temperature_celsius": float("nan")}, "FIELD_INVALID", id="temperature-nan"),
    pytest.param({"case_status": 99}, "FIELD_INVALID", id="unknown-case"),
    pytest.param({"discharged_on": days_ago(3)}, "FIELD_INVALID", id="date-without-its-case"),
    pytest.param(
        {
            "case_status": pb.CASE_SUSPECTED,
            "isolation_start": days_ago(2),
            "isolation_end": days_ago(5),
        },
        "FIELD_INVALID",
        id="isolation-ends-before-it-starts",
    ),
    pytest.param({"partner_code": "x" * 5000}, "OVERSIZED", id="partner-code-oversize"),
    pytest.param({"request_id": "r" * 200}, "FIELD_TOO_LONG", id="request-id"),
]


@pytest.mark.parametrize(("fields", "reason"), BAD)
def test_bad_declarations_get_a_reason_and_store_nothing(
    world, fields: dict[str, Any], reason: str
) -> None:
    async def body(gateway, ch: dict[str, grpc.aio.Channel]) -> list[Any]:
        app = pb_grpc.DeclarationServiceStub(ch["app"])
        return [
            await failure(app.Declare(request(**fields))),
            await gateway.store.count_declarations(),
        ]

    refused, counted = world(body)
    assert refused[1] == reason
    assert refused[0] in (grpc.StatusCode.INVALID_ARGUMENT,)
    assert [c.count for c in counted] == [0]


def test_a_partner_code_is_refused_for_the_reason_recognise_gives(world, simulator) -> None:
    bad = [
        code_of(simulator, BEIJING, ZHANG, forged=True),
        code_of(simulator, BEIJING, ZHANG, age=timedelta(days=2), ttl=timedelta(hours=1)),
        code_of(simulator, SHANGHAI, ZHANG, age=-timedelta(hours=2)),
        "HC1:not-a-code",
    ]

    async def body(gateway, ch: dict[str, grpc.aio.Channel]) -> list[Any]:
        app = pb_grpc.DeclarationServiceStub(ch["app"])
        checkpoint = rpb_grpc.RecognitionServiceStub(ch["verifier"])
        pairs = []
        for code in bad:
            recognised = await checkpoint.Recognise(rpb.RecogniseRequest(code=code))
            declared = await failure(app.Declare(request(ZHANG, partner_code=code)))
            pairs.append((recognised.reason, declared))
        return pairs

    pairs = world(body)
    assert [r for r, _ in pairs[:3]] == ["SIGNATURE_INVALID", "CODE_TOO_OLD", "CODE_NOT_YET_VALID"]
    for recognised, (status, reason) in pairs:
        assert (status, reason) == (grpc.StatusCode.INVALID_ARGUMENT, recognised)


def test_a_partner_code_that_is_forged_or_someone_elses_is_refused(world, simulator) -> None:
    forged = code_of(simulator, BEIJING, ZHANG, forged=True)
    lis = code_of(simulator, BEIJING, LI)

    async def body(gateway, ch: dict[str, grpc.aio.Channel]) -> list[Any]:
        app = pb_grpc.DeclarationServiceStub(ch["app"])
        return [
            await failure(app.Declare(request(ZHANG, partner_code=forged))),
            await failure(app.Declare(request(ZHANG, partner_code=lis))),
            await failure(app.GetDeclaration(pb.GetDeclarationRequest(declaration_id="SDnone"))),
            await gateway.store.count_declarations(),
        ]

    forged_, someone_elses, missing, counted = world(body)
    assert forged_ == (grpc.StatusCode.INVALID_ARGUMENT, "SIGNATURE_INVALID")
    assert someone_elses == (grpc.StatusCode.INVALID_ARGUMENT, "HOLDER_MISMATCH")
    assert missing == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    assert [c.count for c in counted] == [0]


@pytest.mark.doc("partners.md §10.2")
def test_a_partner_asking_about_a_superseded_declarations_code_hears_revoked(world) -> None:
    from gateway.sdk import trust_from_proto, verify_code_status
    from keys.statusdoc import StatusClaims, StatusDocument

    nonce = "bm9uY2Utbm9uY2Utbm9uY2U"

    async def body(gateway, ch: dict[str, grpc.aio.Channel]) -> list[Any]:
        app = pb_grpc.DeclarationServiceStub(ch["app"])
        partner = regpb_grpc.PartnerServiceStub(ch["partner"])
        first = await app.Declare(request(WANG, origin=HUBEI, places=[HUBEI]))
        second = await app.Declare(request(WANG, origin=HUBEI, places=[HUBEI], fatigue=True))
        documents = [
            (
                await partner.GetCodeStatus(
                    regpb.GetCodeStatusRequest(code=answer.home_code.code, nonce=nonce),
                    timeout=10,
                )
            ).status_document
            for answer in (first, second)
        ]
        keys = await rpb_grpc.RecognitionServiceStub(ch["partner"]).GetGatewayKeys(
            rpb.GetGatewayKeysRequest()
        )
        return [documents, trust_from_proto(keys)]

    (old, new), trust = world(body)
    at = StatusClaims.from_json(json.loads(StatusDocument.parse(new).payload)).checked_at
    old_claims = verify_code_status(old, trust, at, nonce=nonce)
    new_claims = verify_code_status(new, trust, at, nonce=nonce)
    assert (old_claims.status, new_claims.status) == ("revoked", "valid")
    assert new_claims.colour == "yellow"
