"""The online partners' failures (docs/partners.md §9): part of the one catalogue,
:mod:`keys.errors`, which re-exports every class here."""

from __future__ import annotations

from keys.errors._base import ForeignDataError


class CodeUnknownError(ForeignDataError):
    """The issuing region answered, signed, that it has no such code (online codes)."""

    reason = "CODE_UNKNOWN"
    grpc_status = "NOT_FOUND"
    default_message = "the issuing region does not know this code"


class PartnerUnavailableError(ForeignDataError):
    """The region's endpoint is unreachable, failed, unconfigured or its breaker is open."""

    reason = "PARTNER_UNAVAILABLE"
    grpc_status = "UNAVAILABLE"
    default_message = "the issuing region's verification endpoint is unavailable"


class PartnerTimeoutError(ForeignDataError):
    """No complete answer from the region's endpoint within the call's deadline."""

    reason = "PARTNER_TIMEOUT"
    grpc_status = "UNAVAILABLE"
    default_message = "the issuing region did not answer in time"


class PartnerBusyError(ForeignDataError):
    """Already as many calls in flight to the region as its concurrency allows."""

    reason = "PARTNER_BUSY"
    grpc_status = "RESOURCE_EXHAUSTED"
    default_message = "too many calls in flight to the issuing region"


class PartnerAnswerInvalidError(ForeignDataError):
    """The region's answer is not a well-formed, fresh status document for the question."""

    reason = "PARTNER_ANSWER_INVALID"
    grpc_status = "INVALID_ARGUMENT"
    default_message = "the issuing region's answer is not acceptable"


class StatusMismatchError(ForeignDataError):
    """A verified status document that does not answer the question asked, or not now."""

    reason = "STATUS_MISMATCH"
    default_message = "the status document does not answer the question asked"
