"""The interceptor every call passes: request ids, latency, error counts, the drain on
shutdown and the answer to a method the gateway does not serve; and reading out what a refused
caller is still writing (docs/api.md, "Refused streams").
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from gateway.denylist import DenyList
from gateway.grpc.auth import peer_names, peer_of
from gateway.grpc.errors import fail
from gateway.observability import (
    CALL,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    AccessLog,
    CallRecord,
    Metrics,
    note_failure,
    request_id_from,
)
from keys.errors import CertificateDeniedError, MethodUnknownError

_HEALTH_PREFIX = "/grpc.health.v1.Health/"
# The label under which calls of methods the gateway does not serve are timed and counted (one
# label for all of them: a caller chooses the path, and must not choose the metrics' size).
UNKNOWN_METHOD = "/-/unknown"


async def stream_responses(result: Any) -> AsyncIterator[Any]:
    """A streaming handler's responses: it is either an async generator, or a coroutine that
    writes with ``context.write()`` (as the standard health service's ``Watch`` does)."""
    if inspect.isawaitable(result):
        await result
        return
    async for response in result:
        yield response


# A refused caller's stream is read for at most this long / this many messages / bytes.
DRAIN_SECONDS = 2.0
DRAIN_MESSAGES = 1024
DRAIN_BYTES = 8 * 1024 * 1024


async def drain_requests(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Read and drop what the caller is still writing on a stream about to be refused, until it
    half-closes or a bound is reached (``DRAIN_SECONDS``, ``DRAIN_MESSAGES``, ``DRAIN_BYTES``),
    so that the refusal's own status reaches it.

    A server that ends a call while the client is still writing resets the stream after its
    trailers; a grpc.aio client whose write then fails replaces the status it had received with
    ``INTERNAL: Internal error from Core`` (grpc/grpc#36066, its client's
    ``_StreamRequestMixin._write``). Only while no other read of the call is pending (gRPC
    allows one at a time): before the handler reads, or through :meth:`RequestStream.drain`.
    """
    received = total = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            while received < DRAIN_MESSAGES and total <= DRAIN_BYTES:
                message = await context.read()
                if message is grpc.aio.EOF:
                    return
                received += 1
                total += len(message) if isinstance(message, bytes) else 0


# grpc_type of go-grpc-prometheus, by (request streaming, response streaming).
_GRPC_TYPES = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}

# A method handler as the interceptor sees it: of any service, so of any message types (a
# string: grpc's runtime class is not subscriptable, only its stub is generic).
_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class RequestStream:
    """The request messages of one streaming call, as they arrive (raw bytes), remembering
    whether the caller has half-closed and whether a read was interrupted, so that a call that
    fails part-way can read out the rest before its status (:meth:`drain`).

    Read by one task at a time, as gRPC requires.
    """

    __slots__ = ("_call", "_context", "ended", "interrupted")

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._context = context
        self._call = CALL.get()  # counts the messages read, for the access log
        self.ended = False  # the caller half-closed: nothing left to drain
        self.interrupted = False  # a read was cancelled: gRPC allows no further read

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> bytes:
        if self.ended or self.interrupted:
            raise StopAsyncIteration
        try:
            message = await self._context.read()
        except asyncio.CancelledError:
            self.interrupted = True
            raise
        if message is grpc.aio.EOF:
            self.ended = True
            raise StopAsyncIteration
        if self._call is not None:
            self._call.received += 1
        return message  # type: ignore[no-any-return]

    async def drain(self) -> None:
        """Read out what the caller is still writing (bounded: :func:`drain_requests`); call
        it only when nothing else reads the stream any more."""
        if not (self.ended or self.interrupted):
            self.ended = True
            await drain_requests(self._context)


def _peer_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """``role/name`` of the caller's client certificate, for the log ("" without one, or
    "?" when it names no role the gateway knows)."""
    names = peer_names(context)
    if not names:  # plaintext, or no such certificate
        return ""
    try:
        peer = peer_of(names)
    except Exception:
        return "?"
    return f"{peer.role.value}/{peer.name}"


class RequestInterceptor:
    """Gives every call a request id (the caller's ``x-request-id`` or a new one), returns it in
    the response's trailing metadata, and times the call.

    Not a ``grpc.aio.ServerInterceptor``: grpc.aio runs an interceptor chain (coroutines and a
    handler lookup) on every call, and that was a measurable share of a recognition's CPU
    (bench/PROFILE.md). Instead every method's handler is wrapped once, when it is registered
    (:meth:`wrap`, called by :func:`gateway.grpc.methods.add_service`), and a method the server
    does not serve gets :attr:`unknown` from the last generic handler (:meth:`fallback`). The
    per-call work is reading the metadata, setting the id and observing the latency.

    It also drains the server (:meth:`drain`): once a shutdown begins, a call the server has not
    yet started is answered UNAVAILABLE at once (never half-done: the caller retries elsewhere),
    while calls already started run to completion. The health service is exempt: it answers
    NOT_SERVING.
    """

    def __init__(self, metrics: Metrics, access: AccessLog | None = None) -> None:
        self._metrics = metrics
        self.access = access or AccessLog(enabled=False)
        self.deny = DenyList()  # client certificates refused (replaced on reload)
        self._in_flight = 0
        self._seen = 0  # calls begun (not counting health checks)
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False
        self._unknown = self._wrap(
            UNKNOWN_METHOD, grpc.stream_stream_rpc_method_handler(self._refuse_unknown)
        )

    async def _refuse_unknown(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        """A method the gateway does not serve: ``UNIMPLEMENTED`` with reason METHOD_UNKNOWN,
        after the caller has finished writing (gRPC's own answer comes before it has read
        anything, and a grpc.aio client that is still writing then sees ``INTERNAL``). Any
        call shape: a unary caller's request is one message and the half-close."""
        await drain_requests(context)
        await fail(context, "unknown", self._metrics, MethodUnknownError())
        yield b""  # unreachable (fail raises); makes this a streaming handler

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def drain(self, timeout: float, quiet: float = 0.1) -> bool:
        """Refuse new calls (UNAVAILABLE) and wait up to ``timeout`` seconds until no call is
        in flight and none has arrived for ``quiet`` seconds. True when that happened.

        The quiet period matters: grpc.aio's stop() cancels calls that reach it after the drain
        (CANCELLED: the caller cannot know they were never run), so the drain lasts while
        callers are still trying, and they all get a clean UNAVAILABLE.
        """
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await asyncio.wait_for(self._idle.wait(), max(deadline - loop.time(), 0))
            except TimeoutError:
                return False
            seen = self._seen
            await asyncio.sleep(max(min(quiet, deadline - loop.time()), 0))
            if self._seen == seen and self._in_flight == 0:
                return True
            if loop.time() >= deadline:
                return self._in_flight == 0

    def fallback(self) -> grpc.GenericRpcHandler:
        """The generic handler to register after every service: any method no service has
        gets :attr:`unknown` (answered after the drain, ``UNIMPLEMENTED``, METHOD_UNKNOWN)."""
        unknown = self._unknown

        class _Unknown(grpc.GenericRpcHandler):
            def service(self, handler_call_details: grpc.HandlerCallDetails) -> _Handler:
                del handler_call_details  # whatever the method: every service came before
                return unknown

        return _Unknown()

    def wrap(self, full_method: str, handler: _Handler) -> _Handler:
        """``handler`` of ``full_method`` (``/package.Service/Method``) behind this
        interceptor: request id, metrics, access log, deny list and drain."""
        return self._wrap(full_method, handler)

    def _wrap(self, full_method: str, handler: _Handler) -> _Handler:
        service, _, method = full_method.lstrip("/").rpartition("/")
        kind = _GRPC_TYPES[handler.request_streaming, handler.response_streaming]
        labels = (kind, service, method)
        metrics = self._metrics
        histogram = (metrics.stream_duration if kind != "unary" else metrics.grpc_handling).labels(
            *labels
        )
        started_total = metrics.grpc_started.labels(*labels)
        received_total = metrics.grpc_msg_received.labels(*labels)
        sent_total = metrics.grpc_msg_sent.labels(*labels)
        handled: dict[str, Any] = {}  # grpc_code -> its counter, made at the first such call
        exempt = full_method.startswith(_HEALTH_PREFIX)  # answers NOT_SERVING while draining
        access = self.access
        reads_stream = handler.request_streaming
        stream = handler.request_streaming or handler.response_streaming

        def begin(context: grpc.aio.ServicerContext[Any, Any]) -> float:
            request_id = request_id_from(context.invocation_metadata())
            REQUEST_ID.set(request_id)
            call = CallRecord(full_method, request_id, stream)
            call.received = int(not reads_stream)  # a unary request is one message
            CALL.set(call)
            if access.enabled:
                # Read at the start, while grpc's call is alive: the wrapper's ``finally`` of a
                # stream can run after a cancelled call is released, and grpc's auth context
                # and peer read then crash the process (a segfault seen under load).
                call.peer = _peer_of(context)
                call.address = context.peer() or ""
            # Trailing metadata costs no extra round of the event loop, unlike initial metadata;
            # error statuses carry the id too (see gateway.grpc.methods.rich_status).
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            if not exempt:
                self._seen += 1
                self._in_flight += 1
                self._idle.clear()
            started_total.inc()
            return time.perf_counter()

        async def admit(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            deny = self.deny
            if deny:  # checked on every call: grpc has no hook in the handshake for it
                pem = next(iter(context.auth_context().get("x509_pem_cert", ())), None)
                if pem is not None:
                    try:
                        deny.check_pem(pem)
                    except CertificateDeniedError as exc:
                        if reads_stream:
                            await drain_requests(context)
                        await fail(context, method, metrics, exc)
            if self._draining and not exempt:
                if reads_stream:  # nothing read yet: let the caller finish writing first
                    await drain_requests(context)
                note_failure("SHUTTING_DOWN")
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    "the gateway is shutting down: retry on another instance",
                    trailing_metadata=((REQUEST_ID_HEADER, REQUEST_ID.get()),),
                )

        def end(context: grpc.aio.ServicerContext[Any, Any], started: float) -> None:
            if not exempt:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.set()
            seconds = time.perf_counter() - started
            histogram.observe(seconds)
            code = context.code()
            name = "OK"
            if code is not None and code != grpc.StatusCode.OK:
                name = code.name if isinstance(code, grpc.StatusCode) else str(code)
            counter = handled.get(name)
            if counter is None:
                counter = handled[name] = metrics.grpc_handled.labels(*labels, name)
            counter.inc()
            call = CALL.get()
            if call is None:
                return
            if not call.stream:
                call.received, call.sent = 1, int(name == "OK")
            received_total.inc(call.received)
            sent_total.inc(call.sent)
            if access.enabled:
                access.write(call, name, seconds, call.address)

        if handler.unary_unary is not None:
            # The stubs type a handler's behaviour for the synchronous server; grpc.aio calls
            # it with its own context and awaits the result, hence the wider type.
            inner_uu: Callable[..., Awaitable[Any]] = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = begin(context)
                try:
                    if self.deny or self._draining:  # else nothing refuses: no coroutine
                        await admit(context)
                    call = inner_uu(request, context)
                    del request  # an error's traceback keeps this frame: not the request too
                    return await call
                finally:
                    end(context, started)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        def streaming(inner: Callable[..., Any]) -> Callable[..., Any]:
            # The same wrapper serves stream-stream and unary-stream: only the first argument
            # (a request iterator or a request) differs, and it is passed through.
            async def wrapper(first: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = begin(context)
                call, sent = CALL.get(), 0
                try:
                    if self.deny or self._draining:
                        await admit(context)
                    responses = inner(first, context)
                    if inspect.isawaitable(responses):  # writes with context.write()
                        await responses
                    else:  # iterated here: one generator less for every response
                        async for response in responses:
                            sent += 1
                            yield response
                finally:
                    if call is not None:  # counted once, not per response
                        call.sent += sent
                    end(context, started)

            return wrapper

        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                streaming(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                streaming(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
