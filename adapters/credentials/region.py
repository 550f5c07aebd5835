"""A partner region's own code, verified offline through that region's adapter.

The adapter (:data:`adapters.regions.ADAPTERS`) runs decode -> verify -> translate exactly as the
gateway does, against a tiny in-memory key lookup holding the partner key(s) given; then the
code's validity is applied at ``now``: issued-at not in the future, not expired, not older than the
region's maximum age. Holder identifiers are pseudonymised under a throwaway random secret (the
output never shows them, and nothing is stored).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.codecs.encoding import parse_json
from adapters.credentials import step
from adapters.regions import ADAPTERS
from keys.crypto import PublicKey, load_public_key
from keys.errors import (
    AlgorithmUnsupportedError,
    CodeExpiredError,
    CodeNotYetValidError,
    CodeTooOldError,
    ForeignDataError,
    KeyNotValidError,
    KeyRevokedError,
    KeyUnknownError,
    SignatureInvalidError,
)
from keys.keyid import require_kid
from keys.model import RegionKey
from keys.pseudonym import Pseudonymiser
from keys.timeutil import ensure_utc, from_unix, to_iso, to_unix

MAX_TRUST_BYTES = 256 * 1024
MAX_KEYS = 64
# Keys given on the command line carry no validity of their own: the widest range there is.
_EVER = (from_unix(946_684_800), from_unix(7_258_118_400))
_STEP_OF_REASON = {
    KeyUnknownError.reason: "KEY",
    AlgorithmUnsupportedError.reason: "VERIFY",
    SignatureInvalidError.reason: "VERIFY",
    KeyNotValidError.reason: "KEY",
    KeyRevokedError.reason: "KEY",
}


@dataclass(frozen=True)
class PartnerKeys:
    """The partner keys an offline check trusts, as a :class:`keys.model.KeyLookup`.

    A single key whose kid was not given (no JWK ``kid``, no ``--kid``) answers to any kid
    hint: the trust file names one key, and its signature must still verify.
    """

    keys: tuple[RegionKey, ...]
    any_kid: bool = False

    @classmethod
    def from_bytes(cls, region: str, data: bytes, kid: str | None = None) -> PartnerKeys:
        """PEM, DER, X.509 certificate, a JWK, a JWKS or a known-answer vector file.

        Raises ``ValueError`` for a region that is not a partner or an unusable file.
        """
        if region not in ADAPTERS:
            raise ValueError(f"{region!r} is not a partner region")
        if len(data) > MAX_TRUST_BYTES:
            raise ValueError(f"the key file exceeds {MAX_TRUST_BYTES} bytes")
        try:
            found = _load(data)
        except ForeignDataError as exc:
            raise ValueError(f"not a public key, certificate, JWK or JWKS ({exc})") from None
        if not found:
            raise ValueError("the key file holds no public key")
        if kid is not None:
            if len(found) != 1:
                raise ValueError("--kid applies to a file holding one key")
            found = [(kid, found[0][1])]
        keys = tuple(
            RegionKey(region, name or key.fingerprint(), key, *_EVER) for name, key in found
        )
        return cls(keys, any_kid=len(found) == 1 and found[0][0] is None)

    def keys_for(self, region: str, kid_hint: str | None) -> tuple[RegionKey, ...]:
        """The region's keys, narrowed to ``kid_hint`` unless it is None or any key may be tried."""
        mine = tuple(k for k in self.keys if k.region == region)
        if kid_hint is None or self.any_kid:
            return mine
        return tuple(k for k in mine if k.kid == kid_hint)


def _load(data: bytes) -> list[tuple[str | None, PublicKey]]:
    if not data.lstrip().startswith(b"{"):
        return [(None, load_public_key(data))]
    document = parse_json(data, limit=MAX_TRUST_BYTES)
    if not isinstance(document, dict):
        raise ValueError("the key file is not a JSON object")
    if isinstance(document.get("keys"), list):  # a JWKS
        jwks: list[Any] = document["keys"][: MAX_KEYS + 1]
        if len(jwks) > MAX_KEYS:
            raise ValueError(f"the JWKS holds more than {MAX_KEYS} keys")
        return [_jwk(jwk) for jwk in jwks]
    key_member = document.get("key")
    if isinstance(key_member, dict) and isinstance(key_member.get("public_jwk"), dict):
        kid = document.get("kid")  # a known-answer vector file (tests/vectors)
        return [(kid if isinstance(kid, str) else None, _jwk(key_member["public_jwk"])[1])]
    return [_jwk(document)]


def _jwk(jwk: Any) -> tuple[str | None, PublicKey]:
    if not isinstance(jwk, dict):
        raise ValueError("a JWK is not a JSON object")
    if "d" in jwk:
        raise ValueError("the key file holds private key material")
    kid = jwk.get("kid")
    public = {name: jwk[name] for name in ("kty", "crv", "x", "y") if name in jwk}
    if kid is not None and kid != "":
        require_kid(kid, "the JWK's kid")  # the one key-id rule (keys.keyid)
    return (kid if isinstance(kid, str) and kid else None, load_public_key(public))


def verify(
    region: str,
    text: str,
    keys: PartnerKeys,
    now: datetime,
    verified: dict[Any, Any] | None = None,
) -> Mapping[str, Any]:
    """Verify one code of ``region`` at ``now``; return its canonical status as JSON claims.

    Raises a :class:`keys.errors.ForeignDataError` subclass whose message names the step. Once
    the signature verified, the claims are also put in ``verified``.
    """
    adapter = ADAPTERS[region]
    now = ensure_utc(now)
    try:
        result = adapter.decode(text, keys, Pseudonymiser(secrets.token_bytes(32)))
    except ForeignDataError as exc:  # the adapter names the problem; add the step's name
        name = _STEP_OF_REASON.get(exc.reason, "DECODE")
        exc.message = f"{name}: {exc.message}"
        exc.args = (exc.message,)
        raise
    status = result.status
    claims = {
        "region": status.region,
        "mode": str(adapter.mode),
        "kid": status.kid,
        "code_id": status.code_id,
        "holder": status.holder,
        "colour": str(status.colour),
        "iat": to_unix(status.issued_at),
        "exp": to_unix(status.expires_at),
    }
    if verified is not None:
        verified.update(claims)
    with step("VALIDITY"):
        if status.issued_at > now:
            raise CodeNotYetValidError(f"the code is issued at {to_iso(status.issued_at)}")
        if now > status.expires_at:
            raise CodeExpiredError(f"the code expired at {to_iso(status.expires_at)}")
        if now - status.issued_at > adapter.spec.max_age:
            raise CodeTooOldError(
                f"the code was issued more than {adapter.spec.max_age} before {to_iso(now)}"
            )
    return claims


__all__ = ["PartnerKeys", "verify"]
