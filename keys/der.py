"""A minimal, bounded DER reader for X.509 certificates that pyca/cryptography refuses.

Some signer certificates in real use are not strict DER (negative or non-minimal serial numbers,
long-form lengths where the short form fits, a ``critical`` flag spelt ``01`` instead of ``FF``,
an explicit DEFAULT value ...). ``cryptography`` rightly refuses them, but the signature on a
health code does not depend on those details: a verifier needs only the certificate's
SubjectPublicKeyInfo and its extended-key-usage OIDs. This module walks just far enough to find
those two, with definite lengths only, a fixed nesting and a size limit; the SubjectPublicKeyInfo
it returns still goes through ``cryptography``'s strict key loader.

It is no general ASN.1 parser on purpose: a dependency such as asn1crypto would read more than we
need, and a few dozen lines are easier to bound and to fuzz.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from keys.errors import MalformedError, OversizedError

MAX_CERT_BYTES = 16 * 1024
MAX_CHILDREN = 64  # members of one SEQUENCE we look into (TBSCertificate, Extensions, EKU)
MAX_OID_BYTES = 64

TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_OID = 0x06
TAG_SEQUENCE = 0x30
TAG_VERSION = 0xA0  # [0] EXPLICIT Version
TAG_EXTENSIONS = 0xA3  # [3] EXPLICIT Extensions

OID_EXTENDED_KEY_USAGE = "2.5.29.37"


@dataclass(frozen=True)
class Tlv:
    """One tag-length-value item: offsets into the buffer it was read from."""

    tag: int
    start: int  # the identifier octet
    body: int  # the first content octet
    end: int  # one past the last content octet


@dataclass(frozen=True)
class CertificateInfo:
    """What a verifier needs from a signer certificate."""

    spki: bytes  # the DER SubjectPublicKeyInfo, exactly as found
    extended_key_usage: tuple[str, ...] | None  # dotted OIDs; None when there is no EKU extension


def read_tlv(data: bytes, pos: int, end: int) -> Tlv:
    """The item starting at ``pos``, which must end by ``end``; raises :class:`MalformedError`.

    Long-form lengths are accepted even where the short form would do (not DER, but harmless);
    indefinite lengths and high tag numbers are refused.
    """
    if pos + 2 > end:
        raise MalformedError("DER: truncated item")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise MalformedError("DER: high tag numbers are not supported")
    length = data[pos + 1]
    body = pos + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0:
            raise MalformedError("DER: indefinite lengths are not supported")
        if count > 3 or body + count > end:
            raise MalformedError("DER: length field too long or truncated")
        length = int.from_bytes(data[body : body + count], "big")
        body += count
    if body + length > end:
        raise MalformedError("DER: item runs past its container")
    return Tlv(tag, pos, body, body + length)


def children(data: bytes, parent: Tlv, limit: int = MAX_CHILDREN) -> list[Tlv]:
    """The items inside a constructed item, in order; at most ``limit`` of them."""
    if not parent.tag & 0x20:
        raise MalformedError("DER: a primitive item has no members")
    items: list[Tlv] = []
    pos = parent.body
    while pos < parent.end:
        if len(items) >= limit:
            raise MalformedError(f"DER: more than {limit} members")
        item = read_tlv(data, pos, parent.end)
        items.append(item)
        pos = item.end
    return items


def decode_oid(body: bytes) -> str:
    """Dotted text of an OBJECT IDENTIFIER's content octets."""
    if not 0 < len(body) <= MAX_OID_BYTES or body[-1] & 0x80:
        raise MalformedError("DER: bad object identifier")
    arcs: list[int] = []
    value = 0
    for octet in body:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))


def _expect(item: Tlv, tag: int, what: str) -> Tlv:
    if item.tag != tag:
        raise MalformedError(f"DER: {what} has tag {item.tag:#04x}, not {tag:#04x}")
    return item


def read_certificate(der: bytes) -> CertificateInfo:
    """The SubjectPublicKeyInfo and extended-key-usage OIDs of an X.509 certificate.

    Raises :class:`MalformedError` (or :class:`OversizedError`) when the structure cannot be an
    X.509 certificate. Nothing is verified here.
    """
    if len(der) > MAX_CERT_BYTES:
        raise OversizedError(f"the certificate exceeds {MAX_CERT_BYTES} bytes")
    cert = _expect(read_tlv(der, 0, len(der)), TAG_SEQUENCE, "Certificate")
    if cert.end != len(der):
        raise MalformedError("DER: bytes follow the certificate")
    parts = children(der, cert, 3)
    if len(parts) != 3:
        raise MalformedError("DER: a Certificate has three members")
    tbs = children(der, _expect(parts[0], TAG_SEQUENCE, "TBSCertificate"))
    index = 1 if tbs and tbs[0].tag == TAG_VERSION else 0
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    if len(tbs) < index + 6:
        raise MalformedError("DER: the TBSCertificate is too short")
    _expect(tbs[index], TAG_INTEGER, "serialNumber")
    spki = _expect(tbs[index + 5], TAG_SEQUENCE, "subjectPublicKeyInfo")
    eku: tuple[str, ...] | None = None
    for item in tbs[index + 6 :]:
        if item.tag != TAG_EXTENSIONS:
            continue
        inner = children(der, item, 1)
        if len(inner) != 1:
            raise MalformedError("DER: [3] holds one Extensions sequence")
        for extension in children(der, _expect(inner[0], TAG_SEQUENCE, "Extensions")):
            members = children(der, _expect(extension, TAG_SEQUENCE, "Extension"), 3)
            if not members:
                raise MalformedError("DER: an empty Extension")
            oid = _expect(members[0], TAG_OID, "extnID")
            if decode_oid(der[oid.body : oid.end]) != OID_EXTENDED_KEY_USAGE:
                continue
            if eku is not None:
                raise MalformedError("DER: the extended-key-usage extension appears twice")
            value = _expect(members[-1], TAG_OCTET_STRING, "extnValue")
            seq = _expect(read_tlv(der, value.body, value.end), TAG_SEQUENCE, "ExtKeyUsageSyntax")
            if seq.end != value.end:
                raise MalformedError("DER: bytes follow the ExtKeyUsageSyntax")
            eku = tuple(
                decode_oid(der[o.body : o.end])
                for o in (_expect(m, TAG_OID, "KeyPurposeId") for m in children(der, seq))
            )
    return CertificateInfo(der[spki.start : spki.end], eku)


_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]{1,40})-----([A-Za-z0-9+/=\s]{0,32768}?)-----END \1-----"
)
MAX_PEM_BLOCKS = 32


def pem_blocks(data: bytes, label: str) -> list[bytes]:
    """The DER bytes of every ``-----BEGIN <label>-----`` block in ``data`` (at most 32)."""
    blocks: list[bytes] = []
    for match in _PEM_BLOCK.finditer(data):
        if match.group(1) != label.encode("ascii"):
            continue
        if len(blocks) >= MAX_PEM_BLOCKS:
            raise OversizedError(f"more than {MAX_PEM_BLOCKS} PEM blocks")
        try:
            blocks.append(base64.b64decode(b"".join(match.group(2).split()), validate=True))
        except (binascii.Error, ValueError):
            raise MalformedError(f"a PEM {label} block is not base64") from None
    return blocks


__all__ = ["CertificateInfo", "pem_blocks", "read_certificate", "read_tlv"]
