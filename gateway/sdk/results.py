"""What the client returns: frozen dataclasses of plain Python types, and their reading from
the gateway's protobuf messages (the generated types stay inside the SDK).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway import tokens
from gateway.api.v1 import recognition_pb2 as pb
from keys.crypto import Algorithm, PublicKey
from keys.timeutil import from_unix


@dataclass(frozen=True)
class ConvertedCode:
    """A home-province code issued for a partner code (convert-mode regions)."""

    code: str
    kid: str
    expires_at: datetime
    code_id: str


@dataclass(frozen=True)
class Decision:
    """The gateway's answer on one code. ``recognised`` is True only for a verified, valid,
    green code; otherwise ``reason`` says why (see docs/api.md)."""

    request_id: str  # the id echoed for this code (yours, or one the client made)
    recognised: bool
    reason: str
    message: str
    region: str | None
    mode: str | None  # "show" | "convert"
    colour: str | None  # "green" | "yellow" | "red", when the signature verified
    valid_until: datetime | None
    attestation: tokens.Attestation | None  # verify offline with gateway.tokens
    converted: ConvertedCode | None
    server_request_id: str  # the id in the gateway's logs (x-request-id)
    # With a place code: VISIT_RECORDED, or why no visit was recorded (docs/api.md).
    place_reason: str | None = None
    venue_id: str | None = None


@dataclass(frozen=True)
class SubmissionReceipt:
    """What an accepted partner submission did (``duplicate``: accepted before, unchanged)."""

    kind: str  # "keyset" | "key_revocation" | "revocations"
    region: str
    digest: str
    accepted_at: datetime
    duplicate: bool
    version: int
    keys_added: tuple[str, ...]
    keys_removed: tuple[str, ...]
    keys_kept: tuple[str, ...]
    anchors_rotated: bool
    key_id: str
    revoked_at: datetime | None
    batch_id: str
    codes: int
    holders: int
    conversions_revoked: int
    server_request_id: str
    # The receipt signed by the gateway: keep it as proof, verify it offline with
    # gateway.tokens.verify_receipt (the fields above are an unsigned copy).
    attestation: tokens.Attestation | None = None


@dataclass(frozen=True)
class SignedTrustList:
    """A signed trust list (or delta) exactly as served: verify ``envelope`` offline with
    :class:`keys.trustlist.TrustListVerifier`; the other fields are unsigned hints."""

    envelope: bytes
    version: int
    expires: datetime
    since_version: int  # 0: a full list
    issued_at: datetime
    server_request_id: str


# --- protobuf to plain types (the generated code stays here) ---------------------------------

_MODES = {pb.MODE_SHOW: "show", pb.MODE_CONVERT: "convert"}
_COLOURS = {pb.COLOUR_GREEN: "green", pb.COLOUR_YELLOW: "yellow", pb.COLOUR_RED: "red"}
_KINDS = {1: "keyset", 2: "key_revocation", 3: "revocations"}


def decision_from_proto(response: pb.RecogniseResponse, server_request_id: str) -> Decision:
    """The :class:`Decision` of a ``RecogniseResponse`` (``server_request_id``: the gateway's id for
    the call).
    """
    attestation = None
    if response.HasField("attestation"):
        att = response.attestation
        attestation = tokens.Attestation(att.payload, att.key_id, att.alg, att.signature)
    converted = None
    if response.HasField("converted"):
        conv = response.converted
        converted = ConvertedCode(conv.code, conv.key_id, from_unix(conv.expires_at), conv.code_id)
    return Decision(
        request_id=response.request_id,
        recognised=response.recognised,
        reason=response.reason,
        message=response.message,
        region=response.region or None,
        mode=_MODES.get(response.mode),
        colour=_COLOURS.get(response.colour),
        valid_until=from_unix(response.valid_until) if response.valid_until else None,
        attestation=attestation,
        converted=converted,
        server_request_id=server_request_id,
        place_reason=response.place_reason or None,
        venue_id=response.venue_id or None,
    )


def trust_from_proto(keys: pb.GatewayKeys) -> tokens.GatewayTrust:
    """The verifier's trust (:class:`gateway.tokens.GatewayTrust`) from a ``GetGatewayKeys``
    reply. Raises :class:`keys.errors.MalformedError` for a key that does not load, ``ValueError``
    for an algorithm name it does not know."""
    return tokens.GatewayTrust(
        keys.region,
        tuple(
            tokens.TrustedKey(
                k.key_id,
                k.role,
                PublicKey.from_spki(k.public_key, Algorithm(k.alg)),
                from_unix(k.not_before),
                from_unix(k.not_after),
                k.status or "active",
                from_unix(k.revoked_at) if k.revoked_at else None,
            )
            for k in keys.keys
        ),
    )


def receipt_from_proto(r: Any, server_request_id: str) -> SubmissionReceipt:
    """The :class:`SubmissionReceipt` of a ``SubmissionReceipt`` message (its attestation is not
    verified here: :func:`gateway.tokens.verify_receipt`).
    """
    return SubmissionReceipt(
        kind=_KINDS.get(r.kind, "unspecified"),
        region=r.region,
        digest=r.digest,
        accepted_at=from_unix(r.accepted_at),
        duplicate=r.duplicate,
        version=r.version,
        keys_added=tuple(r.keys_added),
        keys_removed=tuple(r.keys_removed),
        keys_kept=tuple(r.keys_kept),
        anchors_rotated=r.anchors_rotated,
        key_id=r.key_id,
        revoked_at=from_unix(r.revoked_at) if r.revoked_at else None,
        batch_id=r.batch_id,
        codes=r.codes,
        holders=r.holders,
        conversions_revoked=r.conversions_revoked,
        server_request_id=server_request_id,
        attestation=(
            tokens.Attestation(
                r.attestation.payload,
                r.attestation.key_id,
                r.attestation.alg,
                r.attestation.signature,
            )
            if r.HasField("attestation")
            else None
        ),
    )


def trust_list_from_proto(r: Any, server_request_id: str) -> SignedTrustList:
    """The :class:`SignedTrustList` of a ``TrustListResponse`` (not verified here:
    :class:`keys.trustlist.TrustListVerifier`).
    """
    return SignedTrustList(
        envelope=r.envelope,
        version=r.version,
        expires=from_unix(r.expires),
        since_version=r.since_version,
        issued_at=from_unix(r.issued_at),
        server_request_id=server_request_id,
    )
