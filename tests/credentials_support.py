"""Build EU DCC (HC1) codes and SMART Health Cards with TEST keys, for the verify tests.

Everything is written from the public specifications, independently of the verifiers under test
(only the generic CBOR/JSON/compression helpers are shared).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from datetime import datetime, timedelta
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from adapters.codecs.encoding import b45encode, b64url_encode
from keys.crypto import Algorithm, PrivateKey

UTC_2021 = datetime(2021, 6, 1, 12, 0)
EKU_TEST = "1.3.6.1.4.1.1847.2021.1.1"
EKU_VACCINATION = "1.3.6.1.4.1.1847.2021.1.2"
EKU_RECOVERY = "1.3.6.1.4.1.1847.2021.1.3"
COSE_ALG = {Algorithm.ES256: -7, Algorithm.EDDSA: -8, Algorithm.PS256: -37}


def _crypto_key(key: PrivateKey) -> Any:
    loaded = serialization.load_pem_private_key(key.to_pem(None), password=None)
    return loaded


def certificate(key: PrivateKey, eku: list[str] | None = None, *, serial: int = 1234) -> bytes:
    """A self-signed DER signer certificate for ``key`` with the given extended key usages."""
    private = _crypto_key(key)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TEST DSC")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(serial)
        .not_valid_before(UTC_2021 - timedelta(days=365))
        .not_valid_after(UTC_2021 + timedelta(days=365))
    )
    if eku is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.ObjectIdentifier(o) for o in eku]), critical=False
        )
    digest = None if isinstance(private, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(private, digest).public_bytes(serialization.Encoding.DER)


def non_der_serial(der: bytes) -> bytes:
    """The same certificate with its serial number spelt with a needless leading zero octet
    (INTEGER 1234 becomes 00 04, a BER spelling DER forbids and cryptography refuses)."""
    marker = bytes((0x02, 0x02, 0x04, 0xD2))  # INTEGER 1234
    index = der.index(marker)
    return der[:index] + bytes((0x02, 0x02, 0x00, 0x04)) + der[index + 4 :]


def kid_of(der: bytes) -> bytes:
    return hashlib.sha256(der).digest()[:8]


def dcc_claims(iat: int, exp: int, kind: str = "v", **extra: Any) -> dict[Any, Any]:
    entry = {"v": {"tg": "840539006", "dn": 1, "sd": 2}, "t": {"tg": "840539006", "tt": "LP6464-4"},
             "r": {"tg": "840539006", "fr": "2021-01-01"}}[kind]  # fmt: skip
    return {1: "XX", 6: iat, 4: exp, -260: {1: {"ver": "1.3.0", kind: [entry]}}, **extra}


def dcc_code(
    key: PrivateKey,
    claims: Any,
    *,
    kid: bytes | None,
    kid_where: str = "protected",
    alg_where: str = "protected",
    tags: tuple[int, ...] = (18,),
    compress: bool = True,
    prefix: str = "HC1:",
    payload: bytes | None = None,
    signature: bytes | None = None,
) -> str:
    """An HC1 code built by hand (COSE_Sign1 over CWT claims), with knobs for real-world quirks."""
    protected_map: dict[int, Any] = {}
    unprotected: dict[int, Any] = {}
    (protected_map if alg_where == "protected" else unprotected)[1] = COSE_ALG[key.alg]
    if kid is not None:
        (protected_map if kid_where == "protected" else unprotected)[4] = kid
    protected = cbor2.dumps(protected_map) if protected_map else b""
    body = payload if payload is not None else cbor2.dumps(claims)
    to_sign = cbor2.dumps(["Signature1", protected, b"", body])
    message: Any = [protected, unprotected, body, signature or key.sign(to_sign)]
    for tag in reversed(tags):
        message = cbor2.CBORTag(tag, message)
    raw = cbor2.dumps(message)
    return prefix + b45encode(zlib.compress(raw, 9) if compress else raw)


# --- SMART Health Cards -----------------------------------------------------------------------


def shc_issuer(seed: bytes = b"shc-test") -> tuple[PrivateKey, dict[str, str]]:
    """A P-256 TEST key and its public JWK, kid = RFC 7638 thumbprint."""
    key = PrivateKey.from_p256_scalar(hashlib.sha256(seed).digest())
    jwk = key.public_key().to_jwk()
    canonical = json.dumps(
        {m: jwk[m] for m in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
    )
    kid = b64url_encode(hashlib.sha256(canonical.encode()).digest())
    return key, {**jwk, "kid": kid, "use": "sig", "alg": "ES256"}


def shc_payload(nbf: float, *, exp: float | None = None, rid: str | None = None) -> dict[str, Any]:
    vc: dict[str, Any] = {
        "type": ["https://smarthealth.cards#health-card"],
        "credentialSubject": {"fhirVersion": "4.0.1", "fhirBundle": {"resourceType": "Bundle"}},
    }
    if rid is not None:
        vc["rid"] = rid
    payload: dict[str, Any] = {"iss": "https://issuer.test", "nbf": nbf, "vc": vc}
    if exp is not None:
        payload["exp"] = exp
    return payload


def shc_card(
    key: PrivateKey,
    kid: str,
    payload: Any,
    *,
    header: dict[str, Any] | None = None,
    raw_payload: bytes | None = None,
) -> str:
    """A compact JWS as an SHC issuer writes it: zip DEF, ES256 raw r||s."""
    head = header if header is not None else {"zip": "DEF", "alg": "ES256", "kid": kid}
    if raw_payload is None:
        deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
        raw_payload = deflater.compress(json.dumps(payload).encode()) + deflater.flush()
    signing_input = (
        b64url_encode(json.dumps(head, separators=(",", ":")).encode())
        + "."
        + b64url_encode(raw_payload)
    )
    return signing_input + "." + b64url_encode(key.sign(signing_input.encode()))


def numeric(jws: str) -> str:
    return "".join(f"{ord(c) - 45:02d}" for c in jws)


def numeric_chunks(jws: str, count: int) -> list[str]:
    size = -(-len(jws) // count)
    parts = [jws[i : i + size] for i in range(0, len(jws), size)]
    return [f"shc:/{i}/{len(parts)}/{numeric(part)}" for i, part in enumerate(parts, 1)]
