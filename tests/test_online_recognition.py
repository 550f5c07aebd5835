"""Online codes end to end: a real gateway over gRPC asks real simulated partner endpoints
(HTTPS + mTLS) and attests (show, Beijing) or converts (convert, Chongqing) the answer exactly
as an offline code; a partner's failure is a decision with a stable reason inside the caller's
deadline, and costs the other regions nothing (docs/partners.md §9, docs/api.md "Decisions")."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.aio import run
from support.clock import REAL_NOW
from support.online import Pki, make_pki, online_settings, partner_endpoint, sim_for, sim_keys

from adapters.base import Colour
from gateway import tokens
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.grpc.server import build_server
from gateway.online.config import PartnerSettings
from gateway.partner_sim import Fault, PartnerSim
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway
from gateway.sdk import trust_from_proto
from keys.registry import KeyRegistry
from keys.statusdoc import EXPIRED, REVOKED
from keys.store import SQLiteStore
from keys.timeutil import utcnow

pytestmark = [
    pytest.mark.integration,
    pytest.mark.doc("partners.md §9", "partners.md §9.5", "partners.md §9.8", 'api.md "Deadlines"'),
]

NOW = REAL_NOW  # a serving gateway reads the real clock


async def _register(data_dir: Path, sims: list[PartnerSim], now: datetime) -> None:
    store = await SQLiteStore.open(data_dir / "trustgw.db")
    try:
        registry = KeyRegistry(store)
        await registry.load()
        for sim in sims:
            for key in sim_keys(sim, now):
                await registry.add_key(key)
    finally:
        await store.close()


@asynccontextmanager
async def online_gateway(
    data_dir: Path, pki: Pki, sims: list[PartnerSim], *, configured: tuple[str, ...] | None = None
) -> AsyncIterator[tuple[Any, Gateway]]:
    """The gateway (plaintext gRPC) with the simulated partners' endpoints configured; yields
    (stub, gateway)."""
    await _register(data_dir, sims, NOW)
    async with AsyncExitStack() as stack:
        partners = []
        for sim in sims:
            server = await stack.enter_async_context(partner_endpoint(sim, pki))
            if configured is None or sim.region in configured:
                partners.append(
                    PartnerSettings(sim.region, server.endpoint, ca=pki.ca, breaker_failures=3)
                )
        config = GatewayConfig(
            data_dir=data_dir, refresh_interval=0.1, online=online_settings(pki, *partners)
        )
        gateway = await Gateway.open(config)
        running = await build_server(gateway, "127.0.0.1:0", None)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                yield pb_grpc.RecognitionServiceStub(channel), gateway
        finally:
            await running.stop(0.5)
            await gateway.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("online-e2e-pki"))


def _sims() -> tuple[PartnerSim, PartnerSim]:
    beijing, chongqing = sim_for("110000", NOW), sim_for("500000", NOW)
    beijing.clock = chongqing.clock = utcnow  # the partners' clocks are real ones too
    return beijing, chongqing


async def _ask(stub: Any, code: str, timeout: float = 5.0) -> pb.RecogniseResponse:
    """Recognise with a deadline: a DEADLINE_EXCEEDED would fail the test (the gateway must
    answer with a decision inside it)."""
    response: pb.RecogniseResponse = await stub.Recognise(
        pb.RecogniseRequest(request_id="t", code=code), timeout=timeout
    )
    return response


def test_online_codes_are_attested_or_converted_like_offline_ones(
    prepared_dir: Callable[[datetime], Path], pki: Pki
) -> None:
    data_dir = prepared_dir(NOW)
    beijing, chongqing = _sims()
    show = "BJ1:" + beijing.add("bjgreen000001")
    convert = "CQJKM:" + chongqing.add("cqgreen000001")
    yellow = "BJ1:" + beijing.add("bjyellow00001", Colour.YELLOW)
    revoked = "BJ1:" + beijing.add("bjrevoked0001", status=REVOKED)
    expired = "CQJKM:" + chongqing.add("cqexpired0001", status=EXPIRED)
    unknown = "BJ1:ON1.bjhc.neverissued01"

    async def scenario() -> dict[str, pb.RecogniseResponse]:
        async with online_gateway(data_dir, pki, [beijing, chongqing]) as (stub, _):
            answers = {
                name: await _ask(stub, code)
                for name, code in (
                    ("show", show),
                    ("convert", convert),
                    ("yellow", yellow),
                    ("revoked", revoked),
                    ("expired", expired),
                    ("unknown", unknown),
                    ("again", show),
                )
            }
            trust = trust_from_proto(await stub.GetGatewayKeys(pb.GetGatewayKeysRequest()))
        for name in ("show", "convert"):
            att = answers[name].attestation
            claims = tokens.verify_attestation(
                tokens.Attestation(att.payload, att.key_id, att.alg, att.signature), trust, utcnow()
            )
            assert claims["region"] == answers[name].region
        tokens.verify_home_code(answers["convert"].converted.code, trust, utcnow())
        return answers

    answers = run(scenario())
    assert (answers["show"].reason, answers["show"].mode) == ("RECOGNISED", pb.MODE_SHOW)
    assert answers["show"].colour == pb.COLOUR_GREEN and not answers["show"].HasField("converted")
    assert (answers["convert"].reason, answers["convert"].mode) == ("RECOGNISED", pb.MODE_CONVERT)
    assert answers["convert"].converted.code.startswith("SD1:")
    assert (answers["yellow"].reason, answers["yellow"].colour) == ("NOT_GREEN", pb.COLOUR_YELLOW)
    assert answers["revoked"].reason == "CODE_REVOKED"
    assert answers["expired"].reason == "CODE_EXPIRED"
    assert answers["unknown"].reason == "CODE_UNKNOWN"
    assert answers["again"].reason == "RECOGNISED"
    assert beijing.requests == 4  # the repeated green code came from the cache


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        pytest.param(Fault.HANG, "PARTNER_TIMEOUT", id="never-answers"),
        pytest.param(Fault.RESET, "PARTNER_UNAVAILABLE", id="reset"),
        pytest.param(Fault.HTTP_503, "PARTNER_UNAVAILABLE", id="http-503"),
        pytest.param(Fault.BAD_SIGNATURE, "SIGNATURE_INVALID", id="badly-signed"),
        pytest.param(Fault.OVERSIZED, "PARTNER_ANSWER_INVALID", id="oversized"),
    ],
)
def test_a_failing_partner_is_a_decision_in_time_and_the_other_regions_are_unaffected(
    prepared_dir: Callable[[datetime], Path],
    codes: Callable[[str, datetime], Callable[..., str]],
    pki: Pki,
    fault: Fault,
    reason: str,
) -> None:
    data_dir = prepared_dir(NOW)
    beijing, chongqing = _sims()
    beijing.fault = fault
    broken = "BJ1:" + beijing.add("bjbroken00001")
    working = "CQJKM:" + chongqing.add("cqworking0001")
    offline = codes("110000", NOW)()  # Beijing's offline codes verify without its endpoint

    async def scenario() -> list[pb.RecogniseResponse]:
        async with online_gateway(data_dir, pki, [beijing, chongqing]) as (stub, _):
            # 2 s for the whole call: the lookup gets at most 0.95 s of it.
            return [await _ask(stub, code, timeout=2.0) for code in (broken, working, offline)]

    failed, other, offline_answer = run(scenario())
    assert (failed.recognised, failed.reason, failed.region) == (False, reason, "110000")
    assert (other.reason, offline_answer.reason) == ("RECOGNISED", "RECOGNISED")


def test_an_online_region_without_an_endpoint_and_an_open_breaker_are_partner_unavailable(
    prepared_dir: Callable[[datetime], Path], pki: Pki
) -> None:
    data_dir = prepared_dir(NOW)
    beijing, chongqing = _sims()
    beijing.fault = Fault.HTTP_500
    codes = ["BJ1:" + beijing.add(f"bjfailing{n:04d}") for n in range(4)]
    unconfigured = "CQJKM:" + chongqing.add("cqnoendpoint1")

    async def scenario() -> tuple[list[pb.RecogniseResponse], pb.RecogniseResponse]:
        async with online_gateway(data_dir, pki, [beijing, chongqing], configured=("110000",)) as (
            stub,
            gateway,
        ):
            failures = [await _ask(stub, code) for code in codes]
            assert gateway.online.client("110000").in_flight == 0
            # The per-partner metrics (docs/operations.md, "Metrics").
            sample = gateway.metrics.registry.get_sample_value
            assert sample("trustgw_partner_breaker_state", {"region": "110000"}) == 2
            assert sample("trustgw_partner_breaker_state", {"region": "500000"}) == 0
            outcome = {"region": "110000", "outcome": "PARTNER_UNAVAILABLE"}
            assert sample("trustgw_partner_calls_total", outcome) == 4
            assert sample("trustgw_partner_call_seconds_count", {"region": "110000"}) == 3
            return failures, await _ask(stub, unconfigured)

    failures, missing = run(scenario())
    assert [f.reason for f in failures] == ["PARTNER_UNAVAILABLE"] * 4
    assert "circuit" in failures[3].message  # the breaker opened after 3 failures
    assert beijing.requests == 3
    assert (missing.reason, missing.region) == ("PARTNER_UNAVAILABLE", "500000")
    assert "no endpoint" in missing.message


def test_a_malformed_token_is_refused_without_a_call(
    prepared_dir: Callable[[datetime], Path], pki: Pki
) -> None:
    data_dir = prepared_dir(NOW)
    beijing, chongqing = _sims()

    async def scenario() -> list[pb.RecogniseResponse]:
        async with online_gateway(data_dir, pki, [beijing, chongqing]) as (stub, _):
            return [
                await _ask(stub, code)
                for code in (
                    "BJ1:ON1.bjhc.short",
                    "BJ1:ON1.cqjkm.5f3a9c0e12d4b678",
                    "BJ1:ON1.bjhc.a/b/c/d/e/f/g",
                )
            ]

    assert [r.reason for r in run(scenario())] == ["MALFORMED"] * 3
    assert beijing.requests == 0


def test_a_partner_answering_within_the_deadline_after_added_latency_is_recognised(
    prepared_dir: Callable[[datetime], Path], pki: Pki
) -> None:
    data_dir = prepared_dir(NOW)
    beijing, chongqing = _sims()
    beijing.latency = 0.05
    code = "BJ1:" + beijing.add("bjslowgreen01")

    async def scenario() -> pb.RecogniseResponse:
        async with online_gateway(data_dir, pki, [beijing, chongqing]) as (stub, _):
            return await _ask(stub, code, timeout=10.0)

    assert run(scenario()).reason == "RECOGNISED"


@pytest.mark.doc('api.md "RecogniseStream"')
def test_a_stream_answers_online_codes_in_order_beside_offline_ones(
    prepared_dir: Callable[[datetime], Path],
    codes: Callable[[str, datetime], Callable[..., str]],
    pki: Pki,
) -> None:
    data_dir = prepared_dir(NOW)
    beijing, chongqing = _sims()
    beijing.latency = 0.05  # the online answers come after the offline ones were decided
    sent = [
        ("BJ1:" + beijing.add("bjstream00001"), "RECOGNISED"),
        (codes("130000", NOW)(), "RECOGNISED"),
        ("CQJKM:" + chongqing.add("cqstream00001", Colour.RED), "NOT_GREEN"),
        ("BJ1:ON1.bjhc.streamunknown1", "CODE_UNKNOWN"),
        (codes("500000", NOW)(), "RECOGNISED"),
    ]
    requests = [pb.RecogniseRequest(request_id=f"s{n}", code=c) for n, (c, _) in enumerate(sent)]

    async def scenario() -> list[pb.RecogniseResponse]:
        async with online_gateway(data_dir, pki, [beijing, chongqing]) as (stub, _):
            call = stub.RecogniseStream(iter(requests), timeout=20)
            return [response async for response in call]

    answers = run(scenario())
    assert [a.request_id for a in answers] == [f"s{n}" for n in range(len(sent))]
    assert [a.reason for a in answers] == [expected for _, expected in sent]
