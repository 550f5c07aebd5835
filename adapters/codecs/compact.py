"""Envelope family (a): a compact envelope, signed with Ed25519 or (one variant) SM2.

Layout of the binary code, before its text encoding (base45 or base64url) and its prefix::

    0x01 | kid length L (1 byte, 1..128) | kid (L ASCII bytes) | payload | signature (64 bytes)

The signature covers every byte before it (version, kid length, kid, payload), exactly as
shipped. It is Ed25519, or for a region of the SM2 variant the raw r || s of an SM2 signature over
SM3 with the default signer id (docs/crypto.md §1); the region fixes which, the code never says.
The payload is the region's claims, as compact JSON or a delimited text line, optionally
zlib-compressed; it is decompressed only after the signature verified.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from adapters.base import MAX_CODE_CHARS, MAX_DECOMPRESSED_BYTES, CodeEnvelope
from adapters.codecs.encoding import (
    Compression,
    TextEncoding,
    compress,
    decode_text,
    decompress,
    dump_json,
    encode_text,
    parse_json,
    strip_prefix,
)
from keys.crypto import Algorithm, PrivateKey
from keys.errors import MalformedError
from keys.keyid import check_kid, require_kid

VERSION = 0x01
SIGNATURE_BYTES = 64


class PayloadForm(Protocol):
    """How a compact envelope's payload bytes spell the claims."""

    def parse(self, data: bytes) -> Mapping[str, Any]:
        """The claims of a payload; raises :class:`MalformedError` (or a subclass)."""
        ...

    def dump(self, claims: Mapping[str, Any]) -> bytes:
        """The payload of ``claims`` (the issuer's side of :meth:`parse`)."""
        ...


@dataclass(frozen=True)
class JsonPayload:
    """A UTF-8 JSON object."""

    def parse(self, data: bytes) -> Mapping[str, Any]:
        """The claims of a JSON object payload; raises :class:`MalformedError`,
        :class:`OversizedError`.
        """
        claims = parse_json(data)
        if not isinstance(claims, dict):
            raise MalformedError("the claims are not a JSON object")
        return claims

    def dump(self, claims: Mapping[str, Any]) -> bytes:
        """Compact UTF-8 JSON of ``claims`` (the reference issuer's form)."""
        return dump_json(dict(claims))


@dataclass(frozen=True)
class DelimitedPayload:
    """One UTF-8 text line: the values of ``fields``, in that order, joined by ``separator``.

    Values named in ``integers`` are unsigned decimal integers (no sign, no leading zero, at most
    15 digits) and are read as ``int``; every other value is text.
    """

    fields: tuple[str, ...]
    separator: str = "|"
    integers: frozenset[str] = field(default_factory=frozenset)

    MAX_DIGITS: ClassVar[int] = 15

    def __post_init__(self) -> None:
        if len(set(self.fields)) != len(self.fields) or not self.fields:
            raise ValueError("field names must be unique and non-empty")
        if len(self.separator) != 1:
            raise ValueError("the separator is one character")
        if not self.integers <= set(self.fields):
            raise ValueError("integer fields must be among the fields")

    def parse(self, data: bytes) -> Mapping[str, Any]:
        """The named values of one delimited line; raises :class:`MalformedError` for a wrong number
        of fields, a non-integer in an integer field, or text that is not UTF-8.
        """
        if len(data) > MAX_DECOMPRESSED_BYTES:
            raise MalformedError("the payload is too long")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedError("the payload is not UTF-8") from None
        values = text.split(self.separator)
        if len(values) != len(self.fields):
            raise MalformedError(f"the payload has {len(values)} fields, not {len(self.fields)}")
        claims: dict[str, Any] = {}
        for name, value in zip(self.fields, values, strict=True):
            if name in self.integers:
                if not (
                    value.isascii()
                    and value.isdigit()
                    and len(value) <= self.MAX_DIGITS
                    and (value == "0" or not value.startswith("0"))
                ):
                    raise MalformedError(f"field {name} is not an unsigned decimal integer")
                claims[name] = int(value)
            else:
                claims[name] = value
        return claims

    def dump(self, claims: Mapping[str, Any]) -> bytes:
        """The values of ``fields`` joined by the separator; raises ``ValueError`` when a value
        holds the separator or a newline.
        """
        values = []
        for name in self.fields:
            value = claims[name]
            text = str(value)
            if self.separator in text or "\n" in text:
                raise ValueError(f"field {name} contains the separator")
            values.append(text)
        return self.separator.join(values).encode("utf-8")


# The algorithms whose signatures are 64 bytes and need no header to tell them apart.
COMPACT_ALGORITHMS = frozenset({Algorithm.EDDSA, Algorithm.SM2})


@dataclass(frozen=True)
class CompactCodec:
    """A region's compact envelope: prefix, text encoding, compression, payload form and the one
    algorithm its codes are signed with (Ed25519 unless the region is of the SM2 variant)."""

    prefix: str
    text: TextEncoding
    compression: Compression
    payload: PayloadForm
    alg: Algorithm = Algorithm.EDDSA

    family: ClassVar[str] = "compact"

    def __post_init__(self) -> None:
        if self.alg not in COMPACT_ALGORITHMS:
            raise ValueError(f"a compact envelope is not signed with {self.alg}")

    @property
    def algs(self) -> frozenset[Algorithm]:
        """The one algorithm the region's compact envelope is signed with."""
        return frozenset({self.alg})

    def open(self, text: str) -> CodeEnvelope:
        """Split the code into kid, signed bytes, payload and signature; trusts nothing yet.

        Raises :class:`MalformedError` (:class:`OversizedError` past a size limit).
        """
        blob = decode_text(self.text, strip_prefix(text, self.prefix), limit=MAX_CODE_CHARS)
        if len(blob) < 3 + SIGNATURE_BYTES:
            raise MalformedError("the code is too short")
        if blob[0] != VERSION:
            raise MalformedError(f"unknown compact envelope version {blob[0]}")
        kid_end = 2 + blob[1]
        if blob[1] == 0 or kid_end >= len(blob) - SIGNATURE_BYTES:
            raise MalformedError("the key id length is out of range")
        try:
            kid = check_kid(blob[2:kid_end].decode("ascii"), "the key id", echo=False)
        except UnicodeDecodeError:
            raise MalformedError("the key id is not ASCII") from None
        signed = blob[:-SIGNATURE_BYTES]
        return CodeEnvelope(
            kid_hint=kid,
            alg=self.alg,
            signing_input=signed,
            signature=blob[-SIGNATURE_BYTES:],
            payload=signed[kid_end:],
        )

    def claims(self, payload: bytes) -> Mapping[str, Any]:
        """Decompress (bounded) and parse the verified payload; raises :class:`MalformedError`."""
        return self.payload.parse(decompress(self.compression, payload))

    def seal(self, claims: Mapping[Any, Any], key: PrivateKey, kid: str) -> str:
        """Write a code (issuer side); raises ``ValueError`` for a key of another algorithm than
        the region's or a bad kid."""
        if key.alg is not self.alg:
            raise ValueError(f"this compact envelope is signed with {self.alg} only")
        kid_bytes = require_kid(kid).encode("ascii")
        signed = (
            bytes((VERSION, len(kid_bytes)))
            + kid_bytes
            + compress(self.compression, self.payload.dump(claims))
        )
        return self.prefix + encode_text(self.text, signed + key.sign(signed))


__all__ = ["CompactCodec", "DelimitedPayload", "JsonPayload", "PayloadForm"]
