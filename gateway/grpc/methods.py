"""How every gRPC method is served: who may call it, how large its request may be, then decode.

Every service on the gateway's port (its own three and the library's health and reflection) is
registered through :func:`add_service`, whose handlers receive the request's **raw bytes**
(gRPC's own deserialiser would turn bytes that are not protobuf into ``UNKNOWN`` before any
handler runs, and decode before the role check). For every call, in this order:

1. the caller's role, from its mTLS certificate, before anything it sent is parsed;
2. the request's size against the method's own limit (``Method.max_request_bytes``; the
   server-wide gRPC limit, :data:`MAX_RECEIVE_BYTES`, is the largest legitimate message);
3. the decode: bytes that are not a message of the request type are ``REQUEST_MALFORMED``.

Errors become statuses here and nowhere else: a project error (:class:`keys.errors.GatewayError`)
its own status with a ``google.rpc.ErrorInfo`` (reason, domain, request id), anything else
``INTERNAL`` with an incident id and the traceback in the log only. docs/api.md, "RPC errors"
and "Limits".
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.observability import (
    REQUEST_ID,
    REQUEST_ID_HEADER,
    Metrics,
    drain_requests,
    stream_responses,
)
from gateway.pki import Peer, Role, UnauthenticatedError, peer_from_auth_context
from keys.errors import (
    GatewayError,
    InvalidRequestError,
    RequestMalformedError,
    RequestTooLargeError,
)
from keys.signed import MAX_ENVELOPE_BYTES

log = logging.getLogger("trustgw.rpc")

ERROR_DOMAIN = "trustgw.gateway"
KIB = 1024
# A RecogniseRequest holds a code of at most 4096 characters (4 bytes each at most in UTF-8),
# a request id of at most 128 and a 6-digit hint: under 17 KiB; the limit leaves room.
MAX_RECOGNISE_REQUEST_BYTES = 32 * KIB
# A partner submission is an envelope of at most 2 MiB, plus its field's tag and length.
MAX_SUBMISSION_REQUEST_BYTES = MAX_ENVELOPE_BYTES + 64
# Requests with a few scalar fields (GetGatewayKeys, GetTrustList, health, reflection).
MAX_SMALL_REQUEST_BYTES = 4 * KIB
# The server-wide gRPC receive limit: the largest legitimate message. Above it gRPC itself
# answers RESOURCE_EXHAUSTED (without ErrorInfo) and ends the call.
MAX_RECEIVE_BYTES = MAX_SUBMISSION_REQUEST_BYTES

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


# --- errors to statuses: one place ------------------------------------------------------------


def rich_status(error: GatewayError) -> grpc.Status:
    """The status of a project error: its gRPC code, message and an ErrorInfo with its reason."""
    code = getattr(grpc.StatusCode, error.grpc_status, grpc.StatusCode.FAILED_PRECONDITION)
    info = error_details_pb2.ErrorInfo(
        reason=error.reason,
        domain=ERROR_DOMAIN,
        metadata={**error.metadata, "request_id": REQUEST_ID.get()},
    )
    detail = status_pb2.Status(code=code.value[0], message=error.message)
    detail.details.add().Pack(info)
    return _with_request_id(rpc_status.to_status(detail))


def internal_status(incident: str) -> grpc.Status:
    """The status of an unexpected fault: INTERNAL with an incident id, never details."""
    detail = status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error (incident {incident})"
    )
    return _with_request_id(rpc_status.to_status(detail))


def _with_request_id(status: grpc.Status) -> grpc.Status:
    """An error's trailing metadata replaces the call's: keep the request id in it."""
    trailing = (*status.trailing_metadata, (REQUEST_ID_HEADER, REQUEST_ID.get()))
    return _Status(status.code, status.details, trailing)


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def note_bad_request(metrics: Metrics, method: str, error: InvalidRequestError) -> None:
    """Count a refused request and say so in the log (one line, no traceback: the caller's
    fault, not the gateway's)."""
    metrics.bad_requests.labels(method, error.reason).inc()
    log.warning("%s: request refused, %s: %s", method, error.reason, error.message)


async def fail(
    context: grpc.aio.ServicerContext[Any, Any], method: str, metrics: Metrics, exc: Exception
) -> NoReturn:
    """End the call for ``exc``: a project error with its own status, anything else INTERNAL."""
    if isinstance(exc, GatewayError):
        if isinstance(exc, InvalidRequestError):
            note_bad_request(metrics, method, exc)
        status = rich_status(exc)
    else:
        incident = uuid.uuid4().hex[:12]
        log.error("unexpected error in %s, incident %s", method, incident, exc_info=exc)
        status = internal_status(incident)
    # The abort's exception refers to this one, and grpc keeps it with the call's state in a
    # reference cycle: without its traceback it does not keep the handler's frames (and the
    # request bytes in them) alive until the garbage collector runs.
    exc.__traceback__ = None
    await context.abort_with_status(status)
    raise AssertionError("unreachable")  # abort_with_status raises


# --- callers ----------------------------------------------------------------------------------


def caller(context: grpc.aio.ServicerContext[Any, Any], tls: bool) -> Peer | None:
    """The authenticated caller; ``None`` on a plaintext (development) server."""
    if not tls:
        return None
    auth = context.auth_context()
    if not auth:
        raise UnauthenticatedError()
    return peer_from_auth_context({key: list(values) for key, values in auth.items()})


def require(context: grpc.aio.ServicerContext[Any, Any], tls: bool, *roles: Role) -> Peer | None:
    """The caller, who must hold one of ``roles`` (any caller on a plaintext server)."""
    peer = caller(context, tls)
    if peer is not None:
        peer.require(*roles)
    return peer


# --- decoding ---------------------------------------------------------------------------------


def decode(request_type: type[_M], raw: bytes, max_bytes: int) -> _M:
    """``raw`` as a ``request_type`` message: its size is checked before anything is parsed.

    Raises :class:`keys.errors.RequestTooLargeError` or :class:`~keys.errors.RequestMalformedError`.
    """
    if len(raw) > max_bytes:
        raise RequestTooLargeError(
            f"the request is {len(raw)} bytes; this method accepts at most {max_bytes}",
            limit=str(max_bytes),
        )
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
) -> None:
    """Serve every method of ``service`` with ``servicer``'s async method of the same name
    (called as a generated servicer's are: ``(request, context)``) under its ``Method`` rule;
    a method whose rule is ``None`` is not served (gRPC answers ``UNIMPLEMENTED``).

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

    async def stream_stream(requests: AsyncIterator[bytes], context: Any) -> Any:
        if check_role:
            try:
                require(context, tls, *roles)
            except GatewayError as exc:
                # Read what the caller is still writing before answering (grpc/grpc#36066).
                await drain_requests(context)
                await fail(context, name, metrics, exc)
        given = requests if rule.raw_stream else _decoded(requests, request_type, limit)
        try:
            async for response in stream_responses(impl(given, context)):
                yield response
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await fail(context, name, metrics, exc)

    if descriptor.server_streaming:
        return grpc.stream_stream_rpc_method_handler(
            stream_stream, request_deserializer=None, response_serializer=serialize
        )
    raise ValueError(f"{name}: client-streaming methods with a unary response are not served")
