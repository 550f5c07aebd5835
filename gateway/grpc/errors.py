"""Errors become statuses here and nowhere else.

A project error (:class:`keys.errors.GatewayError`) gets its own status with a
``google.rpc.ErrorInfo`` (reason, domain, request id); anything else ``INTERNAL`` with an
incident id, and the traceback in the log only. docs/api.md, "RPC errors".
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.observability import REQUEST_ID, REQUEST_ID_HEADER, Metrics, note_failure
from keys.errors import (
    GatewayError,
    InvalidRequestError,
)

log = logging.getLogger("trustgw.rpc")

ERROR_DOMAIN = "trustgw.gateway"


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
        note_failure(exc.reason)
    else:
        incident = uuid.uuid4().hex[:12]
        note_failure("INTERNAL")
        log.error("unexpected error in %s, incident %s", method, incident, exc_info=exc)
        status = internal_status(incident)
    # The abort's exception refers to this one, and grpc keeps it with the call's state in a
    # reference cycle: without its traceback it does not keep the handler's frames (and the
    # request bytes in them) alive until the garbage collector runs.
    exc.__traceback__ = None
    await context.abort_with_status(status)
    raise AssertionError("unreachable")  # abort_with_status raises
