"""The access log (docs/operations.md "Access log"): one JSON line per call on the
``trustgw.access`` logger, findable by the request id the caller sent or was given, with the
method, the caller's certificate role and name, status, reason, region, latency and message
counts, and nothing a code carries.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cli_support import trustgw
from support.aio import run
from support.clock import REAL_NOW

from adapters.regions import REGION_SPECS
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.grpc.server import build_server
from gateway.observability import (
    ACCESS_LOGGER,
    AccessLog,
    CallRecord,
    JsonFormatter,
    LogHandler,
    configure_logging,
)
from gateway.pki import TlsFiles
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway

NOW = REAL_NOW  # a serving gateway reads the real clock
REGION = REGION_SPECS[0].code
RECOGNISE = "/gateway.api.v1.RecognitionService/Recognise"


class _Lines(logging.Handler):
    """The access log's lines, formatted as the server writes them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def by_id(self, request_id: str) -> list[dict[str, Any]]:
        entries = [json.loads(line) for line in self.lines]
        return [e for e in entries if e["request_id"] == request_id]


@pytest.fixture
def access_lines() -> Iterator[_Lines]:
    handler = _Lines()
    logger = logging.getLogger(ACCESS_LOGGER)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _client(capsys: pytest.CaptureFixture[str], data_dir: Path, role: str, name: str) -> TlsFiles:
    d = str(data_dir)
    ran = trustgw(capsys, "pki", "issue", "--data-dir", d, "--role", role, "--name", name)
    assert ran.status == 0, ran.err
    pki = data_dir / "pki"
    return TlsFiles(pki / f"{role}-{name}.pem", pki / f"{role}-{name}.key", pki / "ca.pem")


def _channel(port: int, client: TlsFiles) -> grpc.aio.Channel:
    cert, key, ca = client.read()
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


@pytest.mark.integration
def test_a_denied_an_invalid_a_refused_and_an_ok_call_are_found_by_request_id(
    codes, prepared_dir, capsys: pytest.CaptureFixture[str], access_lines: _Lines
) -> None:
    data_dir = prepared_dir(NOW)
    assert trustgw(capsys, "pki", "init", "--data-dir", str(data_dir)).status == 0
    verifier = _client(capsys, data_dir, "verifier", "cp-1")
    partner = _client(capsys, data_dir, "partner", REGION)
    pki = data_dir / "pki"
    server_tls = TlsFiles(pki / "server.pem", pki / "server.key", pki / "ca.pem")
    good = codes(REGION, NOW)()

    async def scenario() -> str:
        gateway = await Gateway.open(GatewayConfig(data_dir=data_dir, tls=server_tls))
        running = await build_server(gateway, "127.0.0.1:0", server_tls, access=AccessLog())
        try:
            async with _channel(running.port, verifier) as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                await stub.Recognise(
                    pb.RecogniseRequest(code=good), metadata=(("x-request-id", "ok-1"),)
                )
                await stub.Recognise(
                    pb.RecogniseRequest(code="junk"), metadata=(("x-request-id", "refused-1"),)
                )
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.Recognise(
                        pb.RecogniseRequest(request_id="x" * 200, code="x"),
                        metadata=(("x-request-id", "invalid-1"),),
                    )
                stream = stub.RecogniseStream(metadata=(("x-request-id", "stream-1"),))
                for n in range(3):
                    await stream.write(pb.RecogniseRequest(request_id=str(n), code=good))
                await stream.done_writing()
                assert len([r async for r in stream]) == 3
                call = stub.Recognise(pb.RecogniseRequest(code=good))  # no id: one is made
                await call
                generated = dict(await call.trailing_metadata())["x-request-id"]
            async with _channel(running.port, partner) as channel:
                with pytest.raises(grpc.aio.AioRpcError):
                    await pb_grpc.RecognitionServiceStub(channel).Recognise(
                        pb.RecogniseRequest(code=good), metadata=(("x-request-id", "denied-1"),)
                    )
        finally:
            await running.stop(0.5)
            await gateway.close()
        return str(generated)

    generated = run(scenario())

    def one(request_id: str) -> dict[str, Any]:
        found = access_lines.by_id(request_id)
        assert len(found) == 1, (request_id, access_lines.lines)
        entry = found[0]
        assert entry["logger"] == ACCESS_LOGGER and entry["latency_ms"] >= 0
        return entry

    ok = one("ok-1")
    assert (ok["method"], ok["status"], ok["reason"], ok["region"]) == (
        RECOGNISE, "OK", "RECOGNISED", REGION,
    )  # fmt: skip
    assert (ok["peer_role"], ok["peer_name"], ok["messages_in"], ok["messages_out"]) == (
        "verifier", "cp-1", 1, 1,
    )  # fmt: skip
    refused = one("refused-1")
    assert (refused["status"], refused["reason"]) == ("OK", "REGION_UNKNOWN")
    invalid = one("invalid-1")
    assert (invalid["status"], invalid["reason"]) == ("INVALID_ARGUMENT", "INVALID_REQUEST")
    assert invalid["messages_out"] == 0
    denied = one("denied-1")
    assert (denied["status"], denied["reason"]) == ("PERMISSION_DENIED", "PERMISSION_DENIED")
    assert (denied["peer_role"], denied["peer_name"]) == ("partner", REGION)
    stream = one("stream-1")
    assert stream["method"].endswith("/RecogniseStream") and stream["status"] == "OK"
    assert (stream["messages_in"], stream["messages_out"]) == (3, 3)
    assert one(generated)["status"] == "OK"
    everything = "\n".join(access_lines.lines)
    assert good not in everything and good[:24] not in everything  # nothing a code carries


@pytest.mark.integration
def test_the_access_log_switched_off_writes_nothing(
    codes, prepared_dir, access_lines: _Lines
) -> None:
    data_dir = prepared_dir(NOW)

    async def scenario() -> None:
        gateway = await Gateway.open(GatewayConfig(data_dir=data_dir))
        access = AccessLog(enabled=False)
        running = await build_server(gateway, "127.0.0.1:0", access=access)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                await stub.Recognise(pb.RecogniseRequest(code="junk"))
                access.enabled = True  # as a SIGHUP with log.access = true does
                await stub.Recognise(
                    pb.RecogniseRequest(code="junk"), metadata=(("x-request-id", "on-1"),)
                )
        finally:
            await running.stop(0.5)
            await gateway.close()

    run(scenario())
    assert len(access_lines.lines) == 1
    entry = json.loads(access_lines.lines[0])
    assert entry["request_id"] == "on-1" and entry["peer_role"] == ""


@pytest.mark.integration
def test_grpc_cores_own_lines_stay_out_of_the_json_log(own_data_dir: Path) -> None:
    """A failed TLS handshake (a plaintext client on the TLS port) makes gRPC core write
    ``… ssl_transport_security.cc … Handshake failed`` (at INFO; at its default, ERROR, only
    its errors); ``trustgw`` sets ``GRPC_VERBOSITY=NONE`` before grpc loads unless the operator
    set it, so every line on stderr is JSON."""
    import asyncio
    import os
    import signal
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUSTGW_", "GRPC_"))}
    env["PYTHONPATH"] = str(root)
    env["GRPC_TRACE"] = ""
    argv = [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(own_data_dir),
            "--listen", "127.0.0.1:0", "--log-level", "debug"]  # fmt: skip

    async def scenario() -> tuple[int | None, bytes]:
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None and process.stderr is not None
        try:
            ready = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
            port = int(ready.split(":")[-1].split(" ")[0])
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError):
                    await pb_grpc.RecognitionServiceStub(channel).Recognise(
                        pb.RecogniseRequest(code="x"), timeout=5
                    )
            process.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(process.communicate(), 60)
            return process.returncode, err
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    code, err = run(scenario())
    probe = "import gateway.cli, os, grpc; print(os.environ['GRPC_VERBOSITY'])"
    import subprocess

    seen = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert seen.stdout.strip() == "NONE", seen.stderr
    assert code == 0
    lines = err.decode().splitlines()
    assert lines
    for line in lines:
        json.loads(line)  # no "E1203 … Handshake failed" between them
    assert not [line for line in lines if '"logger": "aiosqlite"' in line]  # libraries: off


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def gateway_handler() -> Iterator[LogHandler]:
    """The root logger's handler as ``trustgw serve`` configures it, writing to a buffer."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    handler = LogHandler("json")
    handler.setStream(io.StringIO())
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def _written(handler: LogHandler) -> list[str]:
    stream = handler.stream
    assert isinstance(stream, io.StringIO)
    return stream.getvalue().splitlines()


def _call(peer: str, request_id: str, reason: str, region: str) -> CallRecord:
    call = CallRecord(RECOGNISE, request_id, stream=False)
    call.peer, call.reason, call.region, call.sent = peer, reason, region, 1
    return call


@pytest.mark.parametrize(
    "peer",
    [
        pytest.param("verifier/cp-1", id="verifier"),
        pytest.param("", id="plaintext"),
        pytest.param("?", id="unknown-role"),
        pytest.param('verifier/a"b\\c\x01é', id="name-to-escape"),
    ],
)
@pytest.mark.parametrize("request_id", ["cp-1-000042", 'x"y\n'])
@pytest.mark.parametrize("seconds", [0.0, 1e-9, 0.0123456, 0.0005, 12345.678912])
@pytest.mark.parametrize(
    ("status", "reason", "region"),
    [
        pytest.param("OK", "RECOGNISED", REGION, id="decision"),
        pytest.param("OK", "", "", id="ok"),
        pytest.param("PERMISSION_DENIED", "", "", id="failed"),
    ],
)
def test_the_json_line_made_without_a_record_is_the_formatters_line(
    peer: str, request_id: str, seconds: float, status: str, reason: str, region: str
) -> None:
    logger = logging.getLogger(ACCESS_LOGGER)
    records = _Records()
    logger.addHandler(records)  # another handler: the record is made and handled as ever
    level = logger.level
    logger.setLevel(logging.INFO)
    access = AccessLog()
    call = _call(peer, request_id, reason, region)
    address = 'ipv4:10.0.0.7:53122"'
    try:
        access.write(call, status, seconds, address)
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    (record,) = records.records
    formatter = JsonFormatter()
    expected = formatter.format(record)
    assert access.json_line(call, status, seconds, address, record.created, formatter) == expected
    assert access.json_line(call, status, seconds, address, record.created, formatter) == expected


def test_access_lines_wait_on_the_event_loop_and_go_out_first_in_order(
    gateway_handler: LogHandler,
) -> None:
    """Batched: nothing is written until the scheduled flush, another line, a full batch or
    ``flush()`` (as at exit and on reload); the lines keep the order they were made in."""
    access = AccessLog()
    ok = _call("verifier/cp-1", "", "RECOGNISED", REGION)

    def ids() -> list[str]:
        return [json.loads(line)["request_id"] for line in _written(gateway_handler)]

    async def scenario() -> None:
        gateway_handler.flush_seconds = 0  # the next round of the loop
        for request_id in ("a-1", "a-2"):
            ok.request_id = request_id
            access.write(ok, "OK", 0.001, "ipv4:127.0.0.1:1")
        assert ids() == []
        logging.getLogger("trustgw.server").warning("another line")
        assert ids() == ["a-1", "a-2", "-"]
        ok.request_id = "a-3"
        access.write(ok, "OK", 0.001, "ipv4:127.0.0.1:1")
        assert ids() == ["a-1", "a-2", "-"]
        for _ in range(3):  # the scheduled flush runs within a round or two of the loop
            await asyncio.sleep(0)
        assert ids() == ["a-1", "a-2", "-", "a-3"]
        gateway_handler.max_lines = 2
        for request_id in ("b-1", "b-2"):
            ok.request_id = request_id
            access.write(ok, "OK", 0.001, "ipv4:127.0.0.1:1")
        assert ids()[-2:] == ["b-1", "b-2"]  # a full batch goes out at once
        ok.request_id = "c-1"
        access.write(ok, "OK", 0.001, "ipv4:127.0.0.1:1")
        assert "c-1" not in ids()
        gateway_handler.flush()  # logging.shutdown() does this at exit
        assert ids()[-1] == "c-1"

    run(scenario())


def test_reconfiguring_logging_writes_out_the_old_handlers_access_lines(
    gateway_handler: LogHandler,
) -> None:
    async def scenario() -> None:
        AccessLog().write(_call("verifier/cp-1", "before-reload", "", ""), "OK", 0.001, "a")
        assert _written(gateway_handler) == []
        configure_logging("info", "json")  # as SIGHUP does

    run(scenario())
    (line,) = _written(gateway_handler)
    assert json.loads(line)["request_id"] == "before-reload"


def test_the_text_format_writes_the_access_line_through_its_formatter(
    gateway_handler: LogHandler,
) -> None:
    root = logging.getLogger()
    text = LogHandler("text")
    text.setStream(io.StringIO())
    root.handlers[:] = [text]
    AccessLog().write(_call("verifier/cp-1", "t-1", "RECOGNISED", REGION), "OK", 0.0015, "a")
    (line,) = _written(text)
    message = f"{RECOGNISE} OK RECOGNISED 1.500ms in=0 out=1 peer=verifier/cp-1"
    assert line.endswith(f" INFO trustgw.access [t-1] {message}")


def test_an_access_line_off_the_event_loop_is_written_at_once(
    gateway_handler: LogHandler,
) -> None:
    AccessLog().write(_call("verifier/cp-1", "off-loop", "RECOGNISED", REGION), "OK", 0.001, "a")
    (line,) = _written(gateway_handler)
    entry = json.loads(line)
    assert (entry["request_id"], entry["logger"], entry["region"]) == (
        "off-loop",
        ACCESS_LOGGER,
        REGION,
    )
