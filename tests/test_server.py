"""The gRPC surface, against a real server on a free loopback port."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from support.aio import run, serving
from support.clock import REAL_NOW
from support.wait import eventually

from adapters.base import Colour
from adapters.regions import REGION_SPECS
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from keys.model import Mode
from keys.registry import KeyRegistry
from keys.store import SQLiteStore

pytestmark = pytest.mark.integration  # a real server (tests/support/tiers.py)

NOW = REAL_NOW  # a serving gateway reads the real clock
SHOW = next(s.code for s in REGION_SPECS if s.mode is Mode.SHOW)
CONVERT = next(s.code for s in REGION_SPECS if s.mode is Mode.CONVERT)


@pytest.mark.doc('api.md "Recognise"')
def test_unary_recognises_show_and_convert_codes(codes, prepared_dir) -> None:
    data_dir = prepared_dir(NOW)

    async def scenario() -> tuple[pb.RecogniseResponse, pb.RecogniseResponse]:
        async with serving(data_dir) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                show = await stub.Recognise(
                    pb.RecogniseRequest(request_id="a", code=codes(SHOW, NOW)()), timeout=5
                )
                convert = await stub.Recognise(
                    pb.RecogniseRequest(request_id="b", code=codes(CONVERT, NOW)()), timeout=5
                )
                return show, convert

    show, convert = run(scenario())
    assert (show.request_id, show.recognised, show.reason, show.mode) == (
        "a",
        True,
        "RECOGNISED",
        pb.MODE_SHOW,
    )
    assert show.HasField("attestation") and not show.HasField("converted")
    assert show.colour == pb.COLOUR_GREEN and show.region == SHOW
    assert (convert.recognised, convert.mode) == (True, pb.MODE_CONVERT)
    assert convert.converted.code.startswith("SD1:")
    assert convert.converted.expires_at <= int((NOW + timedelta(hours=23)).timestamp())


@pytest.mark.doc('api.md "RecogniseStream"')
def test_stream_answers_every_request_in_order(codes, prepared_dir) -> None:
    data_dir = prepared_dir(NOW)
    requests = []
    expected = []
    for n, spec in enumerate(REGION_SPECS * 3):
        colour = [Colour.GREEN, Colour.YELLOW, Colour.RED][n % 3]
        requests.append(pb.RecogniseRequest(request_id=f"r{n}", code=codes(spec.code, NOW)(colour)))
        expected.append("RECOGNISED" if colour is Colour.GREEN else "NOT_GREEN")
    requests.append(pb.RecogniseRequest(request_id="junk", code="not a code at all"))
    expected.append("REGION_UNKNOWN")
    requests.append(pb.RecogniseRequest(request_id="x" * 200, code="x"))
    expected.append("INVALID_REQUEST")

    async def scenario() -> list[pb.RecogniseResponse]:
        async with serving(data_dir) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                call = stub.RecogniseStream(iter(requests), timeout=20)
                return [response async for response in call]

    responses = run(scenario())
    assert [r.reason for r in responses] == expected
    assert [r.request_id for r in responses[:-1]] == [r.request_id for r in requests[:-1]]


@pytest.mark.doc('api.md "Recognise"', 'api.md "Decisions"')
@pytest.mark.parametrize(
    "code",
    [
        pytest.param("", id="empty"),
        pytest.param("\x00" * 100, id="nul-bytes"),
        pytest.param("HC1:" + "%" * 300, id="foreign-hc1-junk"),
        pytest.param("A" * 4097, id="over-4096"),
        pytest.param("{" * 3000, id="deep-json"),
    ]
    + [pytest.param(spec.prefix + "!!!!", id=f"{spec.code}-prefix-junk") for spec in REGION_SPECS],
)
def test_bad_codes_get_a_reason_never_an_rpc_error(code, prepared_dir) -> None:
    data_dir = prepared_dir(NOW)

    async def scenario() -> pb.RecogniseResponse:
        async with serving(data_dir) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                return await stub.Recognise(pb.RecogniseRequest(code=code), timeout=5)

    response = run(scenario())
    assert not response.recognised
    assert response.reason in {"MALFORMED", "OVERSIZED", "REGION_UNKNOWN", "KEY_UNKNOWN"}
    assert response.message


def _rpc_error(data_dir, request: pb.RecogniseRequest) -> grpc.aio.AioRpcError:
    async def scenario() -> grpc.aio.AioRpcError:
        async with serving(data_dir) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Recognise(request, timeout=5)
                return info.value

    return run(scenario())


@pytest.mark.doc('api.md "Messages"', 'api.md "RPC errors"')
def test_invalid_request_carries_error_info(prepared_dir) -> None:
    error = _rpc_error(prepared_dir(NOW), pb.RecogniseRequest(request_id="x" * 129, code="x"))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("INVALID_REQUEST", "trustgw.gateway")


def test_oversized_message_is_refused_not_internal(prepared_dir) -> None:
    # Above the server's receive limit (2 MiB and a few bytes, for partner revocation batches).
    error = _rpc_error(prepared_dir(NOW), pb.RecogniseRequest(code="A" * (5 * 1024 * 1024)))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.doc("partners.md §1.1")
def test_a_long_code_below_the_message_limit_is_a_decision(prepared_dir) -> None:
    # Over 4096 characters, under Recognise's message limit (32 KiB): docs/api.md, Limits.
    data_dir = prepared_dir(NOW)

    async def scenario() -> pb.RecogniseResponse:
        async with serving(data_dir) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                return await stub.Recognise(pb.RecogniseRequest(code="A" * 30_000), timeout=5)

    response = run(scenario())
    assert (response.recognised, response.reason) == (False, "OVERSIZED")


@pytest.mark.doc('api.md "The gRPC API"', 'api.md "GetGatewayKeys"', 'api.md "Health"')
def test_health_reflection_and_gateway_keys(prepared_dir) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    data_dir = prepared_dir(NOW)

    async def scenario() -> tuple[int, list[str], pb.GatewayKeys]:
        async with serving(data_dir) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="gateway.api.v1.RecognitionService")
                )
                stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])
                )
                names = [
                    s.name async for answer in stream for s in answer.list_services_response.service
                ]
                keys = await pb_grpc.RecognitionServiceStub(channel).GetGatewayKeys(
                    pb.GetGatewayKeysRequest()
                )
                return health.status, names, keys

    status, names, keys = run(scenario())
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert "gateway.api.v1.RecognitionService" in names
    assert "grpc.health.v1.Health" in names
    assert {k.role for k in keys.keys} == {"attest", "issue", "place", "trustlist"}
    assert keys.region == "370000"


def test_a_revocation_made_elsewhere_applies_without_restart(
    codes, prepared_dir, simulator
) -> None:
    data_dir = prepared_dir(NOW)
    region = SHOW
    kid = simulator.issuer(region).kid

    async def scenario() -> tuple[str, str]:
        async with serving(data_dir) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                before = await stub.Recognise(pb.RecogniseRequest(code=codes(region, NOW)()))
                # Another process (the operator's CLI) writes to the same database.
                store = await SQLiteStore.open(data_dir / "trustgw.db")
                try:
                    await KeyRegistry(store).revoke_key(region, kid, NOW - timedelta(days=1))
                finally:
                    await store.close()

                # The next refresh (every 0.1 s here; docs: within 0.5 s) applies it.
                async def refused() -> pb.RecogniseResponse | None:
                    after = await stub.Recognise(pb.RecogniseRequest(code=codes(region, NOW)()))
                    return after if after.reason != "RECOGNISED" else None

                after = await eventually(refused, what="the revocation applies")
                return before.reason, after.reason

    assert run(scenario()) == ("RECOGNISED", "KEY_REVOKED")
