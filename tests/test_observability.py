"""Request ids, metrics and health, as operators and callers see them."""

from __future__ import annotations

import json
import logging
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.aio import run
from support.clock import REAL_NOW
from support.wait import eventually

from adapters.regions import REGION_SPECS
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.grpc.server import build_server
from gateway.observability import REQUEST_ID, JsonFormatter
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway

NOW = REAL_NOW  # a serving gateway reads the real clock
REGION = REGION_SPECS[0].code


@pytest.mark.integration
@pytest.mark.doc('api.md "Metadata"')
def test_request_id_is_returned_and_metrics_are_scraped(codes, prepared_dir) -> None:
    data_dir = prepared_dir(NOW)

    async def scenario() -> tuple[str, str, str]:
        gateway = await Gateway.open(GatewayConfig(data_dir=data_dir))
        running = await build_server(gateway, "127.0.0.1:0", metrics_listen="127.0.0.1:0")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                call = stub.Recognise(
                    pb.RecogniseRequest(code=codes(REGION, NOW)()),
                    metadata=(("x-request-id", "req-42"),),
                )
                await call
                given = dict(await call.trailing_metadata())["x-request-id"]
                call = stub.Recognise(pb.RecogniseRequest(code="junk"))
                await call
                generated = dict(await call.trailing_metadata())["x-request-id"]
                call = stub.Recognise(
                    pb.RecogniseRequest(request_id="x" * 200, code="x"),
                    metadata=(("x-request-id", "req-err"),),
                )
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call
                assert dict(info.value.trailing_metadata())["x-request-id"] == "req-err"
            url = f"http://127.0.0.1:{running.metrics_port}/metrics"
            import asyncio

            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
            return given, generated, body.decode()
        finally:
            await running.stop(0.5)
            await gateway.close()

    given, generated, metrics = run(scenario())
    assert given == "req-42"
    assert len(generated) == 16 and generated != given
    assert (
        f'trustgw_recognitions_total{{decision="recognised",mode="show",reason="RECOGNISED",'
        f'region="{REGION}"}} 1.0' in metrics
    )
    assert 'reason="REGION_UNKNOWN"' in metrics
    unary = 'grpc_method="Recognise",grpc_service="gateway.api.v1.RecognitionService"'
    assert f'grpc_server_handling_seconds_count{{{unary},grpc_type="unary"}} 3.0' in metrics
    assert (
        f'grpc_server_handled_total{{grpc_code="INVALID_ARGUMENT",{unary},grpc_type="unary"}} 1.0'
        in metrics
    )
    assert "trustgw_key_expiry_timestamp_seconds{kid=" in metrics
    assert "trustgw_registry_version" in metrics


@pytest.mark.integration
@pytest.mark.doc('api.md "Health"')
def test_health_turns_not_serving_when_the_store_is_unreachable(prepared_dir) -> None:
    data_dir = prepared_dir(NOW)

    async def scenario() -> tuple[int, int]:
        gateway = await Gateway.open(GatewayConfig(data_dir=data_dir, refresh_interval=0.1))
        running = await build_server(gateway, "127.0.0.1:0")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                before = (await stub.Check(health_pb2.HealthCheckRequest())).status
                await gateway.store.close()  # the database goes away

                async def not_serving() -> bool:  # once the next refresh finds it gone
                    reply = await stub.Check(health_pb2.HealthCheckRequest())
                    return bool(reply.status == health_pb2.HealthCheckResponse.NOT_SERVING)

                await eventually(not_serving, what="health turns NOT_SERVING")
                after = (await stub.Check(health_pb2.HealthCheckRequest())).status
                return before, after
        finally:
            await running.stop(0.5)
            await gateway.close()

    before, after = run(scenario())
    assert before == health_pb2.HealthCheckResponse.SERVING
    assert after == health_pb2.HealthCheckResponse.NOT_SERVING


def test_json_log_lines_carry_the_request_id() -> None:
    token = REQUEST_ID.set("abc123")
    try:
        record = logging.LogRecord("trustgw.x", logging.INFO, __file__, 1, "hello %s", ("w",), None)
        line = json.loads(JsonFormatter().format(record))
    finally:
        REQUEST_ID.reset(token)
    assert line["request_id"] == "abc123"
    assert line["msg"] == "hello w" and line["level"] == "info" and line["logger"] == "trustgw.x"


@pytest.mark.parametrize(
    "created",
    [
        1_796_000_000.0,  # a whole second
        1_796_000_000.0004,  # rounds down to .000
        1_796_000_000.1235,  # .123 (truncated to milliseconds, as isoformat does)
        1_796_000_000.9999996,  # rounds into the next second
        1_796_000_001.5,  # the next second: its stamp is made afresh
        1_796_000_000.25,  # an earlier second again after a later one
    ],
)
def test_json_log_time_is_the_local_time_in_milliseconds(created: float) -> None:
    """The log line's ``ts`` is the record's local time to the millisecond, however the
    formatter caches the date and offset of a second (one formatter serves every line)."""
    from datetime import datetime

    formatter = JsonFormatter()
    for at in (created - 1, created, created):  # cached from another second, then this one
        record = logging.LogRecord("trustgw.x", logging.INFO, __file__, 1, "t", None, None)
        record.created = at
        expected = datetime.fromtimestamp(at).astimezone().isoformat(timespec="milliseconds")
        assert json.loads(formatter.format(record))["ts"] == expected
