"""Envelope family (b): JWS compact serialisation (RFC 7515) after a region's prefix.

``prefix || BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature)``

The signature covers the ASCII bytes ``BASE64URL(header) "." BASE64URL(payload)`` as received.
Algorithms: ES256 (raw 64-byte r||s) and EdDSA (Ed25519), from a per-codec allow-list; ``none``,
unknown algorithms and any ``crit`` header are refused. With ``deflate=True`` the header must say
``"zip":"DEF"`` and the payload is raw DEFLATE (RFC 1951) of the JSON claims, inflated (bounded)
only after the signature verified; with ``deflate=False`` a ``zip`` header is refused. The same
codec reads SMART Health Cards (``zip`` DEF, ES256, kid = JWK thumbprint).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from adapters.base import MAX_CODE_CHARS, MAX_DECOMPRESSED_BYTES, MAX_JSON_DEPTH, CodeEnvelope
from adapters.codecs.encoding import (
    Compression,
    b64url_encode,
    b64url_strict,
    compress,
    decompress,
    dump_json,
    parse_json,
    strip_prefix,
)
from keys.crypto import Algorithm, PrivateKey
from keys.errors import AlgorithmUnsupportedError, MalformedError
from keys.keyid import check_kid
from keys.keyid import require_kid as issuer_kid

MAX_HEADER_BYTES = 1024
MAX_HEADER_DEPTH = 4
# Header members whose meaning would change how the signature or payload is read; we implement
# none of the extensions, so a header naming them is refused rather than misread.
_REFUSED_MEMBERS = ("crit", "b64", "enc", "jku", "x5u", "jwk")


@dataclass(frozen=True)
class JwsCodec:
    """A region's JWS: prefix, allowed algorithms, compression and the header ``typ`` it writes."""

    prefix: str
    algs: frozenset[Algorithm]
    deflate: bool = False
    typ: str | None = None
    require_kid: bool = True
    max_payload_bytes: int = MAX_DECOMPRESSED_BYTES  # claims JSON, after inflating
    max_code_chars: int = MAX_CODE_CHARS  # the payload's base64url text
    max_payload_depth: int = MAX_JSON_DEPTH  # claims JSON nesting

    family: ClassVar[str] = "jws"

    def __post_init__(self) -> None:
        if not self.algs:
            raise ValueError("a JWS codec allows at least one algorithm")

    def open(self, text: str) -> CodeEnvelope:
        """Check the header and split the JWS; trusts nothing yet.

        Raises :class:`AlgorithmUnsupportedError` for ``none`` or an algorithm outside the
        allow-list, :class:`MalformedError` (or :class:`OversizedError`) for anything else.
        """
        body = strip_prefix(text, self.prefix)
        parts = body.split(".")
        if len(parts) != 3:
            raise MalformedError("a compact JWS has three parts separated by '.'")
        header_b64, payload_b64, signature_b64 = parts
        header_bytes = b64url_strict(header_b64, limit=MAX_HEADER_BYTES * 4 // 3 + 4)
        header = parse_json(header_bytes, limit=MAX_HEADER_BYTES, max_depth=MAX_HEADER_DEPTH)
        if not isinstance(header, dict):
            raise MalformedError("the JWS header is not a JSON object")
        alg, kid = self._check_header(header)
        payload = b64url_strict(payload_b64, limit=self.max_code_chars)
        signature = b64url_strict(signature_b64, limit=1024)
        return CodeEnvelope(
            kid_hint=kid,
            alg=alg,
            signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
            signature=signature,
            payload=payload,
        )

    def _check_header(self, header: Mapping[str, Any]) -> tuple[Algorithm, str | None]:
        for name in _REFUSED_MEMBERS:
            if name in header:
                raise MalformedError(f"the JWS header member {name!r} is not supported")
        alg_name = header.get("alg")
        if not isinstance(alg_name, str):
            raise MalformedError("the JWS header has no alg")
        if alg_name.lower() == "none":
            raise AlgorithmUnsupportedError("unsigned JWS (alg none) is refused")
        alg = Algorithm.parse(alg_name)
        if alg not in self.algs:
            raise AlgorithmUnsupportedError(f"the region does not sign with {alg}")
        zip_ = header.get("zip")
        if self.deflate:
            if zip_ != "DEF":
                raise MalformedError('the JWS header must say "zip":"DEF"')
        elif zip_ is not None:
            raise MalformedError("the region does not compress its JWS payload")
        kid = header.get("kid")
        if kid is None:
            if self.require_kid:
                raise MalformedError("the JWS header has no kid")
            return alg, None
        if not isinstance(kid, str):
            raise MalformedError("the JWS kid is not a string")
        return alg, check_kid(kid, "the JWS kid", echo=False)

    def claims(self, payload: bytes) -> Mapping[str, Any]:
        """Inflate (bounded, when zip) and parse the verified payload; raises MalformedError."""
        compression = Compression.DEFLATE if self.deflate else Compression.NONE
        data = decompress(compression, payload, limit=self.max_payload_bytes)
        claims = parse_json(data, limit=self.max_payload_bytes, max_depth=self.max_payload_depth)
        if not isinstance(claims, dict):
            raise MalformedError("the JWS payload is not a JSON object")
        return claims

    def seal(self, claims: Mapping[Any, Any], key: PrivateKey, kid: str) -> str:
        """Write a code (issuer side); raises ``ValueError`` for a key or kid it cannot use."""
        if key.alg not in self.algs:
            raise ValueError(f"the region does not sign with {key.alg}")
        header: dict[str, str] = {"alg": key.alg.value, "kid": issuer_kid(kid)}
        if self.deflate:
            header["zip"] = "DEF"
        if self.typ is not None:
            header["typ"] = self.typ
        payload = compress(
            Compression.DEFLATE if self.deflate else Compression.NONE, dump_json(dict(claims))
        )
        signing_input = f"{b64url_encode(dump_json(header))}.{b64url_encode(payload)}"
        signature = key.sign(signing_input.encode("ascii"))
        return f"{self.prefix}{signing_input}.{b64url_encode(signature)}"


__all__ = ["JwsCodec"]
