"""Envelope family (c): COSE_Sign1 (RFC 9052) carrying CWT claims (RFC 8392).

``prefix || TEXT(COMPRESS(COSE_Sign1))`` where TEXT is base45 (as EU DCC "HC1:") or base64url
and COMPRESS is zlib or nothing. COSE_Sign1 is ``[protected bstr, unprotected map, payload bstr,
signature bstr]``, untagged, with tag 18, or with tag 18 inside CWT tag 61. The header's alg
(label 1: -7 ES256, -8 EdDSA, -37 PS256) and kid (label 4, bstr) are taken from the protected
header first, from the unprotected header otherwise. The signature covers the canonical CBOR of
``["Signature1", protected bstr as received, h'' (external_aad), payload bstr]``. The same codec
reads EU DCC "HC1:" (ES256/PS256, kid = base64 of 8 bytes).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, ClassVar

import cbor2

from adapters.base import MAX_CODE_CHARS, MAX_DECOMPRESSED_BYTES, CodeEnvelope
from adapters.codecs.encoding import (
    Compression,
    TextEncoding,
    compress,
    decode_text,
    decompress,
    dump_cbor,
    encode_text,
    parse_cbor,
    strip_prefix,
)
from keys.crypto import Algorithm, PrivateKey
from keys.errors import AlgorithmUnsupportedError, MalformedError
from keys.keyid import check_kid, require_kid

TAG_SIGN1 = 18
TAG_CWT = 61
LABEL_ALG = 1
LABEL_CRIT = 2
LABEL_KID = 4
MAX_HEADER_BYTES = 1024
MAX_HEADER_DEPTH = 4
MAX_KID_BYTES = 128

COSE_ALGS: Mapping[int, Algorithm] = {
    -7: Algorithm.ES256,
    -8: Algorithm.EDDSA,
    -37: Algorithm.PS256,
}
COSE_ALG_IDS: Mapping[Algorithm, int] = {alg: ident for ident, alg in COSE_ALGS.items()}


class KidForm(StrEnum):
    """How the kid's bytes (COSE label 4) are written as the registry's key id text."""

    UTF8 = "utf8"  # the bytes are the key id's ASCII text
    BASE64 = "base64"  # standard base64 of the bytes (the EU DCC trust-list convention)
    HEX = "hex"  # lower-case hex of the bytes


class CoseTag(Enum):
    """How ``seal()`` wraps the COSE_Sign1 array; ``open()`` accepts all three."""

    UNTAGGED = ()
    SIGN1 = (TAG_SIGN1,)
    CWT_SIGN1 = (TAG_CWT, TAG_SIGN1)


@dataclass(frozen=True)
class CoseCodec:
    """A region's COSE_Sign1: prefix, text encoding, compression, algorithms, kid form."""

    prefix: str
    algs: frozenset[Algorithm]
    text: TextEncoding = TextEncoding.BASE45
    compression: Compression = Compression.ZLIB
    kid_form: KidForm = KidForm.UTF8
    tag: CoseTag = CoseTag.SIGN1
    kid_in_protected: bool = True
    max_message_bytes: int = MAX_DECOMPRESSED_BYTES  # the COSE message, after inflating

    family: ClassVar[str] = "cose"

    def __post_init__(self) -> None:
        if not self.algs:
            raise ValueError("a COSE codec allows at least one algorithm")
        if self.compression is Compression.DEFLATE:
            raise ValueError("COSE codes are zlib-compressed or not compressed")

    # -- the gateway side ----------------------------------------------------------------

    def open(self, text: str) -> CodeEnvelope:
        """Decode the text, inflate (bounded) and unwrap the COSE_Sign1; trusts nothing yet.

        Raises :class:`AlgorithmUnsupportedError` for an algorithm outside the allow-list,
        :class:`MalformedError` (or :class:`OversizedError`) for anything else.
        """
        data = decode_text(self.text, strip_prefix(text, self.prefix), limit=MAX_CODE_CHARS)
        return self.open_message(decompress(self.compression, data, limit=self.max_message_bytes))

    def open_message(self, inflated: bytes) -> CodeEnvelope:
        """The COSE layer of :meth:`open`, for callers that ran the text layers step by step."""
        message = _unwrap(parse_cbor(inflated, limit=self.max_message_bytes))
        protected_bytes, unprotected, payload, signature = message
        if not isinstance(protected_bytes, bytes):
            raise MalformedError("the COSE protected header is not a byte string")
        if not isinstance(unprotected, Mapping):
            raise MalformedError("the COSE unprotected header is not a map")
        if not isinstance(payload, bytes):
            raise MalformedError("the COSE payload is missing or not a byte string")
        if not isinstance(signature, bytes):
            raise MalformedError("the COSE signature is not a byte string")
        protected: Mapping[Any, Any] = {}
        if protected_bytes:
            decoded = parse_cbor(
                protected_bytes, limit=MAX_HEADER_BYTES, max_depth=MAX_HEADER_DEPTH
            )
            if not isinstance(decoded, Mapping):
                raise MalformedError("the COSE protected header is not a map")
            protected = decoded
        if LABEL_CRIT in protected or LABEL_CRIT in unprotected:
            raise MalformedError("COSE crit headers are not supported")
        alg = self._alg(protected.get(LABEL_ALG, unprotected.get(LABEL_ALG)))
        kid_bytes = protected.get(LABEL_KID, unprotected.get(LABEL_KID))
        return CodeEnvelope(
            kid_hint=None if kid_bytes is None else self._kid_text(kid_bytes),
            alg=alg,
            signing_input=sig_structure(protected_bytes, payload),
            signature=signature,
            payload=payload,
        )

    def _alg(self, ident: Any) -> Algorithm:
        if ident is None:
            raise MalformedError("the COSE header has no alg")
        if type(ident) is not int or ident not in COSE_ALGS:
            raise AlgorithmUnsupportedError(f"COSE algorithm {str(ident)[:16]!r} is not accepted")
        alg = COSE_ALGS[ident]
        if alg not in self.algs:
            raise AlgorithmUnsupportedError(f"the region does not sign with {alg}")
        return alg

    def _kid_text(self, kid: Any) -> str:
        """The key id text of a label-4 byte string, under the one key-id rule."""
        if not isinstance(kid, bytes) or not 0 < len(kid) <= MAX_KID_BYTES:
            raise MalformedError("the COSE kid is not a byte string of 1 to 128 bytes")
        if self.kid_form is KidForm.BASE64:
            text = base64.b64encode(kid).decode("ascii")
        elif self.kid_form is KidForm.HEX:
            text = kid.hex()
        else:
            try:
                text = kid.decode("ascii")
            except UnicodeDecodeError:
                raise MalformedError("the COSE kid is not ASCII text") from None
        return check_kid(text, "the COSE kid", echo=False)

    def claims(self, payload: bytes) -> Mapping[Any, Any]:
        """Parse the verified CWT claims map (bounded); raises :class:`MalformedError`."""
        claims = parse_cbor(payload, limit=self.max_message_bytes)
        if not isinstance(claims, Mapping):
            raise MalformedError("the CWT claims are not a CBOR map")
        return claims

    # -- the issuer side -----------------------------------------------------------------

    def kid_bytes(self, kid: str) -> bytes:
        """The label-4 bytes that spell ``kid`` in this codec's kid form."""
        if self.kid_form is KidForm.BASE64:
            try:
                return base64.b64decode(kid, validate=True)
            except binascii.Error:
                raise ValueError("the key id is not base64") from None
        if self.kid_form is KidForm.HEX:
            return bytes.fromhex(kid)
        return require_kid(kid).encode("ascii")

    def seal(self, claims: Mapping[Any, Any], key: PrivateKey, kid: str) -> str:
        """Write a code (issuer side); raises ``ValueError`` for a key or kid it cannot use."""
        if key.alg not in self.algs:
            raise ValueError(f"the region does not sign with {key.alg}")
        kid_bytes = self.kid_bytes(kid)
        protected_map: dict[int, Any] = {LABEL_ALG: COSE_ALG_IDS[key.alg]}
        unprotected: dict[int, Any] = {}
        (protected_map if self.kid_in_protected else unprotected)[LABEL_KID] = kid_bytes
        protected = dump_cbor(protected_map)
        payload = dump_cbor(dict(claims))
        message: Any = [
            protected,
            unprotected,
            payload,
            key.sign(sig_structure(protected, payload)),
        ]
        for tag in reversed(self.tag.value):
            message = cbor2.CBORTag(tag, message)
        return self.prefix + encode_text(self.text, compress(self.compression, dump_cbor(message)))


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """The bytes a COSE_Sign1 signature covers (RFC 9052 section 4.4), with empty external_aad."""
    return dump_cbor(["Signature1", protected, b"", payload])


def _unwrap(item: Any) -> tuple[Any, Any, Any, Any]:
    """The four members of a COSE_Sign1: untagged, tag 18, or tag 18 inside CWT tag 61."""
    if isinstance(item, cbor2.CBORTag) and item.tag == TAG_CWT:
        item = item.value
        if not (isinstance(item, cbor2.CBORTag) and item.tag == TAG_SIGN1):
            raise MalformedError("CWT tag 61 does not wrap a COSE_Sign1 (tag 18)")
    if isinstance(item, cbor2.CBORTag):
        if item.tag != TAG_SIGN1:
            raise MalformedError(f"CBOR tag {item.tag} is not a COSE_Sign1")
        item = item.value
    if not isinstance(item, (list, tuple)) or len(item) != 4:
        raise MalformedError("a COSE_Sign1 is an array of four items")
    return item[0], item[1], item[2], item[3]


__all__ = ["COSE_ALGS", "CoseCodec", "CoseTag", "KidForm", "sig_structure"]
