"""Seed inputs made with fixed TEST keys (never real keys), shared by the fuzz targets."""

from __future__ import annotations

import hashlib
import json
import zlib
from datetime import UTC, datetime, timedelta
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapters.base import Colour
from adapters.codecs.encoding import b45decode
from adapters.credentials import hc1, shc
from adapters.regions import ADAPTERS
from adapters.simulator import PartnerIssuer
from keys.crypto import PrivateKey

T0 = 1_622_548_800
AT = datetime.fromtimestamp(T0, UTC)
ES_KEY = PrivateKey.from_p256_scalar(hashlib.sha256(b"trustgw-fuzz-es256").digest())


def certificate() -> bytes:
    private = cast(
        ec.EllipticCurvePrivateKey,
        serialization.load_pem_private_key(ES_KEY.to_pem(None), password=None),
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FUZZ TEST DSC")])
    eku = x509.ExtendedKeyUsage([x509.ObjectIdentifier("1.3.6.1.4.1.1847.2021.1.2")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1234)
        .not_valid_before(AT - timedelta(days=1))
        .not_valid_after(AT + timedelta(days=1))
        .add_extension(eku, critical=False)
        .sign(private, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


CERT = certificate()
DCC_TRUST = hc1.DccTrust((hc1.Signer.from_certificate(CERT),))
DCC_KID = DCC_TRUST.signers[0].kid
HC1_CODE = hc1.CODEC.seal(
    {1: "XX", 6: T0 - 60, 4: T0 + 60, -260: {1: {"ver": "1.3.0", "v": [{"dn": 1}]}}},
    ES_KEY,
    str(DCC_KID),
)
HC1_COSE = zlib.decompress(b45decode(HC1_CODE[4:], limit=9999))

SHC_KEY = PrivateKey.from_p256_scalar(hashlib.sha256(b"trustgw-fuzz-shc").digest())
_JWK = SHC_KEY.public_key().to_jwk()
SHC_JWK = {**_JWK, "kid": shc.thumbprint(_JWK)}
SHC_KEYS = shc.IssuerKeys.from_jwks(json.dumps({"keys": [SHC_JWK]}).encode())
SHC_CRL = shc.RevocationList(SHC_JWK["kid"], 1, {"r1": (T0 - 120,), "r2": (None,)})
SHC_JWS = shc.CODEC.seal(
    {"iss": "https://issuer.test", "nbf": T0 - 60, "exp": T0 + 60, "vc": {"rid": "r1"}},
    SHC_KEY,
    SHC_JWK["kid"],
)
SHC_NUMERIC = "shc:/" + "".join(f"{ord(c) - 45:02d}" for c in SHC_JWS)

REGION_AT = datetime(2024, 5, 1, 12, tzinfo=UTC)
ISSUERS = {code: PartnerIssuer.generate(code, kid=f"k-{code}") for code in sorted(ADAPTERS)}
REGION_CODES = {
    code: issuer.issue(
        holder_id="110101199003070011",
        holder_name="王伟",
        colour=Colour.GREEN,
        issued_at=REGION_AT - timedelta(hours=1),
        expires_at=REGION_AT + timedelta(hours=1),
    )
    for code, issuer in ISSUERS.items()
}
