"""An issuer for all 14 partner formats, written from docs/partners.md alone.

It deliberately imports nothing from ``adapters`` (nor ``keys``): only the standard library,
pynacl, cryptography, cbor2 and, for the SM2 region, pysmx (snowland-smx: a pure-Python SM2, not
the library the gateway verifies with), as a partner's own engineer would. If the gateway
recognises its codes, the page is precise enough to build an issuer from.

    python tests/kat/independent_issuer.py --write   # regenerate tests/vectors/*.json

Regenerating changes every ES256 vector (ECDSA signatures are randomised); SM2 vectors are signed
with a fixed TEST-ONLY k (partners.md §7), so they are reproduced. The committed vectors are the
reference, so only regenerate when a format changes on purpose.

The known-answer keys below are TEST-ONLY keys derived from public strings.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import sys
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cbor2
import nacl.signing
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pysmx.SM2 import Sign as sm2_sign
from pysmx.SM2 import kG as sm2_mul
from pysmx.SM2 import sm2_G

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
CST = timezone(timedelta(hours=8))

# --- §1.2 encodings ---------------------------------------------------------------------------

B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


def base45(data: bytes) -> str:
    out = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        c, n = n % 45, n // 45
        d, e = n % 45, n // 45
        out += [B45[c], B45[d], B45[e]]
    if len(data) % 2:
        out += [B45[data[-1] % 45], B45[data[-1] // 45]]
    return "".join(out)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def zlib9(data: bytes) -> bytes:
    return zlib.compress(data, 9)


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def compact_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    size = 1 if n < 1 << 8 else 2 if n < 1 << 16 else 4 if n < 1 << 32 else 8
    return bytes([major << 5 | {1: 24, 2: 25, 4: 26, 8: 27}[size]]) + n.to_bytes(size, "big")


def det_cbor(value: Any) -> bytes:
    """§1.2 / §1.6: RFC 8949 §4.2.1, map keys in the bytewise order of their encodings."""
    if isinstance(value, dict):
        entries = sorted((det_cbor(k), det_cbor(v)) for k, v in value.items())
        return _cbor_head(5, len(entries)) + b"".join(k + v for k, v in entries)
    if isinstance(value, list):
        return _cbor_head(4, len(value)) + b"".join(det_cbor(v) for v in value)
    return cbor2.dumps(value, canonical=True)  # one scalar: shortest form


# --- §1.3 keys --------------------------------------------------------------------------------


SM2_N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
SM2_ID = b"1234567812345678"  # §1.3 / crypto.md §1.1: the default signer id


@dataclass(frozen=True)
class Sm2Key:
    """An SM2 private scalar d; ``fixed_k`` signs with the TEST-ONLY k of §7 instead of a
    random one (SM2, like ECDSA, needs a fresh secret k per signature in real use)."""

    d: int
    fixed_k: bool

    def sign(self, message: bytes) -> bytes:
        if self.fixed_k:
            k = int.from_bytes(hashlib.sha256(b"trustgw-kat-sm2-k" + message).digest(), "big")
            k = k % (SM2_N - 1) + 1
        else:
            k = secrets.randbelow(SM2_N - 1) + 1
        signature = sm2_sign(message, f"{self.d:064x}", f"{k:064x}", 64, uid=SM2_ID)
        return bytes(signature) if isinstance(signature, bytes) else bytes.fromhex(signature)

    def point(self) -> bytes:
        """X || Y of the public key d·G."""
        return bytes.fromhex(sm2_mul(self.d, sm2_G, 64))


class Signer:
    """Ed25519 (pynacl), ES256 (cryptography, raw r||s) or SM2 (pysmx, raw r||s)."""

    def __init__(self, alg: str, impl: Any) -> None:
        self.alg = alg
        self.impl = impl

    @classmethod
    def kat(cls, region: str, alg: str) -> Signer:
        """The TEST-ONLY known-answer key of §7."""
        seed = hashlib.sha256(f"trustgw-kat-{region}".encode("ascii")).digest()
        if alg == "EdDSA":
            return cls(alg, nacl.signing.SigningKey(seed))
        if alg == "SM2":
            return cls(alg, Sm2Key(int.from_bytes(seed, "big"), fixed_k=True))
        return cls(alg, ec.derive_private_key(int.from_bytes(seed, "big"), ec.SECP256R1()))

    @classmethod
    def random(cls, alg: str) -> Signer:
        if alg == "EdDSA":
            return cls(alg, nacl.signing.SigningKey.generate())
        if alg == "SM2":
            return cls(alg, Sm2Key(secrets.randbelow(SM2_N - 2) + 1, fixed_k=False))
        return cls(alg, ec.generate_private_key(ec.SECP256R1()))

    def sign(self, message: bytes) -> bytes:
        if self.alg == "EdDSA":
            return bytes(self.impl.sign(message).signature)
        if self.alg == "SM2":
            return bytes(self.impl.sign(message))
        r, s = decode_dss_signature(self.impl.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def public_jwk(self) -> dict[str, str]:
        if self.alg == "EdDSA":
            return {"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes(self.impl.verify_key))}
        if self.alg == "SM2":
            xy = self.impl.point()
            return {"kty": "EC", "crv": "SM2", "x": b64url(xy[:32]), "y": b64url(xy[32:])}
        point = self.impl.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {"kty": "EC", "crv": "P-256", "x": b64url(point[1:33]), "y": b64url(point[33:])}


# --- §1.4 claim values ------------------------------------------------------------------------

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_number(first17: str) -> str:
    return (
        first17 + "10X98765432"[sum(int(c) * w for c, w in zip(first17, WEIGHTS, strict=True)) % 11]
    )


COLOURS: dict[str, dict[str, Any]] = {
    "words": {"green": "green", "yellow": "yellow", "red": "red"},
    "letters": {"green": "G", "yellow": "Y", "red": "R"},
    "chinese": {"green": "绿", "yellow": "黄", "red": "红"},
    "digits012": {"green": 0, "yellow": 1, "red": 2},
    "digits012text": {"green": "0", "yellow": "1", "red": "2"},
    "digits123": {"green": 1, "yellow": 2, "red": 3},
}


def time_value(fmt: str, unix: int) -> Any:
    if fmt == "unix":
        return unix
    if fmt == "ms":
        return unix * 1000
    local = datetime.fromtimestamp(unix, CST)
    if fmt == "iso":
        return local.isoformat()
    return local.strftime("%Y%m%d%H%M%S")  # cst compact


@dataclass(frozen=True)
class Status:
    holder_id: str
    name: str
    colour: str  # green | yellow | red
    iat: int  # unix seconds
    exp: int
    code_id: str  # hex text


# --- §5 the regions: how each writes its claims -----------------------------------------------


def claims_for(region: str, s: Status) -> Any:
    """The claims of §5, in the order the tables list them."""
    if region == "110000":
        return {
            "v": 1,
            "cid": s.code_id,
            "p": {"id": s.holder_id, "n": s.name},
            "hs": {"c": COLOURS["letters"][s.colour], "iat": s.iat, "exp": s.exp},
        }
    if region == "230000":
        return "|".join(
            [
                "1",
                s.code_id,
                s.holder_id,
                s.name,
                COLOURS["chinese"][s.colour],
                time_value("cst", s.iat),
                time_value("cst", s.exp),
            ]
        )
    if region == "340000":
        return {
            "idno": s.holder_id,
            "name": s.name,
            "color": COLOURS["digits123"][s.colour],
            "iat_ms": s.iat * 1000,
            "exp_ms": s.exp * 1000,
        }
    if region == "500000":
        return ";".join(
            [
                s.code_id,
                s.holder_id,
                s.name,
                COLOURS["digits012text"][s.colour],
                str(s.iat),
                str(s.exp),
            ]
        )
    if region == "650000":
        return {
            "cert": {"no": s.code_id},
            "holder": {"idcard": s.holder_id},
            "status": {
                "colour": s.colour,
                "from": time_value("iso", s.iat),
                "to": time_value("iso", s.exp),
            },
        }
    if region == "120000":
        return {
            "iss": "tjhc",
            "jti": s.code_id,
            "sub": s.holder_id,
            "name": s.name,
            "color": s.colour,
            "iat": s.iat,
            "exp": s.exp,
        }
    if region == "310000":
        return {
            "jti": s.code_id,
            "hs": {
                "sfz": s.holder_id,
                "xm": s.name,
                "c": COLOURS["digits012"][s.colour],
                "from": time_value("iso", s.iat),
                "until": time_value("iso", s.exp),
            },
        }
    if region == "410000":
        return {
            "jti": s.code_id,
            "sfzh": s.holder_id,
            "xm": s.name,
            "ys": COLOURS["chinese"][s.colour],
            "qfsj": s.iat * 1000,
            "yxq": s.exp * 1000,
        }
    if region == "510000":
        return {
            "tfm": {
                "no": s.code_id,
                "zjhm": s.holder_id,
                "xm": s.name,
                "ys": COLOURS["letters"][s.colour],
            },
            "iat": s.iat,
            "exp": s.exp,
        }
    if region == "630000":
        return {
            "sfzh": s.holder_id,
            "xm": s.name,
            "mzt": COLOURS["digits123"][s.colour],
            "sxsj": time_value("cst", s.iat),
            "sxsj_end": time_value("cst", s.exp),
        }
    if region == "130000":
        return {
            1: "CN-130000",
            7: bytes.fromhex(s.code_id),
            -65537: s.holder_id,
            -65538: s.name,
            -65539: COLOURS["digits012"][s.colour],
            6: s.iat,
            4: s.exp,
        }
    if region == "330000":
        return {
            1: "CN-330000",
            -260: {1: {"ci": s.code_id, "id": s.holder_id, "nm": s.name, "st": s.colour}},
            6: s.iat,
            4: s.exp,
        }
    if region == "440000":
        return {
            7: bytes.fromhex(s.code_id),
            "sfz": s.holder_id,
            "xm": s.name,
            "ys": COLOURS["chinese"][s.colour],
            6: s.iat,
            4: s.exp,
        }
    if region == "520000":
        return {
            -70520: {1: s.holder_id, 2: s.name, 3: COLOURS["digits123"][s.colour]},
            6: s.iat,
            4: s.exp,
        }
    raise ValueError(region)


# (family, alg, prefix, details) from the table of §5
REGIONS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "110000": ("compact", "EdDSA", "BJ1:", {"text": "base45", "zlib": True}),
    "230000": ("compact", "SM2", "HLJ:", {"text": "base64url", "zlib": False}),
    "340000": ("compact", "EdDSA", "AHM:", {"text": "base45", "zlib": False}),
    "500000": ("compact", "EdDSA", "CQJKM:", {"text": "base64url", "zlib": True}),
    "650000": ("compact", "EdDSA", "XJ-", {"text": "base45", "zlib": True}),
    "120000": ("jws", "ES256", "TJHC:", {"zip": False, "typ": "JWT"}),
    "310000": ("jws", "EdDSA", "https://ssm.sh.gov.cn/hc#", {"zip": True}),
    "410000": ("jws", "ES256", "YU:", {"zip": True}),
    "510000": ("jws", "EdDSA", "SCTFM:", {"zip": False}),
    "630000": ("jws", "ES256", "https://jkm.qh.gov.cn/v?c=", {"zip": True}),
    "130000": (
        "cose",
        "EdDSA",
        "HE1:",
        {"text": "base45", "zlib": True, "tags": (18,), "kid": "protected"},
    ),
    "330000": (
        "cose",
        "ES256",
        "ZJ1:",
        {"text": "base45", "zlib": True, "tags": (61, 18), "kid": "protected"},
    ),
    "440000": (
        "cose",
        "ES256",
        "YKM:",
        {"text": "base64url", "zlib": False, "tags": (), "kid": "unprotected"},
    ),
    "520000": (
        "cose",
        "EdDSA",
        "GZ1:",
        {"text": "base45", "zlib": True, "tags": (18,), "kid": "protected"},
    ),
}
DERIVED_CODE_ID = {"340000", "630000", "520000"}


# --- §2-§4 the envelopes ----------------------------------------------------------------------


def compact(prefix: str, d: dict[str, Any], claims: Any, signer: Signer, kid: str) -> str:
    body = claims.encode("utf-8") if isinstance(claims, str) else compact_json(claims)
    payload = zlib9(body) if d["zlib"] else body
    kid_bytes = kid.encode("ascii")
    signed = bytes([0x01, len(kid_bytes)]) + kid_bytes + payload
    blob = signed + signer.sign(signed)
    return prefix + (base45(blob) if d["text"] == "base45" else b64url(blob))


def jws(prefix: str, d: dict[str, Any], claims: Any, signer: Signer, kid: str) -> str:
    header = {"alg": signer.alg, "kid": kid}
    if d["zip"]:
        header["zip"] = "DEF"
    if d.get("typ"):
        header["typ"] = d["typ"]
    payload = compact_json(claims)
    if d["zip"]:
        payload = raw_deflate(payload)
    signing_input = b64url(compact_json(header)) + "." + b64url(payload)
    return prefix + signing_input + "." + b64url(signer.sign(signing_input.encode("ascii")))


def cose(prefix: str, d: dict[str, Any], claims: Any, signer: Signer, kid: str) -> str:
    alg = -8 if signer.alg == "EdDSA" else -7
    protected_map: dict[int, Any] = {1: alg}
    unprotected: dict[int, Any] = {}
    if d["kid"] == "protected":
        protected_map[4] = kid.encode("ascii")
    else:
        unprotected[4] = kid.encode("ascii")
    protected = det_cbor(protected_map)
    payload = det_cbor(claims)
    to_sign = det_cbor(["Signature1", protected, b"", payload])
    message: Any = [protected, unprotected, payload, signer.sign(to_sign)]
    for tag in reversed(d["tags"]):
        message = cbor2.CBORTag(tag, message)
    data = det_cbor(message)
    if d["zlib"]:
        data = zlib9(data)
    return prefix + (base45(data) if d["text"] == "base45" else b64url(data))


def issue(region: str, signer: Signer, kid: str, status: Status) -> str:
    family, alg, prefix, details = REGIONS[region]
    if signer.alg != alg:
        raise ValueError(f"region {region} signs with {alg}")
    build = {"compact": compact, "jws": jws, "cose": cose}[family]
    return build(prefix, details, claims_for(region, status), signer, kid)


def expected_code_id(region: str, status: Status) -> str:
    """§1.4: the code id the gateway reports (derived for regions without one)."""
    if region not in DERIVED_CODE_ID:
        return status.code_id
    return "d-" + hashlib.sha256(det_cbor(claims_for(region, status))).hexdigest()[:32]


# --- §7 vectors -------------------------------------------------------------------------------

BASE = 1583913600  # 2020-03-11T08:00:00Z
CASES = (
    (
        "green",
        Status(
            id_number("11010119900307001"), "王伟", "green", BASE, BASE + 86400, "5f3a9c0e12d4b678"
        ),
    ),
    (
        "yellow",
        Status(
            id_number("44030519851204123"),
            "陈晓东",
            "yellow",
            BASE + 3600,
            BASE + 3 * 86400,
            "00ff10aa",
        ),
    ),
    (
        "red",
        Status(
            id_number("65010220011111002"), "艾合买提", "red", BASE + 7200, BASE + 7200 + 60, "c0de"
        ),
    ),
)


def iso(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def vector(region: str) -> dict[str, Any]:
    _, alg, _, _ = REGIONS[region]
    signer = Signer.kat(region, alg)
    kid = f"kat-{region}"
    return {
        "region": region,
        "alg": alg,
        "kid": kid,
        "key": {
            "derivation": f"TEST ONLY: seed/scalar = SHA-256('trustgw-kat-{region}')",
            "public_jwk": signer.public_jwk(),
        },
        "cases": [
            {
                "name": name,
                "code": issue(region, signer, kid, status),
                "expected": {
                    "holder_id": status.holder_id,
                    "colour": status.colour,
                    "issued_at": iso(status.iat),
                    "expires_at": iso(status.exp),
                    "code_id": expected_code_id(region, status),
                },
                "input": {
                    "holder_id": status.holder_id,
                    "holder_name": status.name,
                    "colour": status.colour,
                    "issued_at": status.iat,
                    "expires_at": status.exp,
                    "code_id": status.code_id,
                },
            }
            for name, status in CASES
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write the known-answer vectors")
    parser.add_argument("--write", action="store_true", help="(re)write tests/vectors/*.json")
    args = parser.parse_args(argv)
    for region in REGIONS:
        text = json.dumps(vector(region), ensure_ascii=False, indent=2) + "\n"
        if args.write:
            VECTORS.mkdir(exist_ok=True)
            (VECTORS / f"{region}.json").write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
