"""``PartnerService``: partner provincial systems publish key sets and revocations over gRPC,
and ask the status of the home province's codes (``GetCodeStatus``, :mod:`gateway.codestatus`).

A thin adapter over :class:`keys.trustregistry.TrustRegistry`: the caller's region comes from
its mTLS certificate (``trustgw://partner/<region>``) and must be the submission's region, or
the registry refuses it with ``REGION_FORBIDDEN``. The role and the request's size are checked
before it is decoded, and every refusal becomes a status with ``ErrorInfo``, in
``gateway.grpc.methods``. Every receipt is signed by the gateway's attest key
(:func:`gateway.tokens.sign_receipt`), so a partner can keep proof of what the gateway accepted
and check it offline (:func:`gateway.tokens.verify_receipt`).

On a plaintext development server (no TLS, so no certificate) a write is attributed to the
region its own statement names: the region's anchors' signatures still decide whether it is
accepted. Never run a plaintext server where partners can reach it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, ClassVar, Protocol

import grpc

from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import registry_pb2 as rpb
from gateway.claims import ReceiptClaims
from gateway.grpc.auth import caller
from gateway.grpc.methods import MAX_SUBMISSION_REQUEST_BYTES, Method
from gateway.limits import MAX_STATUS_REQUEST_BYTES
from gateway.pki import Role
from gateway.runtime.gateway import Gateway
from gateway.tokens import Attestation, sign_receipt
from keys.errors import GatewayError, InvalidRequestError, OversizedError
from keys.jsonutil import loads_strict
from keys.keystore import KeyRole
from keys.records import SubmissionKind, SubmissionResult
from keys.signed import MAX_ENVELOPE_BYTES, MAX_SIGNED_BYTES, Envelope
from keys.timeutil import utcnow

_KINDS = {
    SubmissionKind.KEYSET: rpb.SUBMISSION_KIND_KEYSET,
    SubmissionKind.KEY_REVOCATION: rpb.SUBMISSION_KIND_KEY_REVOCATION,
    SubmissionKind.REVOCATIONS: rpb.SUBMISSION_KIND_REVOCATIONS,
}


class _Apply(Protocol):
    """A :class:`keys.trustregistry.TrustRegistry` submission method."""

    def __call__(
        self, submission: bytes, *, caller_region: str, now: datetime, actor: str | None = None
    ) -> Awaitable[SubmissionResult]: ...


def receipt(result: SubmissionResult, signed: Attestation) -> rpb.SubmissionReceipt:
    """The wire form of a submission's result, with its signed form ``signed``
    (:func:`gateway.tokens.sign_receipt`): the same values the signature covers, since
    :class:`ReceiptClaims` holds them under their proto names."""
    claims = ReceiptClaims.of(result)
    fields = {
        f.name: getattr(claims, f.name)
        for f in dataclasses.fields(claims)
        if f.name not in ("kind", "iat", "exp")  # kind is an enum on the wire; no window
    }
    return rpb.SubmissionReceipt(
        kind=_KINDS[result.kind],
        attestation=pb.Attestation(
            payload=signed.payload, key_id=signed.kid, alg=signed.alg, signature=signed.signature
        ),
        **fields,
    )


def statement_region(submission: bytes) -> str:
    """The region a submission's statement names (for the plaintext development server only).

    Raises :class:`keys.errors.MalformedError` / ``OversizedError``; an unparsable statement
    yields "" and is refused by the registry's own parsing.
    """
    envelope = Envelope.from_bytes(submission)
    try:
        region = loads_strict(envelope.signed, max_bytes=MAX_SIGNED_BYTES, max_depth=32).get(
            "region"
        )
    except (GatewayError, AttributeError):
        return ""
    return region if isinstance(region, str) else ""


class PartnerService:
    """Writes of a partner region's own keys and revocations; the status of home codes."""

    service = rpb.DESCRIPTOR.services_by_name["PartnerService"]
    methods: ClassVar[dict[str, Method]] = {
        **dict.fromkeys(
            ("PublishKeySet", "RevokeKey", "PublishRevocations"),
            Method((Role.PARTNER,), MAX_SUBMISSION_REQUEST_BYTES),
        ),
        "GetCodeStatus": Method((Role.PARTNER,), MAX_STATUS_REQUEST_BYTES),
    }

    def __init__(self, gateway: Gateway, tls: bool) -> None:
        self._gateway = gateway
        self._tls = tls

    async def _submit(
        self,
        request: rpb.SubmissionRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        apply: _Apply,
    ) -> rpb.SubmissionReceipt:
        peer = caller(context, self._tls)  # a partner: its role was checked before decoding
        data = request.submission
        if not data:
            raise InvalidRequestError("the submission is empty")
        if len(data) > MAX_ENVELOPE_BYTES:
            raise OversizedError(f"a submission is at most {MAX_ENVELOPE_BYTES} bytes")
        region = peer.name if peer is not None else statement_region(data)
        now = utcnow()
        result = await apply(data, caller_region=region, now=now)
        if not result.duplicate:
            await self._gateway.publish_trustlist()
        info, key = self._gateway.signer(KeyRole.ATTEST, now)
        return receipt(result, sign_receipt(info, key, now, result))

    async def PublishKeySet(
        self, request: rpb.SubmissionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> rpb.SubmissionReceipt:
        return await self._submit(request, context, self._gateway.trust.publish_keyset)

    async def RevokeKey(
        self, request: rpb.SubmissionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> rpb.SubmissionReceipt:
        return await self._submit(request, context, self._gateway.trust.revoke_key)

    async def PublishRevocations(
        self, request: rpb.SubmissionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> rpb.SubmissionReceipt:
        return await self._submit(request, context, self._gateway.trust.publish_revocations)

    async def GetCodeStatus(
        self, request: rpb.GetCodeStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> rpb.CodeStatusResponse:
        """A home code's status document (:class:`gateway.codestatus.CodeStatus`), for the
        calling partner's region."""
        peer = caller(context, self._tls)  # a partner: its role was checked before decoding
        document = await self._gateway.code_status.answer(
            code=request.code,
            code_id=request.code_id,
            nonce=request.nonce,
            asker="" if peer is None else peer.name,
            now=utcnow(),
        )
        return rpb.CodeStatusResponse(status_document=document)
