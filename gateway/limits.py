"""The largest request message each RPC method reads (docs/api.md, "Limits"): one table for the
server, which refuses a larger one before decoding it (:mod:`gateway.grpc.methods`), and the
SDK, which refuses it before sending it (:mod:`gateway.sdk`). Imports no gRPC.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from keys.signed import MAX_ENVELOPE_BYTES

KIB = 1024
# A RecogniseRequest holds a code of at most 4096 characters (4 bytes each at most in UTF-8),
# a request id of at most 128 and a 6-digit hint: under 17 KiB; the limit leaves room.
MAX_RECOGNISE_REQUEST_BYTES = 32 * KIB
# A DeclareRequest holds a partner code (as a RecogniseRequest does) and a few short fields: at
# most 32 places of 16 characters, an ID number, dates.
MAX_DECLARE_REQUEST_BYTES = 32 * KIB
# A partner submission is an envelope of at most 2 MiB, plus its field's tag and length.
MAX_SUBMISSION_REQUEST_BYTES = MAX_ENVELOPE_BYTES + 64
# A GetCodeStatusRequest holds a home code of at most 4096 characters, or its id, and a nonce.
MAX_STATUS_REQUEST_BYTES = 8 * KIB
# Requests with a few scalar fields (GetGatewayKeys, GetTrustList, health, reflection).
MAX_SMALL_REQUEST_BYTES = 4 * KIB
# The server-wide gRPC receive limit: the largest legitimate message. Above it gRPC itself
# answers RESOURCE_EXHAUSTED (without ErrorInfo) and ends the call.
MAX_RECEIVE_BYTES = MAX_SUBMISSION_REQUEST_BYTES

# The gateway's own methods, by full name (the services' health and reflection methods take
# MAX_SMALL_REQUEST_BYTES). tests/test_wire.py checks that the server serves exactly these.
REQUEST_LIMITS: Mapping[str, int] = MappingProxyType(
    {
        "/gateway.api.v1.RecognitionService/Recognise": MAX_RECOGNISE_REQUEST_BYTES,
        "/gateway.api.v1.RecognitionService/RecogniseStream": MAX_RECOGNISE_REQUEST_BYTES,
        "/gateway.api.v1.RecognitionService/GetGatewayKeys": MAX_SMALL_REQUEST_BYTES,
        "/gateway.api.v1.PartnerService/PublishKeySet": MAX_SUBMISSION_REQUEST_BYTES,
        "/gateway.api.v1.PartnerService/RevokeKey": MAX_SUBMISSION_REQUEST_BYTES,
        "/gateway.api.v1.PartnerService/PublishRevocations": MAX_SUBMISSION_REQUEST_BYTES,
        "/gateway.api.v1.PartnerService/GetCodeStatus": MAX_STATUS_REQUEST_BYTES,
        "/gateway.api.v1.TrustListService/GetTrustList": MAX_SMALL_REQUEST_BYTES,
        "/gateway.api.v1.TrustListService/WatchTrustList": MAX_SMALL_REQUEST_BYTES,
        "/gateway.api.v1.DeclarationService/Declare": MAX_DECLARE_REQUEST_BYTES,
        "/gateway.api.v1.DeclarationService/GetDeclaration": MAX_SMALL_REQUEST_BYTES,
    }
)


def too_large(size: int, limit: int) -> str:
    """The message of a request refused for its size (REQUEST_TOO_LARGE), on both sides."""
    return f"the request is {size} bytes; this method accepts at most {limit}"


__all__ = [
    "MAX_DECLARE_REQUEST_BYTES",
    "MAX_RECEIVE_BYTES",
    "MAX_RECOGNISE_REQUEST_BYTES",
    "MAX_SMALL_REQUEST_BYTES",
    "MAX_STATUS_REQUEST_BYTES",
    "MAX_SUBMISSION_REQUEST_BYTES",
    "REQUEST_LIMITS",
    "too_large",
]
