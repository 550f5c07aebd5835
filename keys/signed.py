"""Signed statements: canonical JSON bytes, shipped as they were signed, with their signatures.

Every statement the registry accepts or publishes travels in one envelope (like DSSE, see
docs/trust-registry.md)::

    {"signed": "<base64url of the canonical JSON bytes>",
     "signatures": [{"keyid": "<key id>", "sig": "<base64url signature over those bytes>"}]}

Signatures cover exactly the bytes that ``signed`` decodes to; a verifier checks those bytes and
only then trusts what it parses from them. Nothing is re-serialised to verify. The bytes must
still be *canonical* (RFC 8785, :func:`keys.jsonutil.canonical_json`, over objects, arrays,
strings, integers, booleans and null): one content has one byte form, so that a retry of the
same statement is recognised by its digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keys.crypto import PrivateKey, b64url_decode, b64url_encode
from keys.errors import MalformedError, OversizedError
from keys.jsonutil import MAX_SAFE_INTEGER, canonical_json, loads_strict
from keys.keyid import check_kid, require_kid

MAX_ENVELOPE_BYTES = 2 * 1024 * 1024
MAX_SIGNED_BYTES = 1536 * 1024
MAX_SIGNATURES = 32
MAX_SIGNED_DEPTH = 32
MAX_JSON_INT = MAX_SAFE_INTEGER


def digest(data: bytes) -> str:
    """SHA-256 of ``data`` as 64 lower-case hex digits: the identity of a statement."""
    return hashlib.sha256(data).hexdigest()


def parse_canonical(data: bytes, what: str, *, limit: int = MAX_SIGNED_BYTES) -> dict[str, Any]:
    """Parse bytes that must be canonical JSON holding an object.

    Raises :class:`OversizedError` above ``limit`` bytes or :data:`MAX_SIGNED_DEPTH` levels,
    :class:`MalformedError` for anything that is not JSON, not an object, uses floats, repeats a
    member, holds a lone surrogate, or is not in canonical form (RFC 8785). Takes no time input.
    """
    obj = loads_strict(
        data, max_bytes=limit, max_depth=MAX_SIGNED_DEPTH, integers_only=True, what=what
    )
    if not isinstance(obj, dict):
        raise MalformedError(f"the {what} is not a JSON object")
    try:
        canonical = canonical_json(obj)
    except (ValueError, RecursionError):
        raise MalformedError(f"the {what} holds a value that has no canonical form") from None
    if canonical != data:
        raise MalformedError(
            f"the {what} is not canonical JSON (RFC 8785: sorted keys, no white space)"
        )
    return obj


@dataclass(frozen=True)
class Signature:
    """One signature over an envelope's signed bytes, naming the key that made it."""

    keyid: str
    sig: bytes

    def __post_init__(self) -> None:
        require_kid(self.keyid, "a signature's key id")


@dataclass(frozen=True)
class Envelope:
    """The exact signed bytes and the signatures over them."""

    signed: bytes
    signatures: tuple[Signature, ...]

    @property
    def digest(self) -> str:
        """SHA-256 hex of the signed bytes: the same statement always has the same digest."""
        return digest(self.signed)

    @classmethod
    def sign(cls, signed: bytes, signers: Iterable[tuple[str, PrivateKey]]) -> Envelope:
        """Sign ``signed`` with each (key id, private key); the partner side, and the gateway's."""
        return cls(signed, tuple(Signature(kid, key.sign(signed)) for kid, key in signers))

    def to_json(self) -> dict[str, Any]:
        """``{"signed": base64url, "signatures": [{"keyid", "sig"}]}``, as the envelope travels."""
        return {
            "signed": b64url_encode(self.signed),
            "signatures": [
                {"keyid": s.keyid, "sig": b64url_encode(s.sig)} for s in self.signatures
            ],
        }

    def to_bytes(self) -> bytes:
        """The envelope as it travels: compact JSON."""
        return canonical_json(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse an envelope (its signed bytes are not parsed nor verified here).

        Raises :class:`OversizedError`, :class:`MalformedError`.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedError("an envelope is bytes")
        data = bytes(data)
        if len(data) > MAX_ENVELOPE_BYTES:
            raise OversizedError(f"the envelope is larger than {MAX_ENVELOPE_BYTES} bytes")
        obj = loads_strict(
            data, max_bytes=MAX_ENVELOPE_BYTES, max_depth=4, integers_only=True, what="envelope"
        )
        if not isinstance(obj, dict) or set(obj) != {"signed", "signatures"}:
            raise MalformedError("an envelope is an object with exactly 'signed' and 'signatures'")
        signed_text, sigs = obj["signed"], obj["signatures"]
        if not isinstance(signed_text, str) or not isinstance(sigs, list):
            raise MalformedError("'signed' is a string and 'signatures' a list")
        if len(sigs) > MAX_SIGNATURES:
            raise OversizedError(f"an envelope carries at most {MAX_SIGNATURES} signatures")
        signed = b64url_decode(signed_text, limit=MAX_SIGNED_BYTES * 4 // 3 + 4)
        signatures: list[Signature] = []
        for item in sigs:
            if not isinstance(item, dict) or set(item) != {"keyid", "sig"}:
                raise MalformedError("a signature is an object with exactly 'keyid' and 'sig'")
            keyid, sig = item["keyid"], item["sig"]
            if not isinstance(keyid, str) or not isinstance(sig, str):
                raise MalformedError("'keyid' and 'sig' are strings")
            check_kid(keyid, "a signature's key id")
            signatures.append(Signature(keyid, b64url_decode(sig, limit=2048)))
        return cls(signed, tuple(signatures))


def require_keys(
    obj: Mapping[str, Any], required: Sequence[str], optional: Sequence[str] = ()
) -> None:
    """Raise :class:`MalformedError` unless ``obj`` has exactly the required members (plus
    any of the optional ones): unknown members are refused, never ignored."""
    missing = [k for k in required if k not in obj]
    if missing:
        raise MalformedError(f"member {missing[0]!r} is missing")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise MalformedError(f"unknown member {unknown[0][:32]!r}")


def get_int(obj: Mapping[str, Any], name: str, *, minimum: int = 0) -> int:
    """An integer member in ``minimum``..2**53-1; raises :class:`MalformedError`."""
    value = obj.get(name)
    if type(value) is not int or not minimum <= value <= MAX_JSON_INT:
        raise MalformedError(f"member {name!r} must be an integer of at least {minimum}")
    return value


def get_str(obj: Mapping[str, Any], name: str, *, max_chars: int = 128) -> str:
    """A non-empty printable-ASCII string member; raises :class:`MalformedError`."""
    value = obj.get(name)
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= max_chars
        or not all(" " <= ch <= "~" for ch in value)
    ):
        raise MalformedError(f"member {name!r} must be 1 to {max_chars} printable ASCII characters")
    return value
