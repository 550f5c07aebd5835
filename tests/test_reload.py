"""SIGHUP (docs/operations.md "Reloading on SIGHUP"): the server certificate and key (a pair,
checked before use), the client CA and the deny list of client certificates are read again and
used from the next handshake or call on, without dropping a call; a bad pair keeps what is
served; ``trustgw serve`` survives SIGHUP and re-reads its log settings.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from registry_grpc_support import error_reason
from support.aio import run
from support.clock import REAL_NOW

from adapters.regions import REGION_SPECS
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.cli import main
from gateway.grpc.server import RunningServer, build_server
from gateway.pki import TlsFiles
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway

pytestmark = pytest.mark.integration  # real servers on loopback ports

ROOT = Path(__file__).resolve().parent.parent
NOW = REAL_NOW  # a serving gateway reads the real clock
REGION = REGION_SPECS[0].code
DEADLINE = 60.0


def _pki(data_dir: Path, *argv: str) -> None:
    assert main(["pki", *argv, "--data-dir", str(data_dir)]) == 0


@pytest.fixture
def tls_dir(prepared_dir) -> Path:
    data_dir = prepared_dir(NOW)
    _pki(data_dir, "init")
    for name in ("cp-1", "cp-2"):
        _pki(data_dir, "issue", "--role", "verifier", "--name", name)
    return data_dir


def _server_tls(data_dir: Path) -> TlsFiles:
    pki = data_dir / "pki"
    return TlsFiles(pki / "server.pem", pki / "server.key", pki / "ca.pem")


def _channel(data_dir: Path, client: str, port: int, name: str | None = None) -> grpc.aio.Channel:
    pki = data_dir / "pki"
    cert, key, ca = TlsFiles(pki / f"{client}.pem", pki / f"{client}.key", pki / "ca.pem").read()
    options = [("grpc.ssl_target_name_override", name)] if name else []
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options)


async def _start(data_dir: Path) -> tuple[Gateway, RunningServer]:
    tls = _server_tls(data_dir)
    gateway = await Gateway.open(GatewayConfig(data_dir=data_dir, tls=tls))
    return gateway, await build_server(gateway, "127.0.0.1:0", tls)


async def _handshake(data_dir: Path, port: int, name: str) -> bool:
    """A new connection expecting the server to be ``name`` completes a call."""
    async with _channel(data_dir, "verifier-cp-1", port, name) as channel:
        try:
            await pb_grpc.RecognitionServiceStub(channel).Recognise(
                pb.RecogniseRequest(code="x"), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            return False
        return True


def test_a_reissued_certificate_is_served_from_the_next_handshake_and_no_call_fails(
    tls_dir: Path, codes
) -> None:
    good = codes(REGION, NOW)

    async def scenario() -> tuple[int, list[Any], bool, bool, list[str]]:
        gateway, running = await _start(tls_dir)
        port = running.port
        done = 0
        failures: list[Any] = []
        stop = asyncio.Event()
        progress = asyncio.Condition()

        async def load(fresh: bool) -> None:
            nonlocal done
            shared = _channel(tls_dir, "verifier-cp-1", port)
            try:
                while not stop.is_set():
                    channel = _channel(tls_dir, "verifier-cp-2", port) if fresh else shared
                    try:
                        reply = await pb_grpc.RecognitionServiceStub(channel).Recognise(
                            pb.RecogniseRequest(code=good()), timeout=DEADLINE
                        )
                        if not reply.recognised:
                            failures.append(reply.reason)
                    except grpc.aio.AioRpcError as exc:
                        failures.append(exc.code())
                    finally:
                        if fresh:
                            await channel.close()
                    async with progress:
                        done += 1
                        progress.notify_all()
            finally:
                await shared.close()

        async def reach(count: int) -> None:
            async with progress:
                await asyncio.wait_for(progress.wait_for(lambda: done >= count), DEADLINE)

        try:
            before = await _handshake(tls_dir, port, "gw2.internal")
            workers = [asyncio.create_task(load(fresh=n % 2 == 1)) for n in range(4)]
            await reach(40)
            _pki(tls_dir, "issue", "--role", "server", "--host", "gw2.internal", "--ip",
                 "127.0.0.1")  # fmt: skip
            failed = running.reload()
            mark = done
            await reach(mark + 40)  # new connections (the fresh loaders) after the reload
            after = await _handshake(tls_dir, port, "gw2.internal")
            stop.set()
            await asyncio.gather(*workers)
            return done, failures, before, after, failed
        finally:
            stop.set()
            await running.stop(0.5)
            await gateway.close()

    done, failures, before, after, failed = run(scenario())
    assert failed == []
    assert done >= 80 and failures == []  # not one call failed across the reload
    assert (before, after) == (False, True)  # the new certificate names gw2.internal


def test_a_key_that_is_not_the_certificates_keeps_the_served_pair(tls_dir: Path, caplog) -> None:
    async def scenario() -> tuple[list[str], bool]:
        gateway, running = await _start(tls_dir)
        try:
            pki = tls_dir / "pki"
            _pki(tls_dir, "issue", "--role", "server", "--host", "gw2.internal")
            shutil.copy(pki / "verifier-cp-2.key", pki / "server.key")  # not server.pem's key
            failed = running.reload()
            return failed, await _handshake(tls_dir, running.port, "localhost")
        finally:
            await running.stop(0.5)
            await gateway.close()

    failed, still = run(scenario())
    assert failed == ["tls"]
    assert still  # the certificate naming localhost is still served
    assert any("not a pair" in r.getMessage() for r in caplog.records)


def test_a_revoked_client_certificate_is_refused_on_every_call_after_the_reload(
    tls_dir: Path,
) -> None:
    async def scenario() -> dict[str, Any]:
        gateway, running = await _start(tls_dir)
        seen: dict[str, Any] = {}
        try:
            async with (
                _channel(tls_dir, "verifier-cp-1", running.port) as lost,
                _channel(tls_dir, "verifier-cp-2", running.port) as other,
            ):
                request = pb.RecogniseRequest(code="x")
                stub = pb_grpc.RecognitionServiceStub(lost)
                seen["before"] = (await stub.Recognise(request, timeout=10)).reason
                _pki(tls_dir, "revoke", "verifier-cp-1", "--reason", "checkpoint lost")
                seen["not yet"] = (await stub.Recognise(request, timeout=10)).reason
                assert running.reload() == []
                for name, call in (
                    ("recognise", stub.Recognise(request, timeout=10)),
                    ("health", health_pb2_grpc.HealthStub(lost).Check(
                        health_pb2.HealthCheckRequest(), timeout=10)),
                ):  # fmt: skip
                    try:
                        await call
                        seen[name] = "answered"
                    except grpc.aio.AioRpcError as exc:
                        seen[name] = error_reason(exc)
                stream = stub.RecogniseStream()
                await stream.write(request)
                await stream.done_writing()
                try:
                    seen["stream"] = [r.reason async for r in stream]
                except grpc.aio.AioRpcError as exc:
                    seen["stream"] = error_reason(exc)
                reply = await pb_grpc.RecognitionServiceStub(other).Recognise(request, timeout=10)
                seen["other"] = reply.reason
        finally:
            await running.stop(0.5)
            await gateway.close()
        return seen

    seen = run(scenario())
    refused = (grpc.StatusCode.UNAUTHENTICATED, "CERTIFICATE_DENIED")
    assert seen["before"] == seen["not yet"] == seen["other"] == "REGION_UNKNOWN"
    assert seen["recognise"] == seen["health"] == seen["stream"] == refused


def test_serve_survives_sighup_and_reads_its_settings_again(tls_dir: Path) -> None:
    """The real command: SIGHUP reloads (one warning line says what), the server keeps
    serving, a changed log level applies, and SIGTERM still drains and exits 0."""
    config = tls_dir / "gw.toml"
    config.write_text(f'data_dir = "{tls_dir}"\nlisten = "127.0.0.1:0"\n[log]\nlevel = "info"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTGW_")}
    env["PYTHONPATH"] = str(ROOT)

    async def scenario() -> tuple[int, list[str], bool]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "serve", "--config", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
        )  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        lines: list[str] = []

        async def until(text: str) -> None:
            assert process.stderr is not None
            while True:
                line = (await process.stderr.readline()).decode()
                assert line, f"stderr ended before {text!r}: {lines}"
                lines.append(line)
                if text in line:
                    return

        try:
            ready = (await asyncio.wait_for(process.stdout.readline(), DEADLINE)).decode()
            port = int(ready.split(":")[-1].split(" ")[0])
            config.write_text(config.read_text().replace('"info"', '"warning"'))
            process.send_signal(signal.SIGHUP)
            await asyncio.wait_for(until("SIGHUP: reloaded"), DEADLINE)
            serving = await _handshake(tls_dir, port, "localhost")
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), DEADLINE)
            rest = (await process.stderr.read()).decode()
            lines += rest.splitlines(keepends=True)
            return process.returncode, lines, serving
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    code, lines, serving = run(scenario())
    assert code == 0 and serving
    assert any("SIGHUP: reloaded everything" in line for line in lines), lines
    after = lines[next(i for i, line in enumerate(lines) if "SIGHUP: reloaded" in line) + 1 :]
    # at warning, the drain's info lines ("shutting down", "drained") are no longer written
    assert not [line for line in after if '"level": "info"' in line], after
