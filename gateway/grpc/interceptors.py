"""The interceptor every call passes: request ids, latency, error counts and the drain on
shutdown; and reading out what a refused caller is still writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from gateway.observability import REQUEST_ID, REQUEST_ID_HEADER, Metrics, request_id_from

_HEALTH_PREFIX = "/grpc.health.v1.Health/"


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
    ``INTERNAL: Internal error from Core`` (grpc/grpc#36066). Only for streams from which
    nothing has been read yet (call it before the handler reads, never alongside a reader).
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


# A method handler as the interceptor sees it: of any service, so of any message types (a
# string: grpc's runtime class is not subscriptable, only its stub is generic).
_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class RequestInterceptor(grpc.aio.ServerInterceptor):
    """Gives every call a request id (the caller's ``x-request-id`` or a new one), returns it in
    the response's trailing metadata, and times the call.

    The wrapped handlers are built once per method and reused: the per-call work is reading
    the metadata, setting the id and observing the latency.

    It also drains the server (:meth:`drain`): once a shutdown begins, a call the server has not
    yet started is answered UNAVAILABLE at once (never half-done: the caller retries elsewhere),
    while calls already started run to completion. The health service is exempt: it answers
    NOT_SERVING.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._wrapped: dict[str, tuple[_Handler, _Handler]] = {}
        self._in_flight = 0
        self._seen = 0  # calls begun (not counting health checks)
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False

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

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # no service has this method: gRPC answers UNIMPLEMENTED
            return None
        cached = self._wrapped.get(handler_call_details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler_call_details.method, handler)
        self._wrapped[handler_call_details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, full_method: str, handler: _Handler) -> _Handler:
        method = full_method.rsplit("/", 1)[-1]
        histogram = self._metrics.latency.labels(method)
        errors = self._metrics.errors
        exempt = full_method.startswith(_HEALTH_PREFIX)  # answers NOT_SERVING while draining

        def begin(context: grpc.aio.ServicerContext[Any, Any]) -> float:
            request_id = request_id_from(context.invocation_metadata())
            REQUEST_ID.set(request_id)
            # Trailing metadata costs no extra round of the event loop, unlike initial metadata;
            # error statuses carry the id too (see gateway.grpc.methods.rich_status).
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            if not exempt:
                self._seen += 1
                self._in_flight += 1
                self._idle.clear()
            return time.perf_counter()

        reads_stream = handler.request_streaming

        async def admit(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            if self._draining and not exempt:
                if reads_stream:  # nothing read yet: let the caller finish writing first
                    await drain_requests(context)
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
            histogram.observe(time.perf_counter() - started)
            code = context.code()
            if code is not None and code != grpc.StatusCode.OK:
                name = code.name if isinstance(code, grpc.StatusCode) else str(code)
                errors.labels(method, name).inc()

        if handler.unary_unary is not None:
            # The stubs type a handler's behaviour for the synchronous server; grpc.aio calls
            # it with its own context and awaits the result, hence the wider type.
            inner_uu: Callable[..., Awaitable[Any]] = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = begin(context)
                try:
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
                try:
                    await admit(context)
                    async for response in stream_responses(inner(first, context)):
                        yield response
                finally:
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
