"""How every gRPC method is served: who may call it, how large its request may be, then decode.

Every service on the gateway's port (its own three and the library's health and reflection) is
registered through :func:`add_service`, whose handlers receive the request's **raw bytes**
(gRPC's own deserialiser would turn bytes that are not protobuf into ``UNKNOWN`` before any
handler runs, and decode before the role check). For every call, in this order:

1. the caller's role, from its mTLS certificate, before anything it sent is parsed;
2. the request's size against the method's own limit (``Method.max_request_bytes``; the
   server-wide gRPC limit, :data:`MAX_RECEIVE_BYTES`, is the largest legitimate message);
3. the decode: bytes that are not a message of the request type are ``REQUEST_MALFORMED``.

A failed call ends through :func:`gateway.grpc.errors.fail`, the one place where errors become
statuses. docs/api.md, "Limits".
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from gateway.grpc.auth import require
from gateway.grpc.errors import fail
from gateway.grpc.interceptors import RequestStream, stream_responses
from gateway.limits import (  # the one table of limits, shared with the SDK
    MAX_RECEIVE_BYTES,
    MAX_RECOGNISE_REQUEST_BYTES,
    MAX_SMALL_REQUEST_BYTES,
    MAX_SUBMISSION_REQUEST_BYTES,
    too_large,
)
from gateway.observability import Metrics
from gateway.pki import Role
from keys.errors import (
    GatewayError,
    RequestMalformedError,
    RequestTooLargeError,
)

__all__ = [
    "MAX_RECEIVE_BYTES",
    "MAX_RECOGNISE_REQUEST_BYTES",
    "MAX_SMALL_REQUEST_BYTES",
    "MAX_SUBMISSION_REQUEST_BYTES",
    "Method",
    "add_service",
    "decode",
]

_M = TypeVar("_M", bound=Message)


@dataclass(frozen=True)
class Method:
    """How one RPC method is served.

    ``roles``: the certificate roles that may call it (``None``: any caller that passed the TLS
    handshake, as for health and reflection); ``max_request_bytes``: the largest request
    message it reads; ``raw_stream``: a client-streaming handler that receives the raw bytes of
    each message and decodes them itself with :func:`decode` (to answer a bad one in order
    instead of ending the stream); otherwise it receives decoded messages.
    """

    roles: tuple[Role, ...] | None
    max_request_bytes: int
    raw_stream: bool = False


# --- decoding ---------------------------------------------------------------------------------


def decode(request_type: type[_M], raw: bytes, max_bytes: int) -> _M:
    """``raw`` as a ``request_type`` message: its size is checked before anything is parsed.

    Raises :class:`keys.errors.RequestTooLargeError` or :class:`~keys.errors.RequestMalformedError`.
    """
    if len(raw) > max_bytes:
        raise RequestTooLargeError(too_large(len(raw), max_bytes), limit=str(max_bytes))
    try:
        return request_type.FromString(raw)
    except DecodeError:
        raise RequestMalformedError(
            f"the request is not a valid {request_type.DESCRIPTOR.name} message"
        ) from None


async def _decoded(
    requests: AsyncIterator[bytes], request_type: type[Message], max_bytes: int
) -> AsyncIterator[Message]:
    async for raw in requests:
        yield decode(request_type, raw, max_bytes)


# --- registration -----------------------------------------------------------------------------


def add_service(
    server: grpc.aio.Server,
    service: ServiceDescriptor,
    servicer: object,
    methods: Mapping[str, Method | None],
    *,
    tls: bool,
    metrics: Metrics,
    wrap: Callable[[str, grpc.RpcMethodHandler[Any, Any]], grpc.RpcMethodHandler[Any, Any]]
    | None = None,
) -> None:
    """Serve every method of ``service`` with ``servicer``'s async method of the same name
    (called as a generated servicer's are: ``(request, context)``) under its ``Method`` rule;
    a method whose rule is ``None`` is not served (``UNIMPLEMENTED``, reason METHOD_UNKNOWN,
    from :class:`gateway.grpc.interceptors.RequestInterceptor`). ``wrap``: applied to every
    handler with its full method name, once (:meth:`RequestInterceptor.wrap`).

    Raises ``ValueError`` unless ``methods`` names exactly the service's methods.
    """
    mismatch = sorted(set(service.methods_by_name) ^ set(methods))
    if mismatch:
        raise ValueError(f"{service.full_name}: methods without a rule, or unknown: {mismatch}")
    handlers = {
        m.name: _handler(m, getattr(servicer, m.name), rule, tls, metrics)
        for m in service.methods
        if (rule := methods[m.name]) is not None
    }
    if wrap is not None:
        handlers = {
            name: wrap(f"/{service.full_name}/{name}", handler)
            for name, handler in handlers.items()
        }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


def _handler(
    descriptor: Any, impl: Callable[..., Any], rule: Method, tls: bool, metrics: Metrics
) -> grpc.RpcMethodHandler[Any, Any]:
    request_type = GetMessageClass(descriptor.input_type)
    serialize = GetMessageClass(descriptor.output_type).SerializeToString
    name, limit = descriptor.name, rule.max_request_bytes
    check_role, roles = tls and rule.roles is not None, rule.roles or ()

    if not descriptor.client_streaming:

        async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            request: Message | None = None
            try:
                if check_role:
                    require(context, tls, *roles)
                request = decode(request_type, raw, limit)
                raw = b""  # from here on, the decoded request is all this call keeps
                return await impl(request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                # The abort's traceback keeps this frame until the garbage collector runs (a
                # cycle through grpc's call state): keep it small.
                raw, request = b"", None
                await fail(context, name, metrics, exc)

        async def unary_stream(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                if check_role:
                    require(context, tls, *roles)
                request = decode(request_type, raw, limit)
                async for response in stream_responses(impl(request, context)):
                    yield response
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await fail(context, name, metrics, exc)

        if not descriptor.server_streaming:
            return grpc.unary_unary_rpc_method_handler(
                unary_unary, request_deserializer=None, response_serializer=serialize
            )
        return grpc.unary_stream_rpc_method_handler(
            unary_stream, request_deserializer=None, response_serializer=serialize
        )

    async def stream_stream(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        # Read through ``stream`` (not gRPC's iterator): it knows whether the caller is still
        # writing, and a call ended while it is gets INTERNAL at a grpc.aio client instead of
        # its own status (grpc/grpc#36066): so every failure first reads out the rest.
        stream = RequestStream(context)
        if check_role:
            try:
                require(context, tls, *roles)
            except GatewayError as exc:
                await stream.drain()
                await fail(context, name, metrics, exc)
        given = stream if rule.raw_stream else _decoded(stream, request_type, limit)
        try:
            responses = impl(given, context)
            if inspect.isawaitable(responses):  # writes with context.write()
                await responses
            else:  # iterated here: one generator less for every response
                async for response in responses:
                    yield response
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await stream.drain()  # nothing reads it any more: the handler has ended
            await fail(context, name, metrics, exc)

    if descriptor.server_streaming:
        return grpc.stream_stream_rpc_method_handler(
            stream_stream, request_deserializer=None, response_serializer=serialize
        )
    raise ValueError(f"{name}: client-streaming methods with a unary response are not served")
