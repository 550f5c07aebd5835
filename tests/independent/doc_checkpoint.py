"""A checkpoint's offline verifier, written from docs/verifying.md alone.

It imports nothing from the project: the trust file, the attestation and the home-province code
are read as that page describes them, and the validity rule is its five numbered steps
("When a signed output is valid"). Every refusal raises ``Refused(reason)`` with the page's
reason. Keys are Ed25519 (``cryptography``) or, for a gateway initialised with
``--gateway-algorithm SM2`` ("Algorithms"), SM2 over SM3 with the default signer id, checked
with pysmx, an SM2 of its own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pysmx.SM2 import Verify as sm2_verify

ROLES = ("attest", "issue", "place", "trustlist")  # verifying.md "The trust file"
# crypto.md §1.2: SEQUENCE { SEQUENCE { id-ecPublicKey, 1.2.156.10197.1.301 }, BIT STRING 04||X||Y }
SM2_SPKI_HEAD = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d03420004")
SM2_ID = b"1234567812345678"


@dataclass(frozen=True)
class Sm2Public:
    """verifying.md "Algorithms": SM2 over SM3, signer id 1234567812345678, raw r || s."""

    xy: bytes

    def verify(self, signature: bytes, data: bytes) -> None:
        if len(signature) != 64 or not sm2_verify(signature, data, self.xy, 64, uid=SM2_ID):
            raise InvalidSignature


class Refused(Exception):
    def __init__(self, reason: str, why: str = "") -> None:
        super().__init__(f"{reason}: {why}")
        self.reason = reason


def b64url_decode(text: str) -> bytes:
    if "=" in text or any(c in text for c in "+/ \n"):
        raise Refused("MALFORMED", "not base64url without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise Refused("MALFORMED", str(exc)) from exc


def canonical(value: Any) -> bytes:
    """verifying.md: canonical JSON (UTF-8, keys sorted, no insignificant white space)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class TrustedKey:
    kid: str
    role: str
    alg: str
    public: ed25519.Ed25519PublicKey | Sm2Public
    not_before: int
    not_after: int
    status: str
    revoked_at: int | None = None  # "the compromise time" of a withdrawn key


class TrustFile:
    """ "The trust file": region 370000 and its keys, each usable only for its own role."""

    def __init__(self, keys: list[TrustedKey]) -> None:
        self.keys = {(k.kid, k.role): k for k in keys}

    @classmethod
    def from_json(cls, data: bytes) -> TrustFile:
        doc = json.loads(data)
        assert doc["region"] == "370000"
        keys = []
        for entry in doc["keys"]:
            der = b64url_decode(entry["public_key"])
            # "The key id is the first 8 bytes of SHA-256 over the DER SubjectPublicKeyInfo"
            assert entry["kid"] == hashlib.sha256(der).hexdigest()[:16], entry
            assert entry["role"] in ROLES and entry["alg"] in ("EdDSA", "SM2")
            public: ed25519.Ed25519PublicKey | Sm2Public
            if entry["alg"] == "SM2":
                assert der.startswith(SM2_SPKI_HEAD) and len(der) == len(SM2_SPKI_HEAD) + 64
                public = Sm2Public(der[len(SM2_SPKI_HEAD) :])
            else:
                loaded = serialization.load_der_public_key(der)
                assert isinstance(loaded, ed25519.Ed25519PublicKey)
                public = loaded
            status = entry.get("status", "active")
            assert status in ("pending", "active", "retired", "revoked")
            keys.append(
                TrustedKey(
                    entry["kid"],
                    entry["role"],
                    entry["alg"],
                    public,
                    entry["not_before"],
                    entry["not_after"],
                    status,
                    entry.get("revoked_at"),
                )
            )
        return cls(keys)

    def check(
        self, role: str, kid: str, signed: bytes, signature: bytes, claims: Any, t: int
    ) -> None:
        """The five rules, in the page's order."""
        key = self.keys.get((kid, role))
        if key is None:  # 1
            raise Refused("KEY_UNKNOWN", f"no {role} key {kid}")
        try:
            key.public.verify(signature, signed)
        except InvalidSignature as exc:
            raise Refused("SIGNATURE_INVALID") from exc
        if key.status == "revoked" and key.revoked_at is None:  # 2
            raise Refused("KEY_REVOKED")
        iat, exp = claims.get("iat"), claims.get("exp")
        if type(iat) is not int or type(exp) is not int or exp < iat:  # 5 (form)
            raise Refused("MALFORMED", "iat/exp")
        if key.status == "revoked" and key.revoked_at is not None and iat >= key.revoked_at:  # 2
            raise Refused("KEY_REVOKED", "signed at or after the key's compromise time")
        if not key.not_before <= iat < key.not_after:  # 3
            raise Refused("KEY_NOT_VALID", "key not valid when the gateway signed")
        if exp > key.not_after:  # 4
            raise Refused("KEY_NOT_VALID", "outlives its key")
        if t < iat:  # 5
            raise Refused("CODE_NOT_YET_VALID")
        if t > exp:
            raise Refused("CODE_EXPIRED")


def verify_attestation(
    trust: TrustFile, payload: bytes, key_id: str, alg: str, signature: bytes, t: int
) -> dict[str, Any]:
    """ "Attestation format": the key's algorithm over exactly the payload bytes; check, then
    parse. "Algorithms": an ``alg`` that is not its key's is MALFORMED."""
    return _attest_form(trust, payload, key_id, alg, signature, t, "trustgw/attestation/v1")


def verify_home_code(trust: TrustFile, code: str, t: int) -> dict[str, Any]:
    """ "Home-province code format": SD1:<b64url(payload)>.<b64url(signature)>, the signature
    over the ASCII of the payload text."""
    if not code.startswith("SD1:") or code.count(".") != 1:
        raise Refused("MALFORMED", "not SD1:<payload>.<signature>")
    payload_text, signature_text = code[4:].split(".")
    payload = b64url_decode(payload_text)
    try:
        claims = json.loads(payload)
    except ValueError as exc:
        raise Refused("MALFORMED") from exc
    kid = claims.get("kid")  # a hint until the signature verifies
    if not isinstance(kid, str):
        raise Refused("MALFORMED", "kid")
    trust.check(
        "issue", kid, payload_text.encode("ascii"), b64url_decode(signature_text), claims, t
    )
    if canonical(claims) != payload:
        raise Refused("MALFORMED", "payload is not canonical JSON")
    if claims.get("typ") != "trustgw/home-code/v1" or claims.get("iss") != "370000":
        raise Refused("MALFORMED", "typ/iss")
    return claims


def is_home_code_id(value: object) -> bool:
    """`SD` + 30 lower-case hex digits (of SHA-256 over `370000|<region>|<source>`; for a
    partner code `<source>` is keyed under the gateway's secret, so only the shape is checked)."""
    return (
        isinstance(value, str)
        and len(value) == 32
        and value.startswith("SD")
        and all(c in "0123456789abcdef" for c in value[2:])
    )


def verify_receipt(
    trust: TrustFile, payload: bytes, key_id: str, alg: str, signature: bytes, t: int
) -> dict[str, Any]:
    """ "Submission receipts": the attestation form, an `attest` key, typ trustgw/receipt/v1."""
    return _attest_form(trust, payload, key_id, alg, signature, t, "trustgw/receipt/v1")


def _attest_form(
    trust: TrustFile, payload: bytes, key_id: str, alg: str, signature: bytes, t: int, typ: str
) -> dict[str, Any]:
    """The attestation form of "Attestation format" and "Submission receipts": an `attest` key's
    algorithm ("Algorithms": another ``alg`` is MALFORMED) over exactly the payload bytes;
    check, then parse; canonical JSON; ``typ`` and ``iss`` as given."""
    key = trust.keys.get((key_id, "attest"))
    if key is not None and alg != key.alg:
        raise Refused("MALFORMED", f"alg {alg} is not key {key_id}'s")
    try:
        claims = json.loads(payload)
    except ValueError as exc:
        raise Refused("MALFORMED") from exc
    trust.check("attest", key_id, payload, signature, claims, t)
    if canonical(claims) != payload:
        raise Refused("MALFORMED", "payload is not canonical JSON")
    if claims.get("typ") != typ or claims.get("iss") != "370000":
        raise Refused("MALFORMED", "typ/iss")
    return claims


def verify_trust_list(trust: TrustFile, envelope: bytes, t: int) -> dict[str, Any]:
    """trust-registry.md §3 and §9: a full list signed by a trusted `trustlist` key whose window
    covers the list's, valid for ``issued_at <= t < expires``, its content matching its digest."""
    try:
        outer = json.loads(envelope)
    except ValueError as exc:
        raise Refused("MALFORMED") from exc
    if not isinstance(outer, dict) or set(outer) != {"signed", "signatures"}:
        raise Refused("MALFORMED", "envelope members")
    signed = b64url_decode(outer["signed"])
    statement = json.loads(signed)
    if canonical(statement) != signed:
        raise Refused("MALFORMED", "signed bytes are not canonical")
    if statement.get("type") != "trustgw/trustlist/v1":
        raise Refused("MALFORMED", "not a full trust list")
    issued, expires = statement["issued_at"], statement["expires"]
    good = False
    for signature in outer["signatures"]:
        key = trust.keys.get((signature["keyid"], "trustlist"))
        if key is None or key.status == "revoked":
            continue  # unknown key ids are ignored (§3)
        try:
            key.public.verify(b64url_decode(signature["sig"]), signed)
        except InvalidSignature:
            continue
        if key.not_before <= issued and expires <= key.not_after:
            good = True
    if not good:
        raise Refused("SIGNATURE_INVALID", "no signature by a trusted trustlist key")
    if t < issued:
        raise Refused("TRUSTLIST_NOT_YET_VALID")
    if t >= expires:
        raise Refused("TRUSTLIST_EXPIRED")
    content = statement["content"]
    if hashlib.sha256(canonical(content)).hexdigest() != statement["content_digest"]:
        raise Refused("TRUSTLIST_CONFLICT", "content does not match its digest")
    keys = [(k["owner"], k["kid"]) for k in content["keys"]]
    if keys != sorted(keys):
        raise Refused("MALFORMED", "keys not sorted by (owner, kid)")
    return statement
