"""What the gateway signs: decision attestations and converted home-province codes.

Both formats live here, signer and verifier side by side, so that they cannot drift apart. The
verifier side needs only the gateway's public keys (a trust file, see :class:`GatewayTrust`) and
no network: a checkpoint can keep a decision and check it later, offline.

Attestation: ``payload`` is canonical JSON (UTF-8, sorted keys, no spaces); the signature is
Ed25519 over exactly those bytes. Verifiers check the bytes they received, then parse them.

Home-province code: ``SD1:`` + base64url(payload) + ``.`` + base64url(signature), the payload
being canonical JSON that names its key id; the signature covers the base64url payload text as
it stands in the code (the bytes before the ``.``), so nothing is re-serialised to verify.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keys.crypto import Algorithm, PrivateKey, PublicKey, b64url_decode, b64url_encode
from keys.errors import (
    CodeExpiredError,
    CodeNotYetValidError,
    KeyNotValidError,
    KeyUnknownError,
    MalformedError,
    OversizedError,
)
from keys.model import HOME_REGION
from keys.timeutil import ensure_utc, from_unix, to_unix

ATTESTATION_TYPE = "trustgw/attestation/v1"
HOME_CODE_TYPE = "trustgw/home-code/v1"
HOME_CODE_PREFIX = "SD1:"
MAX_TOKEN_BYTES = 4096
MAX_TRUST_FILE_BYTES = 256 * 1024


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_TOKEN_BYTES:
        raise OversizedError(f"the {what} is larger than {MAX_TOKEN_BYTES} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise MalformedError(f"the {what} is not JSON") from None
    if not isinstance(obj, dict):
        raise MalformedError(f"the {what} is not a JSON object")
    return obj


# --- the trust file: the gateway's public keys -----------------------------------------------


@dataclass(frozen=True)
class TrustedKey:
    kid: str
    role: str  # "attest" | "issue"
    public_key: PublicKey
    not_before: datetime
    not_after: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "role": self.role,
            "alg": str(self.public_key.alg),
            "public_key": b64url_encode(self.public_key.spki),
            "not_before": to_unix(self.not_before),
            "not_after": to_unix(self.not_after),
        }


@dataclass(frozen=True)
class GatewayTrust:
    """The gateway's public keys, as a verifier holds them."""

    region: str
    keys: tuple[TrustedKey, ...]

    def key(self, kid: str, role: str, signed_at: datetime) -> TrustedKey:
        """The key ``kid`` of ``role``, which must have been valid at ``signed_at``."""
        for key in self.keys:
            if key.kid == kid and key.role == role:
                if not key.not_before <= signed_at <= key.not_after:
                    raise KeyNotValidError(
                        f"gateway key {kid} was not valid at signing time", kid=kid
                    )
                return key
        raise KeyUnknownError(f"no trusted gateway {role} key {kid!r}", kid=kid)

    def to_json(self) -> dict[str, Any]:
        return {"region": self.region, "keys": [k.to_json() for k in self.keys]}

    @classmethod
    def from_json(cls, data: bytes | str | Mapping[str, Any]) -> GatewayTrust:
        """Parse a trust file; raises :class:`MalformedError`."""
        if isinstance(data, (bytes, str)):
            raw = data.encode() if isinstance(data, str) else data
            if len(raw) > MAX_TRUST_FILE_BYTES:
                raise OversizedError("the trust file is too large")
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError):
                raise MalformedError("the trust file is not JSON") from None
        else:
            obj = data
        try:
            keys = tuple(
                TrustedKey(
                    kid=str(k["kid"]),
                    role=str(k["role"]),
                    public_key=PublicKey.from_spki(
                        b64url_decode(str(k["public_key"])), Algorithm(str(k["alg"]))
                    ),
                    not_before=from_unix(int(k["not_before"])),
                    not_after=from_unix(int(k["not_after"])),
                )
                for k in obj["keys"]
            )
            return cls(region=str(obj.get("region", HOME_REGION)), keys=keys)
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedError(f"the trust file is not valid: {exc}") from None


# --- attestations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Attestation:
    payload: bytes
    kid: str
    alg: str
    signature: bytes

    def to_json(self) -> dict[str, str]:
        return {
            "payload": b64url_encode(self.payload),
            "key_id": self.kid,
            "alg": self.alg,
            "signature": b64url_encode(self.signature),
        }

    @classmethod
    def from_json(cls, data: bytes | str) -> Attestation:
        obj = _parse_json_object(data.encode() if isinstance(data, str) else data, "attestation")
        try:
            return cls(
                payload=b64url_decode(str(obj["payload"])),
                kid=str(obj["key_id"]),
                alg=str(obj["alg"]),
                signature=b64url_decode(str(obj["signature"])),
            )
        except KeyError as exc:
            raise MalformedError(f"the attestation lacks {exc.args[0]!r}") from None


def sign_attestation(claims: Mapping[str, Any], kid: str, key: PrivateKey) -> Attestation:
    """Sign a decision. ``claims`` must hold at least ``iat`` and ``exp`` (unix seconds)."""
    payload = canonical_json({"typ": ATTESTATION_TYPE, "iss": HOME_REGION, **claims})
    return Attestation(payload, kid, str(key.alg), key.sign(payload))


def verify_attestation(att: Attestation, trust: GatewayTrust, now: datetime) -> dict[str, Any]:
    """Verify an attestation offline and return its claims.

    Raises :class:`KeyUnknownError`, :class:`SignatureInvalidError`, :class:`CodeExpiredError`
    or :class:`MalformedError`.
    """
    now = ensure_utc(now)
    # The signature first, over the exact bytes; the signing time comes from the payload, so
    # try the key as named and only trust the payload's times once the signature holds.
    candidates = [k for k in trust.keys if k.kid == att.kid and k.role == "attest"]
    if not candidates:
        raise KeyUnknownError(f"no trusted gateway attest key {att.kid!r}", kid=att.kid)
    if att.alg != str(candidates[0].public_key.alg):
        raise MalformedError(f"attestation algorithm {att.alg[:16]!r} does not match key {att.kid}")
    candidates[0].public_key.verify(att.payload, att.signature)
    claims = _parse_json_object(att.payload, "attestation payload")
    if claims.get("typ") != ATTESTATION_TYPE:
        raise MalformedError("the payload is not a trustgw attestation")
    _check_window(claims, now, "attestation")
    trust.key(att.kid, "attest", from_unix(claims["iat"]))
    return claims


# --- converted home-province codes -------------------------------------------------------------


def home_code_id(region: str, source_code_id: str) -> str:
    """The converted code's id: the same source code always yields the same id."""
    digest = hashlib.sha256(f"{HOME_REGION}|{region}|{source_code_id}".encode()).hexdigest()
    return "SD" + digest[:30]


def sign_home_code(claims: Mapping[str, Any], kid: str, key: PrivateKey) -> str:
    """Issue a home-province code. ``claims`` holds id, holder, colour, iat, exp and src."""
    payload = canonical_json({"typ": HOME_CODE_TYPE, "iss": HOME_REGION, "kid": kid, **claims})
    body = b64url_encode(payload)
    signature = key.sign(body.encode("ascii"))
    return f"{HOME_CODE_PREFIX}{body}.{b64url_encode(signature)}"


def home_code_kid(code: str) -> str:
    """The key id a home-province code names (unverified: for display and lookup only)."""
    body = code[len(HOME_CODE_PREFIX) :].partition(".")[0]
    return str(_parse_json_object(b64url_decode(body), "home code payload").get("kid", ""))


def verify_home_code(code: str, trust: GatewayTrust, now: datetime) -> dict[str, Any]:
    """Verify a converted home-province code offline and return its claims.

    Raises :class:`MalformedError`, :class:`KeyUnknownError`, :class:`SignatureInvalidError` or
    :class:`CodeExpiredError`.
    """
    now = ensure_utc(now)
    code = code.strip()
    if len(code) > MAX_TOKEN_BYTES:
        raise OversizedError("the code is too long")
    if not code.startswith(HOME_CODE_PREFIX):
        raise MalformedError(f"a home-province code starts with {HOME_CODE_PREFIX}")
    body, sep, sig_text = code[len(HOME_CODE_PREFIX) :].partition(".")
    if not sep or "." in sig_text:
        raise MalformedError("a home-province code has two dot-separated parts")
    payload = b64url_decode(body)
    signature = b64url_decode(sig_text)
    # The key id sits inside the payload; it is only a hint until the signature verifies.
    hint = _parse_json_object(payload, "home code payload").get("kid")
    candidates = [k for k in trust.keys if k.kid == hint and k.role == "issue"]
    if not candidates:
        raise KeyUnknownError(
            f"no trusted gateway issue key {str(hint)[:40]!r}", kid=str(hint)[:40]
        )
    candidates[0].public_key.verify(body.encode("ascii"), signature)
    claims = _parse_json_object(payload, "home code payload")
    if claims.get("typ") != HOME_CODE_TYPE:
        raise MalformedError("the payload is not a trustgw home-province code")
    _check_window(claims, now, "code")
    trust.key(str(hint), "issue", from_unix(claims["iat"]))
    return claims


def _check_window(claims: Mapping[str, Any], now: datetime, what: str) -> None:
    try:
        iat = from_unix(claims["iat"])
        exp = from_unix(claims["exp"])
    except (KeyError, ValueError):
        raise MalformedError(f"the {what} lacks valid iat/exp times") from None
    if now < iat:
        raise CodeNotYetValidError(f"the {what} is not valid before {iat.isoformat()}")
    if now > exp:
        raise CodeExpiredError(f"the {what} expired at {exp.isoformat()}")
