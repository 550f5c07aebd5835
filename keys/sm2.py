"""SM2 through tongsuopy: the binding's import, the curve's constants and the key loaders.

keys/crypto.py is the one funnel for keys; this module is its SM2 half (docs/crypto.md §1): where
the Tongsuo binding is absent (no wheel for the platform) ``SM2_AVAILABLE`` is false and every
SM2 operation is refused with ``ALGORITHM_UNSUPPORTED``.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import hashes

from keys.der import pem_blocks
from keys.errors import AlgorithmUnsupportedError, MalformedError

try:  # SM2 is a native binding with wheels for linux x86_64, macOS and Windows (docs/crypto.md)
    from tongsuopy.crypto import hashes as sm_hashes
    from tongsuopy.crypto import serialization as sm_serialization
    from tongsuopy.crypto.asymciphers import ec as sm_ec

    SM2_AVAILABLE = True
except ImportError:  # pragma: no cover - only where no tongsuopy wheel exists
    sm_hashes = sm_serialization = sm_ec = None
    SM2_AVAILABLE = False

# GB/T 32918.5-2017 / GM/T 0003.5-2012: the recommended 256-bit curve's order n, and the signer
# id every SM2 signature here uses (GM/T 0009-2012 §10: the default when none is agreed). The
# library computes Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA) with it and signs
# e = SM3(Z || M).
SM2_ORDER = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
SM2_DEFAULT_ID = b"1234567812345678"
OID_SM2_CURVE = "1.2.156.10197.1.301"
# DER of that OID, as it appears in a SubjectPublicKeyInfo's algorithm parameters.
_SM2_OID_DER = bytes.fromhex("06082a811ccf5501822d")
# DER of SM4-CBC (1.2.156.10197.1.104.2): Tongsuo's cipher for an encrypted PKCS#8 key.
_SM4_CBC_OID_DER = bytes.fromhex("06082a811ccf55016802")


def require_sm2() -> None:
    """Raise :class:`AlgorithmUnsupportedError` where the SM2 binding is not installed."""
    if not SM2_AVAILABLE:  # pragma: no cover - only where no tongsuopy wheel exists
        raise AlgorithmUnsupportedError(
            "SM2 needs the tongsuopy package, which is not installed on this platform"
        )


def is_sm2_spki(der: bytes) -> bool:
    """Whether ``der`` looks like a SubjectPublicKeyInfo naming the SM2 curve.

    Only a routing hint: the bytes then go through the library's strict DER loader. The SPKI
    is ``SEQUENCE { SEQUENCE { id-ecPublicKey, sm2 }, BIT STRING }``; the curve OID sits in the
    first 30 bytes.
    """
    return len(der) < 256 and der[:1] == b"\x30" and _SM2_OID_DER in der[:32]


def load_sm2_spki(der: bytes) -> Any:
    """The library's SM2 public key from a canonical DER SubjectPublicKeyInfo, or
    :class:`MalformedError`."""
    require_sm2()
    try:
        key = sm_serialization.load_der_public_key(der)
    except Exception:
        raise MalformedError("not a DER SM2 SubjectPublicKeyInfo") from None
    if not isinstance(key, sm_ec.EllipticCurvePublicKey) or key.curve.name != "SM2":
        raise MalformedError("not a DER SM2 SubjectPublicKeyInfo")
    # One spelling: the canonical re-encoding must be what was given.
    canonical = key.public_bytes(
        sm_serialization.Encoding.DER, sm_serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if canonical != der:
        raise MalformedError("the SM2 SubjectPublicKeyInfo is not in its canonical form")
    return key


def is_sm2_private_pem(pem: bytes) -> bool:
    """Whether a PKCS#8 PEM holds an SM2 key: unencrypted it names the curve OID; encrypted by
    Tongsuo it names SM4-CBC (1.2.156.10197.1.104.2), which pyca/cryptography cannot read."""
    blocks = pem_blocks(pem, "PRIVATE KEY") or pem_blocks(pem, "ENCRYPTED PRIVATE KEY")
    if len(blocks) != 1:
        return False
    return _SM2_OID_DER in blocks[0][:64] or _SM4_CBC_OID_DER in blocks[0][:96]


def load_sm2_private_pem(pem: bytes, passphrase: bytes | None) -> Any:
    """The library's SM2 private key from a PKCS#8 PEM (encrypted with ``passphrase``), or
    :class:`MalformedError` (wrong passphrase included)."""
    require_sm2()
    try:
        key = sm_serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError) as exc:
        raise MalformedError(f"cannot load private key: {exc}") from None
    except Exception:
        raise MalformedError("cannot load private key") from None
    if not isinstance(key, sm_ec.EllipticCurvePrivateKey) or key.curve.name != "SM2":
        raise AlgorithmUnsupportedError("the private key is not an SM2 key")
    return key


# The recommended curve's a, b, xG, yG (GB/T 32918.5), as Z_A hashes them.
RECOMMENDED_CURVE = (
    bytes.fromhex("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC"),
    bytes.fromhex("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93"),
    bytes.fromhex("32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7"),
    bytes.fromhex("BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0"),
)


def z_value(
    point: bytes,
    signer_id: bytes = SM2_DEFAULT_ID,
    curve: tuple[bytes, bytes, bytes, bytes] = RECOMMENDED_CURVE,
) -> bytes:
    """Z_A of GB/T 32918.2 §5.5 for the uncompressed point ``04 || X || Y``, over SM3: what
    every SM2 signature here hashes before the message. Glue only (the library computes the same
    inside its signer); kept to state and test the signer-id rule. ``curve`` is (a, b, xG, yG):
    the recommended curve's, or another's for the standard's own examples (GB/T 32918.2 Annex A
    works on a test curve)."""
    if len(signer_id) >= 8192:
        raise ValueError("the SM2 signer id is shorter than 8192 bytes (ENTL is 16 bits)")
    digest = hashes.Hash(hashes.SM3())
    for part in ((len(signer_id) * 8).to_bytes(2, "big"), signer_id, *curve):
        digest.update(part)
    digest.update(point[1:])
    return digest.finalize()


__all__ = [
    "OID_SM2_CURVE",
    "RECOMMENDED_CURVE",
    "SM2_AVAILABLE",
    "SM2_DEFAULT_ID",
    "SM2_ORDER",
    "is_sm2_private_pem",
    "is_sm2_spki",
    "load_sm2_private_pem",
    "load_sm2_spki",
    "require_sm2",
    "sm_ec",
    "sm_hashes",
    "sm_serialization",
    "z_value",
]
