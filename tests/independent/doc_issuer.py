"""A partner issuer for all 14 regions, written from docs/partners.md alone.

It imports nothing from the project (not ``adapters``, ``keys``, ``gateway`` nor
``tests/kat/independent_issuer.py``): only the standard library and ``cryptography`` for the
signatures, and for the SM2 region pysmx (snowland-smx), an SM2 of its own (§1.3), not the
library the gateway verifies with. Every format detail below cites the section of
docs/partners.md it comes from. Its own base45, base64url and CBOR are here too, so that a
misreading of the page shared with the gateway's codecs cannot hide.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pysmx.SM2 import Sign as sm2_sign
from pysmx.SM2 import kG as sm2_mul
from pysmx.SM2 import sm2_G

# --- §1.2 encodings ----------------------------------------------------------------------------

B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


def base45(data: bytes) -> str:
    """RFC 9285 as §1.2 spells it: pairs -> three characters, a last byte -> two."""
    out = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        e, rest = divmod(n, 2025)
        d, c = divmod(rest, 45)
        out.append(B45[c] + B45[d] + B45[e])
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out.append(B45[c] + B45[d])
    return "".join(out)


def b64url(data: bytes) -> str:
    """RFC 4648 §5 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compact_json(value: Any) -> bytes:
    """The reference issuer's JSON (§1.2): compact, members in the page's order, raw UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def raw_deflate(data: bytes) -> bytes:
    """§1.2: RFC 1951 without header or checksum."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


class Tag:
    """A CBOR tag around a value (only COSE's 18 and 61 are used, §1.2)."""

    def __init__(self, number: int, value: Any) -> None:
        self.number, self.value = number, value


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for extra, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | extra]) + struct.pack(fmt, n)
    raise ValueError("integer beyond 64 bits")


def cbor(value: Any) -> bytes:
    """RFC 8949 core deterministic encoding (§1.2, §1.6): shortest heads, definite lengths,
    map keys sorted by the bytes of their encoding."""
    if isinstance(value, bool):
        return b"\xf5" if value else b"\xf4"
    if value is None:
        return b"\xf6"
    if isinstance(value, int):
        return _head(0, value) if value >= 0 else _head(1, -1 - value)
    if isinstance(value, bytes):
        return _head(2, len(value)) + value
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _head(3, len(raw)) + raw
    if isinstance(value, list | tuple):
        return _head(4, len(value)) + b"".join(cbor(v) for v in value)
    if isinstance(value, dict):
        items = sorted((cbor(k), cbor(v)) for k, v in value.items())
        return _head(5, len(items)) + b"".join(k + v for k, v in items)
    if isinstance(value, Tag):
        return _head(6, value.number) + cbor(value.value)
    raise TypeError(f"no CBOR for {type(value).__name__}")


# --- §1.3 keys ---------------------------------------------------------------------------------


SM2_N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123


@dataclass(frozen=True)
class Sm2Private:
    """§1.3 SM2: over SM3, default signer id ``1234567812345678``, raw r || s; a fresh k each."""

    d: int

    def sign(self, data: bytes) -> bytes:
        k = secrets.randbelow(SM2_N - 1) + 1
        out = sm2_sign(data, f"{self.d:064x}", f"{k:064x}", 64, uid=b"1234567812345678")
        return bytes(out) if isinstance(out, bytes) else bytes.fromhex(out)

    def point(self) -> bytes:
        return bytes.fromhex(sm2_mul(self.d, sm2_G, 64))


@dataclass
class SigningKey:
    """One partner code-signing key: Ed25519, ES256 or SM2 (both raw r || s, §1.3)."""

    alg: str  # "EdDSA", "ES256" or "SM2"
    kid: str
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | Sm2Private

    @classmethod
    def generate(cls, alg: str, kid: str) -> SigningKey:
        if alg == "EdDSA":
            return cls(alg, kid, ed25519.Ed25519PrivateKey.generate())
        if alg == "SM2":
            return cls(alg, kid, Sm2Private(secrets.randbelow(SM2_N - 2) + 1))
        return cls(alg, kid, ec.generate_private_key(ec.SECP256R1()))

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private, Sm2Private):
            return self.private.sign(data)
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            return self.private.sign(data)
        r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def public_jwk(self) -> dict[str, str]:
        """§1.3: OKP/Ed25519, EC/P-256 or EC/SM2, base64url coordinates."""
        if isinstance(self.private, Sm2Private):
            xy = self.private.point()
            return {"kty": "EC", "crv": "SM2", "x": b64url(xy[:32]), "y": b64url(xy[32:])}
        public = self.private.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        numbers = public.public_numbers()  # type: ignore[union-attr]
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }


# --- §1.4 claim values -------------------------------------------------------------------------

CST = timezone(timedelta(hours=8))
COLOURS = ("green", "yellow", "red")
SPELLINGS: dict[str, tuple[Any, Any, Any]] = {
    "words": ("green", "yellow", "red"),
    "letters": ("G", "Y", "R"),
    "chinese": ("绿", "黄", "红"),
    "int012": (0, 1, 2),
    "text012": ("0", "1", "2"),
    "int123": (1, 2, 3),
}


def spell(style: str, colour: str) -> Any:
    return SPELLINGS[style][COLOURS.index(colour)]


def unix_s(t: datetime) -> int:
    return int(t.timestamp())


def unix_ms(t: datetime) -> int:
    return int(t.timestamp()) * 1000


def iso(t: datetime) -> str:
    """§1.4: the reference issuer writes ISO 8601 in UTC+8 without fractions."""
    return t.astimezone(CST).replace(microsecond=0).isoformat()


def cst_compact(t: datetime) -> str:
    return t.astimezone(CST).strftime("%Y%m%d%H%M%S")


def id_number(serial: int) -> str:
    """A resident ID number with its GB 11643 check character (§1.4)."""
    body = f"110101199003{serial % 10000:04d}1"[:17]
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(d) * w for d, w in zip(body, weights, strict=True))
    return body + "10X98765432"[total % 11]


@dataclass(frozen=True)
class Holder:
    idno: str
    name: str
    colour: str  # green / yellow / red
    issued_at: datetime
    expires_at: datetime
    code_id: str  # text, or hex of the bytes for *bytes* regions


# --- §5 the regions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    code: str
    mode: str  # show / convert
    family: str  # compact / jws / cose
    alg: str  # EdDSA / ES256 / SM2
    prefix: str
    claims: Callable[[Holder], Any]
    text: str = "base45"  # compact and COSE: base45 or base64url
    compress: bool = False  # compact: zlib of the payload; JWS: "zip":"DEF"; COSE: zlib
    delimiter: str | None = None  # compact delimited text payloads
    derived_id: bool = False
    typ: str | None = None  # JWS header typ
    cose_wrap: str = "18"  # 18, 61 or untagged
    kid_unprotected: bool = False


def _bj(h: Holder) -> Any:
    return {
        "v": 1,
        "cid": h.code_id,
        "p": {"id": h.idno, "n": h.name},
        "hs": {
            "c": spell("letters", h.colour),
            "iat": unix_s(h.issued_at),
            "exp": unix_s(h.expires_at),
        },
    }


def _hlj(h: Holder) -> Any:
    return [
        "1",
        h.code_id,
        h.idno,
        h.name,
        spell("chinese", h.colour),
        cst_compact(h.issued_at),
        cst_compact(h.expires_at),
    ]


def _ah(h: Holder) -> Any:
    return {
        "idno": h.idno,
        "name": h.name,
        "color": spell("int123", h.colour),
        "iat_ms": unix_ms(h.issued_at),
        "exp_ms": unix_ms(h.expires_at),
    }


def _cq(h: Holder) -> Any:
    return [
        h.code_id,
        h.idno,
        h.name,
        spell("text012", h.colour),
        str(unix_s(h.issued_at)),
        str(unix_s(h.expires_at)),
    ]


def _xj(h: Holder) -> Any:
    return {
        "cert": {"no": h.code_id},
        "holder": {"idcard": h.idno},
        "status": {
            "colour": spell("words", h.colour),
            "from": iso(h.issued_at),
            "to": iso(h.expires_at),
        },
    }


def _tj(h: Holder) -> Any:
    return {
        "iss": "tjhc",
        "jti": h.code_id,
        "sub": h.idno,
        "name": h.name,
        "color": spell("words", h.colour),
        "iat": unix_s(h.issued_at),
        "exp": unix_s(h.expires_at),
    }


def _sh(h: Holder) -> Any:
    return {
        "jti": h.code_id,
        "hs": {
            "sfz": h.idno,
            "xm": h.name,
            "c": spell("int012", h.colour),
            "from": iso(h.issued_at),
            "until": iso(h.expires_at),
        },
    }


def _ha(h: Holder) -> Any:
    return {
        "jti": h.code_id,
        "sfzh": h.idno,
        "xm": h.name,
        "ys": spell("chinese", h.colour),
        "qfsj": unix_ms(h.issued_at),
        "yxq": unix_ms(h.expires_at),
    }


def _sc(h: Holder) -> Any:
    return {
        "tfm": {"no": h.code_id, "zjhm": h.idno, "xm": h.name, "ys": spell("letters", h.colour)},
        "iat": unix_s(h.issued_at),
        "exp": unix_s(h.expires_at),
    }


def _qh(h: Holder) -> Any:
    return {
        "sfzh": h.idno,
        "xm": h.name,
        "mzt": spell("int123", h.colour),
        "sxsj": cst_compact(h.issued_at),
        "sxsj_end": cst_compact(h.expires_at),
    }


def _he(h: Holder) -> Any:
    return {
        1: "CN-130000",
        7: bytes.fromhex(h.code_id),
        -65537: h.idno,
        -65538: h.name,
        -65539: spell("int012", h.colour),
        6: unix_s(h.issued_at),
        4: unix_s(h.expires_at),
    }


def _zj(h: Holder) -> Any:
    status = {"ci": h.code_id, "id": h.idno, "nm": h.name, "st": spell("words", h.colour)}
    return {1: "CN-330000", -260: {1: status}, 6: unix_s(h.issued_at), 4: unix_s(h.expires_at)}


def _gd(h: Holder) -> Any:
    return {
        7: bytes.fromhex(h.code_id),
        "sfz": h.idno,
        "xm": h.name,
        "ys": spell("chinese", h.colour),
        6: unix_s(h.issued_at),
        4: unix_s(h.expires_at),
    }


def _gz(h: Holder) -> Any:
    return {
        -70520: {1: h.idno, 2: h.name, 3: spell("int123", h.colour)},
        6: unix_s(h.issued_at),
        4: unix_s(h.expires_at),
    }


REGIONS: dict[str, Region] = {
    r.code: r
    for r in [
        Region("110000", "show", "compact", "EdDSA", "BJ1:", _bj, "base45", True),
        Region("230000", "convert", "compact", "SM2", "HLJ:", _hlj, "base64url", delimiter="|"),
        Region("340000", "show", "compact", "EdDSA", "AHM:", _ah, "base45", derived_id=True),
        Region("500000", "convert", "compact", "EdDSA", "CQJKM:", _cq, "base64url", True, ";"),
        Region("650000", "show", "compact", "EdDSA", "XJ-", _xj, "base45", True),
        Region("120000", "convert", "jws", "ES256", "TJHC:", _tj, typ="JWT"),
        Region("310000", "show", "jws", "EdDSA", "https://ssm.sh.gov.cn/hc#", _sh, compress=True),
        Region("410000", "convert", "jws", "ES256", "YU:", _ha, compress=True),
        Region("510000", "show", "jws", "EdDSA", "SCTFM:", _sc),
        Region(
            "630000",
            "convert",
            "jws",
            "ES256",
            "https://jkm.qh.gov.cn/v?c=",
            _qh,
            compress=True,
            derived_id=True,
        ),
        Region("130000", "show", "cose", "EdDSA", "HE1:", _he, "base45", True),
        Region("330000", "convert", "cose", "ES256", "ZJ1:", _zj, "base45", True, cose_wrap="61"),
        Region(
            "440000",
            "show",
            "cose",
            "ES256",
            "YKM:",
            _gd,
            "base64url",
            cose_wrap="untagged",
            kid_unprotected=True,
        ),
        Region("520000", "convert", "cose", "EdDSA", "GZ1:", _gz, "base45", True, derived_id=True),
    ]
}
BYTES_ID_REGIONS = {"130000", "440000"}  # §5: cti is a byte string, shown as hex


def _text(region: Region, blob: bytes) -> str:
    return base45(blob) if region.text == "base45" else b64url(blob)


def issue(region: Region, key: SigningKey, holder: Holder) -> str:
    """One code of ``region`` for ``holder``, signed by ``key`` (§2, §3, §4)."""
    claims = region.claims(holder)
    kid = key.kid.encode("ascii")
    if region.family == "compact":  # §2
        if region.delimiter:
            payload = region.delimiter.join(claims).encode("utf-8")
        else:
            payload = compact_json(claims)
        if region.compress:
            payload = zlib.compress(payload, 9)
        signed = b"\x01" + bytes([len(kid)]) + kid + payload
        return region.prefix + _text(region, signed + key.sign(signed))
    if region.family == "jws":  # §3
        header: dict[str, str] = {"alg": key.alg, "kid": key.kid}
        if region.compress:
            header["zip"] = "DEF"
        if region.typ:
            header["typ"] = region.typ
        body = compact_json(claims)
        if region.compress:
            body = raw_deflate(body)
        signing_input = f"{b64url(compact_json(header))}.{b64url(body)}"
        return f"{region.prefix}{signing_input}.{b64url(key.sign(signing_input.encode('ascii')))}"
    # §4 COSE_Sign1
    alg = -8 if key.alg == "EdDSA" else -7
    protected_map: dict[int, Any] = {1: alg} if region.kid_unprotected else {1: alg, 4: kid}
    unprotected: dict[int, Any] = {4: kid} if region.kid_unprotected else {}
    protected = cbor(protected_map)
    payload = cbor(claims)
    to_sign = cbor(["Signature1", protected, b"", payload])
    message: Any = [protected, unprotected, payload, key.sign(to_sign)]
    if region.cose_wrap == "18":
        message = Tag(18, message)
    elif region.cose_wrap == "61":
        message = Tag(61, Tag(18, message))
    raw = cbor(message)
    if region.compress:
        raw = zlib.compress(raw, 9)
    return region.prefix + _text(region, raw)


@dataclass
class Forger(SigningKey):
    """Signs like ``key`` but one bit of every signature is flipped (§1.5: bad signature)."""

    @classmethod
    def of(cls, key: SigningKey) -> Forger:
        return cls(key.alg, key.kid, key.private)

    def sign(self, data: bytes) -> bytes:
        good = super().sign(data)
        return bytes([good[0] ^ 0x01]) + good[1:]


# --- §1.6 derived code ids ---------------------------------------------------------------


def derived_code_id(region: Region, holder: Holder) -> str:
    """``d-`` + the first 32 hex digits of SHA-256 over the deterministic CBOR of the claims."""
    return "d-" + hashlib.sha256(cbor(region.claims(holder))).hexdigest()[:32]


def expected_code_id(region: Region, holder: Holder) -> str:
    return derived_code_id(region, holder) if region.derived_id else holder.code_id


def code_hash(region: str, code_id: str) -> str:
    """§1.6 step 4 (what a revocation batch lists)."""
    return hashlib.sha256(f"{region}|{code_id}".encode()).hexdigest()


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
