"""One funnel for keys: load, sign, verify.

Every public or private key the gateway handles goes through this module. It turns PEM, DER,
X.509 certificates, JWKs and raw bytes into the algorithms the gateway accepts, and every failure
into the project's errors. No crypto primitive is written here: Ed25519 uses pynacl (about twice
as fast as cryptography for verification), ECDSA P-256 and RSA-PSS use pyca/cryptography, and
SM2 over SM3 (GB/T 32918, GB/T 32905) uses tongsuopy, the Tongsuo project's binding (pyca/
cryptography has SM3 but no SM2 curve; docs/crypto.md compares the candidates and says why).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import nacl.exceptions
import nacl.signing
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from keys.der import pem_blocks, read_certificate
from keys.errors import AlgorithmUnsupportedError, MalformedError, SignatureInvalidError
from keys.sm2 import (
    SM2_AVAILABLE,
    SM2_DEFAULT_ID,
    SM2_ORDER,
    is_sm2_private_pem,
    is_sm2_spki,
    load_sm2_private_pem,
    load_sm2_spki,
    require_sm2,
    sm_ec,
    sm_hashes,
    sm_serialization,
    z_value,
)

MAX_KEY_BYTES = 16 * 1024


class Algorithm(StrEnum):
    """Signature algorithms, named as in JOSE."""

    EDDSA = "EdDSA"  # Ed25519
    ES256 = "ES256"  # ECDSA P-256 SHA-256, raw 64-byte r||s signatures
    PS256 = "PS256"  # RSASSA-PSS SHA-256, MGF1 SHA-256, 32-byte salt
    # SM2 signature over SM3 with the default signer id, raw 64-byte r||s signatures. JOSE and
    # COSE register no name for it; "SM2" is this project's (docs/crypto.md).
    SM2 = "SM2"

    @classmethod
    def parse(cls, value: str) -> Algorithm:
        """The algorithm named ``value`` (JOSE name); raises :class:`AlgorithmUnsupportedError` for
        any other.
        """
        try:
            return cls(value)
        except ValueError:
            raise AlgorithmUnsupportedError(
                f"signature algorithm {value[:32]!r} is not accepted"
            ) from None


def b64url_encode(data: bytes) -> str:
    """base64url (RFC 4648 section 5) without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes, *, limit: int = 64 * 1024) -> bytes:
    """Strict base64url without padding; raises :class:`MalformedError`."""
    if isinstance(text, str):
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            raise MalformedError("base64url text holds non-ASCII characters") from None
    else:
        raw = text
    if len(raw) > limit:
        raise MalformedError(f"base64url text longer than {limit} characters")
    if b"=" in raw or len(raw) % 4 == 1:
        raise MalformedError("base64url text is not canonical")
    try:
        data = base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)
    except ValueError:
        raise MalformedError("base64url text holds invalid characters") from None
    # One spelling per byte string: refuse set unused bits in the last character.
    if base64.urlsafe_b64encode(data).rstrip(b"=") != raw:
        raise MalformedError("base64url text is not canonical")
    return data


@dataclass(frozen=True)
class PublicKey:
    """A verification key for one algorithm.

    ``spki`` is the DER SubjectPublicKeyInfo: the canonical bytes stored and compared.
    """

    alg: Algorithm
    spki: bytes
    _impl: Any = field(repr=False, compare=False, hash=False)

    # -- constructors ------------------------------------------------------------------

    @classmethod
    def from_ed25519_raw(cls, raw: bytes) -> PublicKey:
        """An Ed25519 key from its 32 raw bytes; raises :class:`MalformedError` for any other length
        or a point that does not load.
        """
        if len(raw) != 32:
            raise MalformedError("an Ed25519 public key has 32 bytes")
        try:
            impl = nacl.signing.VerifyKey(raw)
            spki = ed25519.Ed25519PublicKey.from_public_bytes(raw).public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        except Exception:
            raise MalformedError("not a valid Ed25519 public key") from None
        return cls(Algorithm.EDDSA, spki, impl)

    @classmethod
    def from_crypto(cls, key: Any, alg: Algorithm | None = None) -> PublicKey:
        """From a pyca/cryptography public key object."""
        if isinstance(key, ed25519.Ed25519PublicKey):
            if alg not in (None, Algorithm.EDDSA):
                raise AlgorithmUnsupportedError(f"an Ed25519 key cannot be used for {alg}")
            return cls.from_ed25519_raw(
                key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            )
        if SM2_AVAILABLE and isinstance(key, sm_ec.EllipticCurvePublicKey):
            if key.curve.name != "SM2":
                raise AlgorithmUnsupportedError(f"elliptic curve {key.curve.name} is not accepted")
            if alg not in (None, Algorithm.SM2):
                raise AlgorithmUnsupportedError(f"an SM2 key cannot be used for {alg}")
            return cls(
                Algorithm.SM2,
                key.public_bytes(
                    sm_serialization.Encoding.DER,
                    sm_serialization.PublicFormat.SubjectPublicKeyInfo,
                ),
                key,
            )
        spki = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise AlgorithmUnsupportedError(f"elliptic curve {key.curve.name} is not accepted")
            if alg not in (None, Algorithm.ES256):
                raise AlgorithmUnsupportedError(f"a P-256 key cannot be used for {alg}")
            return cls(Algorithm.ES256, spki, key)
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 2048:
                raise AlgorithmUnsupportedError("RSA keys shorter than 2048 bits are not accepted")
            if alg not in (None, Algorithm.PS256):
                raise AlgorithmUnsupportedError(f"an RSA key cannot be used for {alg}")
            return cls(Algorithm.PS256, spki, key)
        raise AlgorithmUnsupportedError(f"key type {type(key).__name__} is not accepted")

    @classmethod
    def from_spki(cls, der: bytes, alg: Algorithm | None = None) -> PublicKey:
        """A key from a DER SubjectPublicKeyInfo, optionally required to be of ``alg``.

        Raises :class:`MalformedError` (not SPKI), :class:`AlgorithmUnsupportedError` (a key type
        the gateway does not accept, or not ``alg``).
        """
        if len(der) > MAX_KEY_BYTES:
            raise MalformedError("key material larger than 16 KiB")
        if is_sm2_spki(der):
            return cls.from_crypto(load_sm2_spki(der), alg)
        try:
            key = serialization.load_der_public_key(der)
        except Exception:
            raise MalformedError("not a DER SubjectPublicKeyInfo") from None
        return cls.from_crypto(key, alg)

    @classmethod
    def from_sm2_point(cls, point: bytes) -> PublicKey:
        """From an uncompressed SM2 point ``04 || X || Y`` (65 bytes), checked to be on it."""
        if len(point) != 65 or point[0] != 0x04:
            raise MalformedError("a raw SM2 public key is 04 || X || Y, 65 bytes")
        require_sm2()
        try:
            key = sm_ec.EllipticCurvePublicKey.from_encoded_point(sm_ec.SM2(), point)
        except Exception:
            raise MalformedError("not a point on the SM2 curve") from None
        return cls.from_crypto(key, Algorithm.SM2)

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PublicKey:
        """From a public JWK (OKP Ed25519, EC P-256 or EC SM2); private members are refused."""
        if not isinstance(jwk, Mapping):
            raise MalformedError("a JWK is a JSON object")
        if "d" in jwk:
            raise MalformedError("the JWK holds private key material")
        kty = jwk.get("kty")
        try:
            if kty == "OKP" and jwk.get("crv") == "Ed25519":
                return cls.from_ed25519_raw(b64url_decode(str(jwk["x"])))
            if kty == "EC" and jwk.get("crv") == "P-256":
                x = b64url_decode(str(jwk["x"]))
                y = b64url_decode(str(jwk["y"]))
                if len(x) != 32 or len(y) != 32:
                    raise MalformedError("P-256 JWK coordinates have 32 bytes")
                numbers = ec.EllipticCurvePublicNumbers(
                    int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
                )
                return cls.from_crypto(numbers.public_key(), Algorithm.ES256)
            if kty == "EC" and jwk.get("crv") == "SM2":
                x = b64url_decode(str(jwk["x"]))
                y = b64url_decode(str(jwk["y"]))
                if len(x) != 32 or len(y) != 32:
                    raise MalformedError("SM2 JWK coordinates have 32 bytes")
                return cls.from_sm2_point(b"\x04" + x + y)
        except KeyError as exc:
            raise MalformedError(f"the JWK lacks member {exc.args[0]!r}") from None
        except ValueError:
            raise MalformedError("the JWK is not a point on its curve") from None
        raise AlgorithmUnsupportedError(f"JWK type {str(kty)[:16]!r} is not accepted")

    # -- serialisation -----------------------------------------------------------------

    def raw(self) -> bytes:
        """Ed25519: 32 raw bytes; P-256 and SM2: 65-byte uncompressed point; RSA: the SPKI."""
        if self.alg is Algorithm.EDDSA:
            return bytes(self._impl)
        if self.alg is Algorithm.SM2:
            return bytes(
                self._impl.public_bytes(
                    sm_serialization.Encoding.X962,
                    sm_serialization.PublicFormat.UncompressedPoint,
                )
            )
        if self.alg is Algorithm.ES256:
            return bytes(
                self._impl.public_bytes(
                    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
                )
            )
        return self.spki

    def to_jwk(self) -> dict[str, str]:
        """The public key as a JWK (``OKP``/``Ed25519`` or ``EC``/``P-256``), without kid or alg;
        raises :class:`AlgorithmUnsupportedError` for an RSA key."""
        if self.alg is Algorithm.EDDSA:
            return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(self.raw())}
        if self.alg in (Algorithm.ES256, Algorithm.SM2):
            point = self.raw()
            return {
                "kty": "EC",
                "crv": "P-256" if self.alg is Algorithm.ES256 else "SM2",
                "x": b64url_encode(point[1:33]),
                "y": b64url_encode(point[33:]),
            }
        raise AlgorithmUnsupportedError("RSA keys have no JWK form here")

    def to_pem(self) -> str:
        """The SPKI as a PEM ``PUBLIC KEY`` block."""
        return base64_pem("PUBLIC KEY", self.spki)

    def fingerprint(self) -> str:
        """A stable key id: the first 8 bytes of SHA-256 over the SPKI, as 16 hex digits."""
        return hashlib.sha256(self.spki).digest()[:8].hex()

    # -- verification ------------------------------------------------------------------

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise :class:`SignatureInvalidError` unless ``signature`` signs ``message``.

        ES256 signatures must be raw 64-byte r||s, as JOSE and COSE define them; so must SM2
        signatures (GM/T 0009's DER SEQUENCE of r and s is not accepted: one spelling only).
        """
        if self.alg is Algorithm.EDDSA:
            if len(signature) != 64:
                raise SignatureInvalidError("an Ed25519 signature has 64 bytes")
            try:
                self._impl.verify(message, signature)
            except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
                raise SignatureInvalidError() from None
            return
        if self.alg is Algorithm.ES256:
            if len(signature) != 64:
                raise SignatureInvalidError("an ES256 signature is 64 raw bytes (r||s)")
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            try:
                self._impl.verify(der, message, ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                raise SignatureInvalidError() from None
            return
        if self.alg is Algorithm.SM2:
            if len(signature) != 64:
                raise SignatureInvalidError("an SM2 signature is 64 raw bytes (r||s)")
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            # GB/T 32918.2 §7.1 B1/B2, checked here so the library only sees well-formed input.
            if not (0 < r < SM2_ORDER and 0 < s < SM2_ORDER):
                raise SignatureInvalidError("SM2 r and s lie in [1, n-1]")
            try:
                self._impl.verify(encode_dss_signature(r, s), message, sm_ec.ECDSA(sm_hashes.SM3()))
            except Exception:  # InvalidSignature, or the library's error for a bad signature
                raise SignatureInvalidError() from None
            return
        if self.alg is Algorithm.PS256:
            if len(signature) > 1024:
                raise SignatureInvalidError("RSA signature too long")
            try:
                self._impl.verify(
                    signature,
                    message,
                    padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                    hashes.SHA256(),
                )
            except InvalidSignature:
                raise SignatureInvalidError() from None
            return
        raise AlgorithmUnsupportedError(f"no verifier for {self.alg}")


@dataclass(frozen=True)
class PrivateKey:
    """A signing key. Only the gateway's own keys and simulated partners hold these."""

    alg: Algorithm
    _impl: Any = field(repr=False, compare=False, hash=False)

    @classmethod
    def generate(cls, alg: Algorithm = Algorithm.EDDSA) -> PrivateKey:
        """A fresh random key of ``alg`` (RSA: 2048 bits); raises :class:`AlgorithmUnsupportedError`
        for an algorithm it cannot make.
        """
        if alg is Algorithm.EDDSA:
            return cls(alg, nacl.signing.SigningKey.generate())
        if alg is Algorithm.ES256:
            return cls(alg, ec.generate_private_key(ec.SECP256R1()))
        if alg is Algorithm.PS256:
            return cls(alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        if alg is Algorithm.SM2:
            require_sm2()
            return cls(alg, sm_ec.generate_private_key(sm_ec.SM2()))
        raise AlgorithmUnsupportedError(f"cannot generate {alg}")

    @classmethod
    def from_ed25519_seed(cls, seed: bytes) -> PrivateKey:
        """The Ed25519 key of a 32-byte seed (deterministic: for fixed test vectors); raises
        ``ValueError`` for another length.
        """
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed has 32 bytes")
        return cls(Algorithm.EDDSA, nacl.signing.SigningKey(seed))

    @classmethod
    def from_p256_scalar(cls, scalar: bytes) -> PrivateKey:
        """Deterministic P-256 key from 32 bytes (for fixed test vectors)."""
        if len(scalar) != 32:
            raise ValueError("a P-256 scalar has 32 bytes")
        return cls(
            Algorithm.ES256, ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())
        )

    @classmethod
    def from_sm2_scalar(cls, scalar: bytes) -> PrivateKey:
        """Deterministic SM2 key from 32 bytes (for fixed test vectors)."""
        if len(scalar) != 32:
            raise ValueError("an SM2 private key has 32 bytes")
        d = int.from_bytes(scalar, "big")
        # GB/T 32918.1 §6.1: d in [1, n-2].
        if not 0 < d < SM2_ORDER - 1:
            raise ValueError("an SM2 private key lies in [1, n-2]")
        require_sm2()
        return cls(Algorithm.SM2, sm_ec.derive_private_key(d, sm_ec.SM2()))

    @classmethod
    def from_pem(cls, pem: bytes, passphrase: bytes | None) -> PrivateKey:
        """Load a PEM private key, decrypting it with ``passphrase`` when it is encrypted.

        Raises :class:`MalformedError` (not a key, wrong passphrase),
        :class:`AlgorithmUnsupportedError` (a key type the gateway does not sign with).
        """
        if is_sm2_private_pem(pem):
            return cls(Algorithm.SM2, load_sm2_private_pem(pem, passphrase))
        try:
            key = serialization.load_pem_private_key(pem, password=passphrase)
        except UnsupportedAlgorithm:
            # An SM2 key in a PKCS#8 form the detection above did not recognise.
            if not SM2_AVAILABLE:
                raise AlgorithmUnsupportedError(
                    "the private key's algorithm is not accepted"
                ) from None
            return cls(Algorithm.SM2, load_sm2_private_pem(pem, passphrase))
        except (ValueError, TypeError) as exc:
            raise MalformedError(f"cannot load private key: {exc}") from None
        if isinstance(key, ed25519.Ed25519PrivateKey):
            seed = key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            return cls.from_ed25519_seed(seed)
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return cls(Algorithm.ES256, key)
        if isinstance(key, rsa.RSAPrivateKey):
            return cls(Algorithm.PS256, key)
        raise AlgorithmUnsupportedError(f"private key type {type(key).__name__} is not accepted")

    def to_pem(self, passphrase: bytes | None) -> bytes:
        """PKCS#8 PEM, encrypted with the best available scheme when a passphrase is given."""
        if self.alg is Algorithm.SM2:
            # Tongsuo's best available PKCS#8 encryption: PBES2 with SM4-CBC.
            sm_encryption: Any = (
                sm_serialization.BestAvailableEncryption(passphrase)
                if passphrase
                else sm_serialization.NoEncryption()
            )
            return bytes(
                self._impl.private_bytes(
                    sm_serialization.Encoding.PEM,
                    sm_serialization.PrivateFormat.PKCS8,
                    sm_encryption,
                )
            )
        if self.alg is Algorithm.EDDSA:
            key: Any = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(self._impl))
        else:
            key = self._impl
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            )
        )

    def public_key(self) -> PublicKey:
        """The matching public key."""
        if self.alg is Algorithm.EDDSA:
            return PublicKey.from_ed25519_raw(bytes(self._impl.verify_key))
        return PublicKey.from_crypto(self._impl.public_key(), self.alg)

    def sign(self, message: bytes) -> bytes:
        """Ed25519: 64 bytes; ES256 and SM2: raw 64-byte r||s; PS256: RSASSA-PSS."""
        if self.alg is Algorithm.EDDSA:
            return bytes(self._impl.sign(message).signature)
        if self.alg is Algorithm.SM2:
            r, s = decode_dss_signature(self._impl.sign(message, sm_ec.ECDSA(sm_hashes.SM3())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        if self.alg is Algorithm.ES256:
            r, s = decode_dss_signature(self._impl.sign(message, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return bytes(
            self._impl.sign(
                message,
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                hashes.SHA256(),
            )
        )


def base64_pem(label: str, der: bytes) -> str:
    """DER bytes as a PEM block labelled ``label``, 64 characters a line."""
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def load_public_key(
    data: bytes | str | Mapping[str, Any], alg: Algorithm | None = None
) -> PublicKey:
    """Load a public key from PEM (key or certificate), DER (SPKI or certificate), a JWK, or
    32 raw Ed25519 bytes. Raises :class:`MalformedError` or :class:`AlgorithmUnsupportedError`."""
    if isinstance(data, Mapping):
        key = PublicKey.from_jwk(data)
    else:
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if len(raw) > MAX_KEY_BYTES:
            raise MalformedError("key material larger than 16 KiB")
        if len(raw) == 32 and alg in (None, Algorithm.EDDSA):
            key = PublicKey.from_ed25519_raw(raw)
        elif len(raw) == 65 and raw[0] == 0x04 and alg is Algorithm.SM2:
            key = PublicKey.from_sm2_point(raw)
        elif raw.lstrip().startswith(b"-----BEGIN CERTIFICATE"):
            key = PublicKey.from_crypto(_cert_public_key(raw, pem=True), alg)
        elif raw.lstrip().startswith(b"-----BEGIN"):
            blocks = pem_blocks(raw, "PUBLIC KEY")
            if len(blocks) == 1 and is_sm2_spki(blocks[0]):
                key = PublicKey.from_spki(blocks[0], alg)
            else:
                try:
                    loaded = serialization.load_pem_public_key(raw)
                except Exception:
                    raise MalformedError("not a PEM public key") from None
                key = PublicKey.from_crypto(loaded, alg)
        elif is_sm2_spki(raw):
            key = PublicKey.from_spki(raw, alg)
        else:
            try:
                loaded = serialization.load_der_public_key(raw)
            except Exception:
                loaded = _cert_public_key(raw, pem=False)
            key = PublicKey.from_crypto(loaded, alg)
    if alg is not None and key.alg is not alg:
        raise AlgorithmUnsupportedError(f"the key is for {key.alg}, not {alg}")
    return key


def _cert_public_key(raw: bytes, *, pem: bool) -> Any:
    """A certificate's public key: pyca/cryptography's strict loader first, then, for a real
    certificate that is not strict DER, the SubjectPublicKeyInfo found by :mod:`keys.der`."""
    try:
        cert = _load_cert(raw, pem=pem)
    except MalformedError:
        blocks = pem_blocks(raw, "CERTIFICATE") if pem else [raw]
        if len(blocks) != 1:
            raise
        try:
            spki = read_certificate(blocks[0]).spki
        except MalformedError:
            raise MalformedError("not a public key or X.509 certificate") from None
        return _spki_key(spki)
    try:
        return cert.public_key()
    except Exception:
        # pyca/cryptography cannot hold an SM2 key; the certificate's SPKI can still be read.
        spki = cert.public_bytes(serialization.Encoding.DER)
        try:
            found = read_certificate(spki).spki
        except MalformedError:
            found = b""
        if is_sm2_spki(found):
            return load_sm2_spki(found)
        raise AlgorithmUnsupportedError("the certificate's key type is not accepted") from None


def _spki_key(spki: bytes) -> Any:
    if is_sm2_spki(spki):
        return load_sm2_spki(spki)
    try:
        return serialization.load_der_public_key(spki)
    except Exception:
        raise MalformedError("the certificate's public key cannot be loaded") from None


def _load_cert(raw: bytes, *, pem: bool) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(raw) if pem else x509.load_der_x509_certificate(raw)
    except Exception:
        raise MalformedError("not a public key or X.509 certificate") from None


def sm2_z(public_key: PublicKey, signer_id: bytes = SM2_DEFAULT_ID) -> bytes:
    """Z_A of GB/T 32918.2 §5.5 for an SM2 key (see :func:`keys.sm2.z_value`)."""
    if public_key.alg is not Algorithm.SM2:
        raise AlgorithmUnsupportedError(f"Z is defined for SM2 keys, not {public_key.alg}")
    return z_value(public_key.raw(), signer_id)
