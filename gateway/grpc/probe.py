"""The probe listener (``probe_listen``, off by default): plaintext, no client certificate, for
an orchestrator. One port serves two protocols, told apart by the first bytes a client sends:

* gRPC (the HTTP/2 preface ``PRI * HTTP/2.0``): only ``grpc.health.v1.Health``, the same
  status as on the gateway's own port (Kubernetes ``grpc`` probes, ``grpc_health_probe``);
* HTTP/1.x: ``GET /healthz`` (200 while the process answers) and ``GET /readyz`` (200 when the
  store answers, the registry is loaded and the signing keys are usable now; 503 otherwise and
  from the first moment of a shutdown), with the checks by name. Anything else is 404.

It reveals no more than "alive", "ready" and which of three checks fails: no version, key,
address, region or message text (docs/operations.md, "Probes").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from gateway.listen import host_port, listen_error
from gateway.runtime.gateway import Gateway
from keys.errors import GatewayError
from keys.keystore import KeyRole
from keys.timeutil import utcnow

log = logging.getLogger("trustgw.server")

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_CONNECTIONS = 64  # probe connections open at once; more are closed at once
MAX_HEAD_BYTES = 8 * 1024  # an HTTP request's line and headers
READ_SECONDS = 5.0  # a probe that sends nothing for this long is closed
PING_SECONDS = 2.0  # the store's answer to /readyz


async def readiness(gateway: Gateway, shutting_down: bool) -> dict[str, str]:
    """The checks of ``/readyz``, each ``"ok"`` or a word saying what is wrong, read now."""
    checks = {"serving": "shutting-down" if shutting_down else "ok"}
    try:
        async with asyncio.timeout(PING_SECONDS):
            await gateway.store.ping()
        checks["store"] = "ok"
    except (GatewayError, TimeoutError, OSError):
        checks["store"] = "unreachable"
    checks["registry"] = "ok" if gateway.registry.snapshot.version > 0 else "not-loaded"
    now = utcnow()
    try:
        for role in (KeyRole.ATTEST, KeyRole.ISSUE):
            gateway.signer(role, now)
        checks["keys"] = "ok"
    except GatewayError:
        checks["keys"] = "no-valid-signing-key"
    return checks


class ProbeListener:
    """The probe port: :meth:`start` binds it, :meth:`stop` closes it."""

    def __init__(
        self,
        gateway: Gateway,
        servicer: health.aio.HealthServicer,
        shutting_down: Callable[[], bool],
    ) -> None:
        self._gateway = gateway
        self._shutting_down = shutting_down
        self._grpc = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(servicer, self._grpc)
        self._grpc_port = 0
        self._server: asyncio.Server | None = None
        self._open = 0
        self.port = 0

    async def start(self, listen: str) -> int:
        """Listen on ``listen`` (``host:0``: a free port); returns the bound port.

        Raises :class:`keys.errors.ListenError` when the address cannot be opened."""
        # The health service proper, on a loopback port of its own that the probe port feeds.
        self._grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        await self._grpc.start()
        host, port = host_port(listen)
        try:
            self._server = await asyncio.start_server(self._serve, host, port)
        except OSError as exc:
            await self._grpc.stop(None)
            raise listen_error("probe", listen, exc.errno) from None
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Close the port (open probe connections end with it)."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await self._server.wait_closed()
        await self._grpc.stop(0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        try:
            async with asyncio.timeout(READ_SECONDS):
                first = await reader.read(len(_H2_PREFACE))
                while first and len(first) < 4:
                    more = await reader.read(len(_H2_PREFACE) - len(first))
                    if not more:
                        break
                    first += more
            if first.startswith(b"PRI "):
                await self._relay(first, reader, writer)
            elif first:
                await self._http(first, reader, writer)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _relay(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Pass a gRPC connection through to the health server, both ways, until either ends."""
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._grpc_port)
        up_writer.write(first)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.write_eof()

        try:
            tasks = [
                asyncio.ensure_future(pipe(reader, up_writer)),
                asyncio.ensure_future(pipe(up_reader, writer)),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
        finally:
            up_writer.close()

    async def _http(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = first
        async with asyncio.timeout(READ_SECONDS):
            while b"\r\n\r\n" not in head and b"\n\n" not in head:
                if len(head) > MAX_HEAD_BYTES:
                    await _reply(writer, 431, {"error": "request header too large"})
                    return
                chunk = await reader.read(1024)
                if not chunk:
                    return
                head += chunk
        line = head.split(b"\n", 1)[0].decode("latin-1").strip().split(" ")
        method, path = (line[0], line[1].split("?", 1)[0]) if len(line) >= 2 else ("", "")
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            await _reply(writer, 405, {"error": "only GET and HEAD"})
        elif path == "/healthz":
            await _reply(writer, 200, {"status": "alive"}, head_only)
        elif path == "/readyz":
            checks = await readiness(self._gateway, self._shutting_down())
            ready = all(value == "ok" for value in checks.values())
            body = {"ready": ready, "checks": checks}
            await _reply(writer, 200 if ready else 503, body, head_only)
        else:
            await _reply(writer, 404, {"error": "only /healthz and /readyz"}, head_only)


_STATUS_TEXT = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 431: "Too Large"}


async def _reply(
    writer: asyncio.StreamWriter, status: int, body: dict[str, Any], head_only: bool = False
) -> None:
    data = (json.dumps(body, sort_keys=True) + "\n").encode()
    text = _STATUS_TEXT.get(status, "Service Unavailable")
    writer.write(
        f"HTTP/1.1 {status} {text}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nCache-Control: no-store\r\n"
        "Connection: close\r\n\r\n".encode()
        + (b"" if head_only else data)
    )
    await writer.drain()
