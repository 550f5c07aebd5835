"""Checking the gateway's answer to ``GetCodeStatus`` offline (docs/verifying.md, "Status
documents"): a partner keeps the document and verifies it with the gateway's published keys
(the trust list, ``GetGatewayKeys`` or a trust file), with no call to the gateway.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.tokens import GatewayTrust
from keys.model import HOME_REGION
from keys.statusdoc import GATEWAY_ISSUER, StatusClaims, StatusDocument
from keys.timeutil import ensure_utc

# Clock skew tolerated between the gateway and the partner checking its answer.
DEFAULT_SKEW = timedelta(minutes=5)


def verify_code_status(
    document: str,
    trust: GatewayTrust,
    now: datetime,
    *,
    code_id: str | None = None,
    nonce: str | None = None,
    skew: timedelta = DEFAULT_SKEW,
) -> StatusClaims:
    """Verify a status document the gateway signed, at ``now``, and return its claims.

    In this order: the header (JWS compact, ``typ`` trustgw-status+jwt, ``alg`` EdDSA, ES256 or
    SM2); the signature, over the exact bytes received, with the gateway's **attest** key
    ``kid`` (of the header's algorithm); the payload; then the rules: region 370000, issuer
    ``trustgw``, the key valid (and not withdrawn) at ``checked_at`` through ``checked_at +
    max_age``, ``checked_at`` no later than ``now + skew``, ``now`` no later than ``checked_at +
    max_age + skew``, and the ``code_id`` and ``nonce`` asked, when given. Whether to honour the
    code is the caller's: only ``status == "valid"`` with ``valid_from <= now <= valid_until``.

    Raises :class:`keys.errors.MalformedError` / ``OversizedError`` /
    ``AlgorithmUnsupportedError`` (the document), ``KeyUnknownError``, ``SignatureInvalidError``,
    ``KeyRevokedError``, ``KeyNotValidError`` (the key), ``StatusMismatchError`` (another
    question's answer, or a stale one).
    """
    now = ensure_utc(now)
    parsed = StatusDocument.parse(document)
    key = trust.find(parsed.kid, "attest")
    claims = parsed.verify(key.public_key)
    key.check_signed(claims.checked_at, claims.fresh_until)
    claims.check_answers(
        region=HOME_REGION,
        issuer=GATEWAY_ISSUER,
        code_id=claims.code_id if code_id is None else code_id,
        nonce=claims.nonce if nonce is None else nonce,
        now=now,
        skew=skew,
    )
    return claims


def new_nonce() -> str:
    """A fresh nonce for one question: 16 random bytes, base64url (22 characters)."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True)
class CodeStatusAnswer:
    """The gateway's answer to ``GetCodeStatus`` as received (nothing verified yet): the
    status document, the nonce asked with, and the id the gateway logged the call under."""

    document: str
    nonce: str
    server_request_id: str = ""

    def verify(
        self, trust: GatewayTrust, now: datetime, *, code_id: str | None = None
    ) -> StatusClaims:
        """:func:`verify_code_status` of the document, for this answer's nonce."""
        return verify_code_status(self.document, trust, now, code_id=code_id, nonce=self.nonce)


__all__ = ["DEFAULT_SKEW", "CodeStatusAnswer", "new_nonce", "verify_code_status"]
