"""The probe port (docs/operations.md "Probes"): plaintext, no client certificate, only
``grpc.health.v1`` and HTTP ``/healthz`` / ``/readyz``, telling the truth about the gateway's
state; and the metrics port answering ``/metrics`` only.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from cli_support import trustgw
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.aio import run
from support.clock import REAL_NOW
from support.wait import eventually

from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.grpc.server import RunningServer, build_server
from gateway.pki import TlsFiles
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway

pytestmark = pytest.mark.integration  # real servers on loopback ports

NOW = REAL_NOW  # a serving gateway reads the real clock
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    """One HTTP/1.1 request to 127.0.0.1:port: (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split(" ", 2)[1]), body


async def health_status(port: int, service: str = "") -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
        return int(reply.status)


@pytest.fixture
def tls_dir(prepared_dir, capsys: pytest.CaptureFixture[str]) -> tuple[Path, TlsFiles]:
    data_dir = prepared_dir(NOW)
    assert trustgw(capsys, "pki", "init", "--data-dir", str(data_dir)).status == 0
    pki = data_dir / "pki"
    return data_dir, TlsFiles(pki / "server.pem", pki / "server.key", pki / "ca.pem")


async def _start(data_dir: Path, tls: TlsFiles | None) -> tuple[Gateway, RunningServer]:
    gateway = await Gateway.open(GatewayConfig(data_dir=data_dir, refresh_interval=0.1, tls=tls))
    running = await build_server(
        gateway, "127.0.0.1:0", tls, metrics_listen="127.0.0.1:0", probe_listen="127.0.0.1:0"
    )
    return gateway, running


def test_an_orchestrator_without_a_certificate_gets_health_and_nothing_else(tls_dir) -> None:
    data_dir, tls = tls_dir

    async def scenario() -> dict[str, object]:
        gateway, running = await _start(data_dir, tls)
        probe = running.probe_port
        assert probe is not None and probe != running.port
        try:
            seen: dict[str, object] = {
                "health": await health_status(probe),
                "service": await health_status(probe, "gateway.api.v1.RecognitionService"),
                "healthz": await http_get(probe, "/healthz"),
                "readyz": await http_get(probe, "/readyz"),
                "head": await http_get(probe, "/readyz", "HEAD"),
                "other": await http_get(probe, "/metrics"),
                "post": await http_get(probe, "/readyz", "POST"),
            }
            async with grpc.aio.insecure_channel(f"127.0.0.1:{probe}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await pb_grpc.RecognitionServiceStub(channel).Recognise(
                        pb.RecogniseRequest(code="x"), timeout=10
                    )
                seen["recognise"] = info.value.code()
            # the gateway's own port still wants a client certificate
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=10
                    )
                seen["main"] = info.value.code()
            assert running.metrics_port is not None
            seen["metrics_healthz"] = await http_get(running.metrics_port, "/healthz")
            seen["metrics"] = await http_get(running.metrics_port, "/metrics")
            return seen
        finally:
            await running.stop(0.5)
            await gateway.close()

    seen = run(scenario())
    assert seen["health"] == SERVING and seen["service"] == SERVING
    assert seen["healthz"] == (200, '{"status": "alive"}\n')
    status, body = seen["readyz"]  # type: ignore[misc]
    assert status == 200
    assert json.loads(body) == {
        "ready": True,
        "checks": {"keys": "ok", "registry": "ok", "serving": "ok", "store": "ok"},
    }
    assert seen["head"] == (200, "")
    assert seen["other"][0] == 404 and seen["post"][0] == 405  # type: ignore[index]
    assert seen["recognise"] == grpc.StatusCode.UNIMPLEMENTED
    assert seen["main"] == grpc.StatusCode.UNAVAILABLE  # no TLS handshake without a certificate
    assert seen["metrics_healthz"][0] == 404  # type: ignore[index]
    assert seen["metrics"][0] == 200 and "trustgw_" in seen["metrics"][1]  # type: ignore[index]


def test_readyz_and_health_turn_when_the_store_goes_away(prepared_dir) -> None:
    data_dir = prepared_dir(NOW)

    async def scenario() -> tuple[int, str, int, int]:
        gateway, running = await _start(data_dir, None)
        probe = running.probe_port
        assert probe is not None
        try:
            await gateway.store.close()  # the database goes away
            status, body = await http_get(probe, "/readyz")  # read now, not at the next refresh

            async def not_serving() -> bool:
                return await health_status(probe) == NOT_SERVING

            await eventually(not_serving, what="probe health turns NOT_SERVING")
            alive, _ = await http_get(probe, "/healthz")
            return status, body, alive, await health_status(probe)
        finally:
            await running.stop(0.5)
            await gateway.close()

    status, body, alive, health = run(scenario())
    assert status == 503
    assert json.loads(body)["checks"]["store"] == "unreachable"
    assert json.loads(body)["ready"] is False
    assert alive == 200  # the process is alive: restarting it would not bring the store back
    assert health == NOT_SERVING


def test_readyz_says_no_from_the_first_moment_of_a_shutdown(prepared_dir) -> None:
    data_dir = prepared_dir(NOW)

    async def scenario() -> tuple[int, str, int]:
        gateway, running = await _start(data_dir, None)
        probe = running.probe_port
        assert probe is not None
        try:
            await running.health.enter_graceful_shutdown()  # what stop() does first
            status, body = await http_get(probe, "/readyz")
            return status, body, await health_status(probe)
        finally:
            await running.stop(0.5)
            await gateway.close()

    status, body, health = run(scenario())
    assert status == 503 and json.loads(body)["checks"]["serving"] == "shutting-down"
    assert health == NOT_SERVING


def test_a_probe_that_sends_junk_or_too_much_is_closed_and_the_port_keeps_answering(
    prepared_dir,
) -> None:
    data_dir = prepared_dir(NOW)

    async def scenario() -> tuple[bytes, int]:
        gateway, running = await _start(data_dir, None)
        probe = running.probe_port
        assert probe is not None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", probe)
            writer.write(b"GET /" + b"x" * 20_000)  # no end of headers, ever
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return answer.split(b"\r\n", 1)[0], (await http_get(probe, "/healthz"))[0]
        finally:
            await running.stop(0.5)
            await gateway.close()

    first_line, after = run(scenario())
    assert first_line == b"HTTP/1.1 431 Too Large"
    assert after == 200
