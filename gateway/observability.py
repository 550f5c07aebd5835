"""Request ids, structured logs and Prometheus metrics.

Nothing here configures logging at import time: ``configure_logging`` is called by ``trustgw
serve``. Log lines never carry a personal identifier or a key: the gateway only ever handles
keyed pseudonyms, and log calls pass ids and reasons, not codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextvars import ContextVar
from datetime import datetime
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")
REQUEST_ID_HEADER = "x-request-id"
# Generated ids: a random per-process prefix and a counter (unique without a urandom call each).
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_HEALTH_PREFIX = "/grpc.health.v1.Health/"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created)
            .astimezone()
            .isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": REQUEST_ID.get(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Configure the root logger once, for a server process."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
        handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class Metrics:
    """The gateway's metrics, in a registry of their own (one per gateway: tests run many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.recognitions = Counter(
            "trustgw_recognitions",
            "Decisions on scanned codes.",
            ["region", "mode", "decision", "reason"],
            registry=self.registry,
        )
        self.conversions = Counter(
            "trustgw_conversions",
            "Partner codes exchanged for home-province codes (new or repeated).",
            ["region"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "trustgw_rpc_latency_seconds",
            "Server-side handling time per RPC method.",
            ["method"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.errors = Counter(
            "trustgw_rpc_errors",
            "RPCs that ended with a status other than OK.",
            ["method", "code"],
            registry=self.registry,
        )
        self.bad_requests = Counter(
            "trustgw_bad_requests",
            "Requests refused before any decision (malformed bytes, over the method's size "
            "limit, invalid fields), in unary calls and inside streams.",
            ["method", "reason"],
            registry=self.registry,
        )
        self.key_expiry_days = Gauge(
            "trustgw_key_expiry_days",
            "Days until a key the gateway holds or trusts stops being valid.",
            ["owner", "role", "kid"],
            registry=self.registry,
        )
        self.registry_version = Gauge(
            "trustgw_registry_version",
            "Version of the loaded key registry.",
            registry=self.registry,
        )
        self.trustlist_version = Gauge(
            "trustgw_trustlist_version",
            "Version of the current signed trust list.",
            registry=self.registry,
        )

    def set_key_expiry(self, rows: Iterable[tuple[str, str, str, datetime]], now: datetime) -> None:
        """Replace the key-expiry gauges with ``(owner, role, kid, not_after)`` rows."""
        self.key_expiry_days.clear()
        for owner, role, kid, not_after in rows:
            days = (not_after - now).total_seconds() / 86400
            self.key_expiry_days.labels(owner, role, kid).set(round(days, 3))


def _request_id(metadata: Iterable[tuple[str, Any]] | None) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and _REQUEST_ID_OK.match(value):
            return value
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFF:08x}"


class DrainingHealthServicer(health.aio.HealthServicer):
    """The standard health service, whose ``Watch`` streams end (after reporting NOT_SERVING)
    when a graceful shutdown begins.

    Clients with gRPC client-side health checking keep a ``Watch`` open on every connection;
    left open, each one would hold ``server.stop(grace)`` for the whole grace period.
    """

    def __init__(self) -> None:
        super().__init__()
        self._status: dict[str, Any] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._changed = asyncio.Event()
        self._shutting_down = False

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def set(self, service: str, status: Any) -> None:
        await super().set(service, status)
        if not self._shutting_down:
            self._status[service] = status
            self._wake()

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        if not self._shutting_down:
            self._shutting_down = True
            self._status = dict.fromkeys(self._status, health_pb2.HealthCheckResponse.NOT_SERVING)
            self._wake()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        last: int | None = None
        while True:
            changed = self._changed
            status = self._status.get(
                request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            )
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if self._shutting_down:
                return
            await changed.wait()


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
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
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
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        cached = self._wrapped.get(handler_call_details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler_call_details.method, handler)
        self._wrapped[handler_call_details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        method = full_method.rsplit("/", 1)[-1]
        histogram = self._metrics.latency.labels(method)
        errors = self._metrics.errors
        exempt = full_method.startswith(_HEALTH_PREFIX)  # answers NOT_SERVING while draining

        def begin(context: grpc.aio.ServicerContext) -> float:
            request_id = _request_id(context.invocation_metadata())
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

        async def admit(context: grpc.aio.ServicerContext) -> None:
            if self._draining and not exempt:
                if reads_stream:  # nothing read yet: let the caller finish writing first
                    await drain_requests(context)
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    "the gateway is shutting down: retry on another instance",
                    trailing_metadata=((REQUEST_ID_HEADER, REQUEST_ID.get()),),
                )

        def end(context: grpc.aio.ServicerContext, started: float) -> None:
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
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
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
            async def wrapper(first: Any, context: grpc.aio.ServicerContext) -> Any:
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
