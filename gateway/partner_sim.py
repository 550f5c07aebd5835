"""A partner region's online verification endpoint, simulated: real HTTPS with mutual TLS, real
HTTP/1.1, and fault injection (docs/partners.md §9; the demo and the tests run it).

Written on asyncio streams rather than with the gateway's HTTP client library, so the client is
never tested against itself, and so each fault is exactly what a broken partner does on the wire:
added latency, HTTP errors, a connection reset, a server that accepts and never answers, an
oversized or malformed answer, a badly signed one, a wrong nonce, a stale ``checked_at``, a
revoked signing key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from adapters.base import Colour
from adapters.online import MAX_REQUEST_BYTES, STATUS_PATH, StatusQuestion, answer_body
from keys.crypto import PrivateKey
from keys.errors import MalformedError
from keys.statusdoc import UNKNOWN, VALID, StatusClaims, sign_status
from keys.timeutil import utcnow

log = logging.getLogger("trustgw.partner_sim")


class Fault(StrEnum):
    """What the simulated endpoint does wrong (``NONE``: answers correctly)."""

    NONE = "none"
    HTTP_500 = "http-500"
    HTTP_503 = "http-503"
    HTTP_404 = "http-404"
    RESET = "reset"  # closes the connection without an answer
    HANG = "hang"  # accepts and reads, never answers
    OVERSIZED = "oversized"  # an answer over 16 KiB, its Content-Length says so
    OVERSIZED_STREAM = "oversized-stream"  # over 16 KiB in chunks, no Content-Length
    MALFORMED = "malformed"  # not JSON
    BAD_SIGNATURE = "bad-signature"  # signed with a key the region never registered
    WRONG_NONCE = "wrong-nonce"
    STALE = "stale"  # checked_at an hour before the question
    OTHER_KEY = "other-key"  # signed with the second key (e.g. one the gateway has revoked)


@dataclass
class SimCode:
    """A code the simulated region knows."""

    status: str  # keys.statusdoc: valid, revoked or expired
    colour: Colour
    holder_ref: str
    valid_from: datetime
    valid_until: datetime


@dataclass
class PartnerSim:
    """The state of one simulated region's endpoint; change it while the server runs."""

    region: str
    issuer: str
    key: PrivateKey
    kid: str
    other_key: PrivateKey
    other_kid: str
    codes: dict[str, SimCode] = field(default_factory=dict)
    fault: Fault = Fault.NONE
    latency: float = 0.0  # seconds added before every answer
    max_age: int = 60
    clock: Callable[[], datetime] = utcnow
    # Fail only the first N requests (then answer correctly); None: every request.
    fault_count: int | None = None
    # The status of every code not in ``codes`` (None: unknown): a benchmark's endless codes.
    any_code: SimCode | None = None
    requests: int = 0

    def add(self, code_id: str, colour: Colour = Colour.GREEN, *, days: float = 1.0,
            status: str = VALID, holder_ref: str | None = None) -> str:  # fmt: skip
        """Know ``code_id``; returns its token text."""
        now = self.clock()
        self.codes[code_id] = SimCode(
            status, colour, holder_ref or f"ref-{code_id[:12]}", now - timedelta(hours=1),
            now + timedelta(days=days),
        )  # fmt: skip
        return f"ON1.{self.issuer}.{code_id}"

    def _fault_now(self) -> Fault:
        if self.fault_count is not None and self.requests > self.fault_count:
            return Fault.NONE
        return self.fault

    def document(self, question: StatusQuestion, fault: Fault) -> str:
        """The signed status document answering ``question`` (with the fault, if any)."""
        checked_at = self.clock()
        if fault is Fault.STALE:
            checked_at = question.asked_at - timedelta(hours=1)
        nonce = "A" * 22 if fault is Fault.WRONG_NONCE else question.nonce
        code = self.codes.get(question.code_id, self.any_code)
        if code is None or question.region != self.region or question.issuer != self.issuer:
            doc = StatusClaims(question.region, question.issuer, question.code_id, nonce,
                               UNKNOWN, checked_at, self.max_age)  # fmt: skip
        else:
            doc = StatusClaims(
                question.region, question.issuer, question.code_id, nonce, code.status,
                checked_at, self.max_age, code.colour.value, code.holder_ref, code.valid_from,
                code.valid_until,
            )  # fmt: skip
        if fault is Fault.BAD_SIGNATURE:
            return sign_status(doc, self.kid, PrivateKey.generate(self.key.alg))
        if fault is Fault.OTHER_KEY:
            return sign_status(doc, self.other_kid, self.other_key)
        return sign_status(doc, self.kid, self.key)


def _response(status: int, reason: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode("ascii") + body


class PartnerServer:
    """Serves one :class:`PartnerSim` over HTTPS (mTLS when the context requires client certs)."""

    def __init__(self, sim: PartnerSim, context: ssl.SSLContext | None) -> None:
        self.sim = sim
        self._context = context
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen (port 0: any free one); returns the port."""
        self._server = await asyncio.start_server(self._serve, host, port, ssl=self._context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def endpoint(self) -> str:
        """The base URL to configure (``/v1/code-status`` is appended by the gateway)."""
        return f"https://127.0.0.1:{self.port}"

    async def close(self) -> None:
        """Stop listening, drop every connection and end every handler (hanging ones too)."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # closed: the handler ends quietly
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.transport.abort()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > 8192:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = [*lines[0].split(" "), "", "", ""][:3]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length > MAX_REQUEST_BYTES:
            writer.write(_response(413, "Payload Too Large", b"{}"))
            await writer.drain()
            return False
        body = await reader.readexactly(length)
        sim = self.sim
        sim.requests += 1
        fault = sim._fault_now()
        if sim.latency:
            await asyncio.sleep(sim.latency)
        if fault is Fault.HANG:
            await asyncio.Event().wait()  # never answers; the client's deadline ends it
        if fault is Fault.RESET:
            writer.transport.abort()
            return False
        if method != "POST" or path != STATUS_PATH:
            writer.write(_response(404, "Not Found", b"{}"))
        elif fault in (Fault.HTTP_500, Fault.HTTP_503, Fault.HTTP_404):
            code = int(fault.value[5:])
            writer.write(_response(code, "Failed", b'{"error":"simulated"}'))
        elif fault is Fault.OVERSIZED:
            writer.write(_response(200, "OK", b'{"status_document":"' + b"A" * 20000 + b'"}'))
        elif fault is Fault.OVERSIZED_STREAM:
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n")
            for _ in range(8):  # 32 KiB, sent until the client stops reading
                writer.write(b"1000\r\n" + b"A" * 4096 + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        elif fault is Fault.MALFORMED:
            writer.write(_response(200, "OK", b'{"status_document": '))
        else:
            try:
                question = StatusQuestion.parse(body)
            except MalformedError:
                writer.write(_response(400, "Bad Request", b'{"error":"bad request"}'))
            else:
                writer.write(_response(200, "OK", answer_body(sim.document(question, fault))))
        await writer.drain()
        return True


def server_context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    """The endpoint's TLS context; with ``client_ca`` it requires a client certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


__all__ = ["Fault", "PartnerServer", "PartnerSim", "SimCode", "server_context"]
