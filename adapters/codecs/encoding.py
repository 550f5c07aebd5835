"""Bounded, strict decoders shared by every envelope family.

Each function takes a hard size limit and raises only the project's errors: :class:`MalformedError`
for bad input and :class:`OversizedError` when an input or an output would exceed its limit. They
are strict on purpose: one accepted spelling per value, so that two gateways never disagree about
what a code says.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import cbor2

from adapters.base import MAX_CBOR_DEPTH, MAX_DECOMPRESSED_BYTES, MAX_JSON_DEPTH
from keys.crypto import b64url_decode, b64url_encode
from keys.errors import MalformedError, OversizedError
from keys.jsonutil import loads_strict

# --- base45 (RFC 9285) ------------------------------------------------------------------------

B45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
# bytes.translate table: a base45 character -> its value 0..44; anything else -> 0xFF.
_B45_VALUES = bytes(
    B45_ALPHABET.index(chr(i)) if chr(i) in B45_ALPHABET else 0xFF for i in range(256)
)
_B45_CHARS = B45_ALPHABET.encode("ascii")


def b45encode(data: bytes) -> str:
    """RFC 9285 base45: each 2 bytes -> 3 characters, a last odd byte -> 2 characters."""
    out = bytearray()
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        n, c = divmod(n, 45)
        e, d = divmod(n, 45)
        out += bytes((_B45_CHARS[c], _B45_CHARS[d], _B45_CHARS[e]))
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += bytes((_B45_CHARS[c], _B45_CHARS[d]))
    return out.decode("ascii")


def b45decode(text: str, *, limit: int) -> bytes:
    """Strict RFC 9285 base45 decoding of at most ``limit`` characters.

    Rejects characters outside the 45-character alphabet (lower case included), a dangling single
    character, triplets above 65535 and a final pair above 255.
    """
    if len(text) > limit:
        raise OversizedError(f"base45 text exceeds {limit} characters")
    if not text.isascii():
        raise MalformedError("base45 text holds non-ASCII characters")
    values = text.encode("ascii").translate(_B45_VALUES)
    if b"\xff" in values:
        raise MalformedError("base45 text holds a character outside the base45 alphabet")
    tail = len(values) % 3
    if tail == 1:
        raise MalformedError("base45 text has a dangling character")
    full = len(values) - tail
    count = full // 3
    # Each triplet (c, d, e) becomes c + 45*d + 2025*e. Rather than loop in Python, lay the c, d
    # and e digits into the low byte of 32-bit slots of three big integers and combine them in
    # one pass: no slot can carry into the next (44 + 45*44 + 2025*44 < 2**17), so byte 1 of a
    # slot is non-zero exactly when its triplet exceeds 65535.
    slots = bytearray(4 * count)
    slots[3::4] = values[0:full:3]
    c = int.from_bytes(slots, "big")
    slots[3::4] = values[1:full:3]
    d = int.from_bytes(slots, "big")
    slots[3::4] = values[2:full:3]
    e = int.from_bytes(slots, "big")
    words = (c + 45 * d + 2025 * e).to_bytes(4 * count, "big")
    if words[1::4].count(0) != count:
        raise MalformedError("base45 triplet exceeds 65535")
    decoded = bytearray(2 * count + tail // 2)
    decoded[0 : 2 * count : 2] = words[2::4]
    decoded[1 : 2 * count : 2] = words[3::4]
    if tail == 2:
        last = values[full] + values[full + 1] * 45
        if last > 0xFF:
            raise MalformedError("base45 final pair exceeds 255")
        decoded[-1] = last
    return bytes(decoded)


# --- text layer -------------------------------------------------------------------------------


class TextEncoding(StrEnum):
    """How a binary code is written as text after its prefix."""

    BASE45 = "base45"  # RFC 9285, QR alphanumeric mode
    BASE64URL = "base64url"  # RFC 4648 section 5, no padding


def b64url_strict(text: str, *, limit: int) -> bytes:
    """Base64url without padding, in its one canonical spelling.

    ``keys.crypto.b64url_decode`` ignores the unused low bits of the last character, so several
    spellings decode to the same bytes; re-encoding and comparing refuses all but one, so a code
    cannot be altered without its text changing meaning.
    """
    if len(text) > limit:
        raise OversizedError(f"base64url text exceeds {limit} characters")
    data = b64url_decode(text, limit=limit)
    if b64url_encode(data) != text:
        raise MalformedError("base64url text is not in canonical form")
    return data


def decode_text(encoding: TextEncoding, text: str, *, limit: int) -> bytes:
    """The bytes of a code's text part in ``encoding`` (base45 or strict base64url), at most
    ``limit``; raises :class:`MalformedError`, :class:`OversizedError`.
    """
    if encoding is TextEncoding.BASE45:
        return b45decode(text, limit=limit)
    return b64url_strict(text, limit=limit)


def encode_text(encoding: TextEncoding, data: bytes) -> str:
    """``data`` as text in ``encoding`` (the issuer's side of :func:`decode_text`)."""
    if encoding is TextEncoding.BASE45:
        return b45encode(data)
    return b64url_encode(data)


def strip_prefix(text: str, prefix: str) -> str:
    """The text after ``prefix``; :class:`MalformedError` when the code does not start with it."""
    if not text.startswith(prefix):
        raise MalformedError(f"the code does not start with {prefix!r}")
    return text[len(prefix) :]


# --- compression ------------------------------------------------------------------------------


class Compression(StrEnum):
    """How a region compresses its payload: not, zlib (RFC 1950) or raw DEFLATE (RFC 1951)."""

    NONE = "none"
    ZLIB = "zlib"  # RFC 1950: 2-byte header, DEFLATE, Adler-32
    DEFLATE = "deflate"  # RFC 1951 raw DEFLATE, as JWS "zip":"DEF"


def inflate(data: bytes, *, raw: bool, limit: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """Decompress a complete zlib (``raw=False``) or raw DEFLATE stream of at most ``limit`` bytes.

    Decompression stops at the limit, so a bomb never allocates more than ``limit`` bytes:
    output beyond it raises :class:`OversizedError`; an incomplete stream or bytes after its end
    raise :class:`MalformedError`.
    """
    inflater = zlib.decompressobj(-15 if raw else 15)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise MalformedError("the compressed data is corrupt") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise OversizedError(f"the decompressed data exceeds {limit} bytes")
    if not inflater.eof:
        raise MalformedError("the compressed data is truncated")
    if inflater.unused_data:
        raise MalformedError("bytes follow the end of the compressed data")
    return out


def deflate(data: bytes, *, raw: bool) -> bytes:
    """Compress at level 9 (the level the reference issuer uses; verifiers do not care)."""
    if raw:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(data) + compressor.flush()
    return zlib.compress(data, 9)


def decompress(
    compression: Compression, data: bytes, *, limit: int = MAX_DECOMPRESSED_BYTES
) -> bytes:
    """Undo ``compression``; the result is at most ``limit`` bytes, else :class:`OversizedError`.
    Raises :class:`MalformedError` for a damaged stream.
    """
    if compression is Compression.NONE:
        if len(data) > limit:
            raise OversizedError(f"the payload exceeds {limit} bytes")
        return data
    return inflate(data, raw=compression is Compression.DEFLATE, limit=limit)


def compress(compression: Compression, data: bytes) -> bytes:
    """Apply ``compression`` (the issuer's side of :func:`decompress`)."""
    if compression is Compression.NONE:
        return data
    return deflate(data, raw=compression is Compression.DEFLATE)


# --- JSON -------------------------------------------------------------------------------------


def parse_json(
    data: bytes, *, limit: int = MAX_DECOMPRESSED_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """Parse UTF-8 JSON of at most ``limit`` bytes and ``max_depth`` nesting levels.

    The project's one strict parser (:func:`keys.jsonutil.loads_strict`) with the adapters'
    limits: raises :class:`OversizedError` above either limit, :class:`MalformedError` for
    duplicate member names, NaN/Infinity, numbers that overflow to infinity, lone surrogates
    and anything that is not JSON.
    """
    return loads_strict(data, max_bytes=limit, max_depth=max_depth)


def dump_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, members in insertion order (the reference issuer's form)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


# --- CBOR -------------------------------------------------------------------------------------


def _refuse_tag(*_: Any) -> Any:
    raise MalformedError("a CBOR tag with built-in semantics is not accepted")


@dataclass(frozen=True)
class DateTag:
    """A CBOR tag 0 (RFC 3339 date-time text) or 1 (epoch seconds) as found, not yet trusted.

    Only :func:`parse_cbor` with ``date_tags=True`` produces these (the EU DCC verifier, which
    accepts them where the DCC schema holds a date-time); every other caller refuses the tags.
    """

    tag: int
    value: Any


def _date_tag(tag: int) -> Any:
    def keep(value: Any, *_: Any) -> DateTag:
        return DateTag(tag, value)

    return keep


# cbor2 gives these tags built-in meanings (dates, bignums, regular expressions, MIME, shared
# references ...). None is needed by a health code and some are attack surface, so each is refused;
# every other tag decodes to a plain ``cbor2.CBORTag`` for the caller to judge.
_BUILTIN_TAGS = (
    0,
    1,
    2,
    3,
    4,
    5,
    25,
    28,
    29,
    30,
    35,
    36,
    37,
    52,
    54,
    100,
    256,
    258,
    260,
    261,
    1004,
    43000,
    55799,
)
_SEMANTIC_DECODERS = {tag: _refuse_tag for tag in _BUILTIN_TAGS}
_DATE_TAG_DECODERS = {**_SEMANTIC_DECODERS, 0: _date_tag(0), 1: _date_tag(1)}
CBOR2_FLOOR = "6.1.5"


def _check_cbor2() -> None:
    """Fail at import, loudly, when the installed cbor2 cannot decode as strictly as needed.

    cbor2 before 6.1 has no ``max_depth``, ``allow_duplicate_keys`` or ``semantic_decoders``
    (without this check every CBOR input would be refused, one by one, as malformed); before
    6.1.5 it returns a stray break code (``ff``) as a value instead of refusing it.
    """
    try:
        decoder = cbor2.CBORDecoder(
            io.BytesIO(b"\xff"), max_depth=1, allow_duplicate_keys=False, semantic_decoders={}
        )
    except TypeError as exc:
        raise ImportError(f"trustgw needs cbor2 >= {CBOR2_FLOOR}: {exc}") from exc
    try:
        decoder.decode()
    except cbor2.CBORDecodeError:
        return
    raise ImportError(f"trustgw needs cbor2 >= {CBOR2_FLOOR}: this one accepts a stray break code")


_check_cbor2()


def parse_cbor(
    data: bytes,
    *,
    limit: int = MAX_DECOMPRESSED_BYTES,
    max_depth: int = MAX_CBOR_DEPTH,
    date_tags: bool = False,
) -> Any:
    """Decode exactly one CBOR item of at most ``limit`` bytes and ``max_depth`` levels.

    Duplicate map keys, trailing bytes and tags with built-in semantics are refused; any cbor2
    failure becomes :class:`MalformedError`. With ``date_tags`` tags 0 and 1 come back as
    :class:`DateTag` values for the caller to accept where it expects a date-time, or refuse.
    """
    if len(data) > limit:
        raise OversizedError(f"the CBOR data exceeds {limit} bytes")
    stream = io.BytesIO(data)
    # Built outside the try: a decoder that cannot be built is a programming error, not bad input.
    decoder = cbor2.CBORDecoder(
        stream,
        max_depth=max_depth,
        allow_duplicate_keys=False,
        semantic_decoders=_DATE_TAG_DECODERS if date_tags else _SEMANTIC_DECODERS,
    )
    try:
        value = decoder.decode()
    except RecursionError:
        raise OversizedError("the CBOR data is nested too deeply") from None
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        if "nesting depth" in str(exc):
            raise OversizedError(
                f"the CBOR data is nested deeper than {max_depth} levels"
            ) from None
        raise MalformedError(f"the CBOR data is invalid ({str(exc)[:80]})") from None
    if stream.tell() != len(data):
        raise MalformedError("bytes follow the end of the CBOR data")
    return value


def _head(major: int, argument: int) -> bytes:
    """An item's initial byte and argument, in the shortest form (RFC 8949 section 4.2.1)."""
    if argument < 24:
        return bytes((major << 5 | argument,))
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if argument < 1 << (8 * size):
            return bytes((major << 5 | info,)) + argument.to_bytes(size, "big")
    raise ValueError("a CBOR argument exceeds 64 bits")


def _encode(value: Any, out: bytearray) -> None:
    if isinstance(value, str):
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedError("a text string is not valid Unicode (a lone surrogate)") from None
        out += _head(3, len(data)) + data
    elif isinstance(value, (bytes, bytearray)):
        out += _head(2, len(value)) + value
    elif isinstance(value, Mapping):
        entries = sorted(((dump_cbor(k), v) for k, v in value.items()), key=lambda e: e[0])
        out += _head(5, len(entries))
        for key, item in entries:
            out += key
            _encode(item, out)
    elif isinstance(value, (list, tuple)):
        out += _head(4, len(value))
        for item in value:
            _encode(item, out)
    elif isinstance(value, cbor2.CBORTag):
        out += _head(6, value.tag)
        _encode(value.value, out)
    elif (
        value is None
        or value is cbor2.undefined
        or isinstance(value, (bool, int, float, cbor2.CBORSimpleValue))
    ):
        # Integers (bignums, tag 2/3, beyond 64 bits), floats in the shortest of half, single
        # or double precision that keeps the value, and simple values: cbor2 writes these
        # deterministically; only its map key order (RFC 7049 length-first) is not RFC 8949's.
        out += cbor2.dumps(value, canonical=True)
    else:
        raise TypeError(f"a {type(value).__name__} has no CBOR encoding here")


def dump_cbor(value: Any) -> bytes:
    """The core deterministic encoding of RFC 8949 section 4.2.1.

    Shortest heads, definite lengths, floats in their shortest exact form, and map entries
    sorted by the bytewise lexicographic order of their encoded keys. (``cbor2``'s own
    ``canonical=True`` sorts keys length-first, as RFC 7049 did: it puts -1 (``20``) before
    24 (``1818``), RFC 8949 the other way round; docs/partners.md section 1.6.) Raises
    :class:`MalformedError` for text that is not valid Unicode.
    """
    out = bytearray()
    _encode(value, out)
    return bytes(out)


__all__ = [
    "B45_ALPHABET",
    "CBOR2_FLOOR",
    "Compression",
    "DateTag",
    "TextEncoding",
    "b45decode",
    "b45encode",
    "b64url_decode",
    "b64url_encode",
    "b64url_strict",
    "compress",
    "decode_text",
    "decompress",
    "deflate",
    "dump_cbor",
    "dump_json",
    "encode_text",
    "inflate",
    "parse_cbor",
    "parse_json",
    "strip_prefix",
]
