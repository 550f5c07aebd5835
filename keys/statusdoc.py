"""The online status document (docs/partners.md §9.4 and §10): one format for both directions,
a partner's answer about its code (checked by :mod:`adapters.online`) and the gateway's answer
about a home code (``gateway.codestatus``).

A JWS compact serialisation (RFC 7515): ``BASE64URL(header) "." BASE64URL(payload) "."
BASE64URL(signature)``, the signature over the ASCII bytes before the second ``.`` exactly as
received. Header ``{"alg", "kid", "typ": "trustgw-status+jwt"}``; ``alg`` is ``EdDSA``, ``ES256``
or ``SM2`` (raw 64-byte r||s, :mod:`keys.crypto`). The payload is canonical JSON
(:class:`StatusClaims`). Pure: no I/O, no clock (``now`` is passed), no key lookup (the caller
chooses the key by ``kid`` within the region it asked, then :meth:`StatusDocument.verify`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from keys.crypto import Algorithm, PrivateKey, PublicKey, b64url_decode, b64url_encode
from keys.errors import (
    AlgorithmUnsupportedError,
    MalformedError,
    OversizedError,
    StatusMismatchError,
    TimeInvalidError,
)
from keys.jsonutil import canonical_json, loads_strict
from keys.keyid import is_kid
from keys.regioncode import is_region_code
from keys.timeutil import ensure_utc, parse_time, to_iso

STATUS_TYPE = "trustgw-status+jwt"
# The issuer id of the gateway's own documents (about the home province's SD1: codes).
GATEWAY_ISSUER = "trustgw"
STATUS_VERSION = 1
# The JWS text of a status document, and its decoded parts (docs/partners.md: an answer body
# is at most 16 KiB).
MAX_STATUS_DOCUMENT_CHARS = 16 * 1024
MAX_HEADER_BYTES = 512
MAX_PAYLOAD_BYTES = 4096
MAX_JSON_DEPTH = 2  # both header and payload are flat objects
MAX_AGE_LIMIT = 3600  # the longest an answer may be cached, seconds
ALGORITHMS = frozenset({Algorithm.EDDSA, Algorithm.ES256, Algorithm.SM2})

VALID = "valid"
REVOKED = "revoked"
EXPIRED = "expired"
UNKNOWN = "unknown"
STATUSES = (VALID, REVOKED, EXPIRED, UNKNOWN)
COLOURS = ("green", "yellow", "red")

ISSUER_RE = re.compile(r"[A-Za-z0-9-]{1,32}")
CODE_ID_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")
NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
HOLDER_REF_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

# Members every document has; those a known code's document adds (an "unknown" one has none of
# them: it says nothing about a code the issuer never issued).
_ALWAYS = ("v", "region", "issuer", "code_id", "nonce", "status", "checked_at", "max_age")
_KNOWN = ("colour", "holder_ref", "valid_from", "valid_until")


def check_nonce(nonce: str) -> str:
    """``nonce`` if it is 16 to 64 base64url characters; raises :class:`MalformedError`."""
    if not isinstance(nonce, str) or NONCE_RE.fullmatch(nonce) is None:
        raise MalformedError("a nonce is 16 to 64 base64url characters")
    return nonce


def check_code_id(code_id: str) -> str:
    """``code_id`` if it is 8 to 64 characters of ``[A-Za-z0-9_-]``; raises
    :class:`MalformedError`."""
    if not isinstance(code_id, str) or CODE_ID_RE.fullmatch(code_id) is None:
        raise MalformedError("a code id is 8 to 64 characters of A-Z a-z 0-9 _ -")
    return code_id


@dataclass(frozen=True)
class StatusClaims:
    """What a status document asserts. ``colour``, ``holder_ref``, ``valid_from`` and
    ``valid_until`` are stated for every status but ``unknown``, and for no other.

    The answer holds from ``checked_at`` for ``max_age`` seconds (0..3600): a verifier may keep
    it that long. ``holder_ref`` is a keyed pseudonym (never an identifier or its unkeyed hash).
    Raises ``ValueError`` for claims that break these rules.
    """

    region: str
    issuer: str
    code_id: str
    nonce: str
    status: str
    checked_at: datetime
    max_age: int
    colour: str | None = None
    holder_ref: str | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    def __post_init__(self) -> None:
        if not is_region_code(self.region):
            raise ValueError("a region is six ASCII digits")
        if ISSUER_RE.fullmatch(self.issuer) is None:
            raise ValueError("an issuer id is 1 to 32 characters of A-Z a-z 0-9 -")
        if CODE_ID_RE.fullmatch(self.code_id) is None:
            raise ValueError("a code id is 8 to 64 characters of A-Z a-z 0-9 _ -")
        if NONCE_RE.fullmatch(self.nonce) is None:
            raise ValueError("a nonce is 16 to 64 base64url characters")
        if self.status not in STATUSES:
            raise ValueError(f"a status is one of {', '.join(STATUSES)}")
        if type(self.max_age) is not int or not 0 <= self.max_age <= MAX_AGE_LIMIT:
            raise ValueError(f"max_age is 0 to {MAX_AGE_LIMIT} seconds")
        known = (self.colour, self.holder_ref, self.valid_from, self.valid_until)
        if self.status == UNKNOWN:
            if any(v is not None for v in known):
                raise ValueError("an unknown code's status states nothing about it")
            return
        if any(v is None for v in known):
            raise ValueError("a known code's status states colour, holder and validity")
        if self.colour not in COLOURS:
            raise ValueError(f"a colour is one of {', '.join(COLOURS)}")
        if HOLDER_REF_RE.fullmatch(self.holder_ref or "") is None:
            raise ValueError("a holder reference is 1 to 64 characters of A-Z a-z 0-9 _ . : -")
        assert self.valid_from is not None and self.valid_until is not None
        if self.valid_until <= self.valid_from:
            raise ValueError("the code's validity ends before it starts (or when it starts)")

    @property
    def fresh_until(self) -> datetime:
        """The last moment the answer may be relied on: ``checked_at`` + ``max_age``."""
        return ensure_utc(self.checked_at) + timedelta(seconds=self.max_age)

    def to_json(self) -> dict[str, Any]:
        """The payload's members (times as RFC 3339 UTC with a ``Z``, whole seconds)."""
        obj: dict[str, Any] = {
            "v": STATUS_VERSION,
            "region": self.region,
            "issuer": self.issuer,
            "code_id": self.code_id,
            "nonce": self.nonce,
            "status": self.status,
            "checked_at": to_iso(self.checked_at),
            "max_age": self.max_age,
        }
        if self.status != UNKNOWN:
            assert self.valid_from is not None and self.valid_until is not None
            obj["colour"] = self.colour
            obj["holder_ref"] = self.holder_ref
            obj["valid_from"] = to_iso(self.valid_from)
            obj["valid_until"] = to_iso(self.valid_until)
        return obj

    @classmethod
    def from_json(cls, obj: object) -> StatusClaims:
        """Read a verified payload; raises :class:`MalformedError` (a member missing, unknown,
        of the wrong type or out of range)."""
        if not isinstance(obj, dict):
            raise MalformedError("the status payload is not a JSON object")
        status = obj.get("status")
        expected = set(_ALWAYS) | (set() if status == UNKNOWN else set(_KNOWN))
        missing = sorted(expected - set(obj))
        if missing:
            raise MalformedError(f"the status payload lacks {missing[0]!r}")
        unknown = sorted(set(obj) - expected)
        if unknown:
            raise MalformedError(f"the status payload has an unexpected member {unknown[0][:32]!r}")
        if obj["v"] != STATUS_VERSION or type(obj["v"]) is not int:
            raise MalformedError(f"the status payload is not version {STATUS_VERSION}")
        text = {k: obj[k] for k in expected if k not in ("v", "max_age")}
        if not all(isinstance(v, str) for v in text.values()):
            raise MalformedError("the status payload's members other than v and max_age are text")
        try:
            return cls(
                region=obj["region"],
                issuer=obj["issuer"],
                code_id=obj["code_id"],
                nonce=obj["nonce"],
                status=obj["status"],
                checked_at=_time(obj["checked_at"]),
                max_age=obj["max_age"],
                colour=obj.get("colour"),
                holder_ref=obj.get("holder_ref"),
                valid_from=_time(obj["valid_from"]) if "valid_from" in obj else None,
                valid_until=_time(obj["valid_until"]) if "valid_until" in obj else None,
            )
        except ValueError as exc:
            raise MalformedError(f"the status payload is not valid: {exc}") from None

    def check_answers(
        self,
        *,
        region: str,
        code_id: str,
        nonce: str,
        now: datetime,
        skew: timedelta,
        issuer: str | None = None,
    ) -> None:
        """Refuse a document that does not answer this question now.

        Region, issuer (when given), code id and nonce must be the question's; ``checked_at`` no
        later than ``now + skew``; ``now`` no later than :attr:`fresh_until` plus ``skew``.
        Raises :class:`keys.errors.StatusMismatchError` (reason ``STATUS_MISMATCH``).
        """
        now = ensure_utc(now)
        for name, asked in (("region", region), ("issuer", issuer), ("code_id", code_id),
                            ("nonce", nonce)):  # fmt: skip
            if asked is not None and getattr(self, name) != asked:
                raise StatusMismatchError(f"the status document's {name} is not the one asked")
        if self.checked_at > now + skew:
            raise StatusMismatchError(
                f"the status document was checked in the future ({to_iso(self.checked_at)})"
            )
        if now > self.fresh_until + skew:
            raise StatusMismatchError(
                f"the status document is stale: it held until {to_iso(self.fresh_until)}"
            )


def parse_time_text(value: object) -> datetime:
    """A time as the wire writes it, ``YYYY-MM-DDTHH:MM:SSZ``; raises :class:`MalformedError`."""
    if not isinstance(value, str):
        raise MalformedError("a time is text")
    try:
        return _time(value)
    except ValueError as exc:
        raise MalformedError(str(exc)) from None


def _time(value: str) -> datetime:
    """An RFC 3339 time as the documents write it: ``YYYY-MM-DDTHH:MM:SSZ``."""
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value):
        raise ValueError("a time is written YYYY-MM-DDTHH:MM:SSZ")
    try:
        return parse_time(value)
    except TimeInvalidError:
        raise ValueError(f"{value!r} is not a valid time") from None


@dataclass(frozen=True)
class StatusDocument:
    """A status document split and its header checked: nothing in the payload is trusted until
    :meth:`verify` checked the signature with the key ``kid`` names."""

    alg: Algorithm
    kid: str
    signing_input: bytes
    payload: bytes
    signature: bytes

    @classmethod
    def parse(cls, text: str) -> StatusDocument:
        """Split a JWS compact status document and check its header.

        Raises :class:`OversizedError` (the text, or a part, above its limit),
        :class:`AlgorithmUnsupportedError` (``alg`` other than EdDSA, ES256, SM2),
        :class:`MalformedError` (anything else: three parts, base64url, strict JSON, ``typ``,
        a header member other than ``alg``, ``kid``, ``typ``).
        """
        if not isinstance(text, str):
            raise MalformedError("a status document is text")
        if len(text) > MAX_STATUS_DOCUMENT_CHARS:
            raise OversizedError(
                f"a status document is at most {MAX_STATUS_DOCUMENT_CHARS} characters"
            )
        parts = text.split(".")
        if len(parts) != 3:
            raise MalformedError("a status document is a compact JWS: three parts joined by '.'")
        header_b64, payload_b64, signature_b64 = parts
        header = loads_strict(
            b64url_decode(header_b64, limit=MAX_HEADER_BYTES * 2),
            max_bytes=MAX_HEADER_BYTES,
            max_depth=MAX_JSON_DEPTH,
            what="status document header",
        )
        if not isinstance(header, dict) or set(header) != {"alg", "kid", "typ"}:
            raise MalformedError("a status document's header has exactly alg, kid and typ")
        if header["typ"] != STATUS_TYPE:
            raise MalformedError(f"a status document's typ is {STATUS_TYPE}")
        alg, kid = header["alg"], header["kid"]
        if not isinstance(alg, str) or not is_kid(kid):
            raise MalformedError(
                "a status document's alg is text and its kid follows the key-id rule"
            )
        algorithm = Algorithm.parse(alg)
        if algorithm not in ALGORITHMS:
            raise AlgorithmUnsupportedError(f"a status document is not signed with {alg}")
        payload = b64url_decode(payload_b64, limit=MAX_PAYLOAD_BYTES * 2)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise OversizedError(f"a status payload is at most {MAX_PAYLOAD_BYTES} bytes")
        signature = b64url_decode(signature_b64, limit=512)
        return cls(
            algorithm, kid, f"{header_b64}.{payload_b64}".encode("ascii"), payload, signature
        )

    def verify(self, key: PublicKey) -> StatusClaims:
        """Check the signature with ``key`` (which must be of the header's ``alg``), then read
        the payload. Raises :class:`keys.errors.SignatureInvalidError`, ``MalformedError``."""
        if key.alg is not self.alg:
            raise MalformedError(
                f"the status document says {self.alg}, its key {self.kid[:40]} is {key.alg}"
            )
        key.verify(self.signing_input, self.signature)
        claims = loads_strict(
            self.payload,
            max_bytes=MAX_PAYLOAD_BYTES,
            max_depth=MAX_JSON_DEPTH,
            what="status payload",
        )
        return StatusClaims.from_json(claims)


def sign_status(claims: StatusClaims, kid: str, key: PrivateKey) -> str:
    """The status document of ``claims``, signed by ``key`` under the id ``kid``."""
    if key.alg not in ALGORITHMS:
        raise ValueError(f"a status document is not signed with {key.alg}")
    header = canonical_json({"alg": str(key.alg), "kid": kid, "typ": STATUS_TYPE})
    signing_input = f"{b64url_encode(header)}.{b64url_encode(canonical_json(claims.to_json()))}"
    signature = key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url_encode(signature)}"


__all__ = [
    "ALGORITHMS",
    "COLOURS",
    "EXPIRED",
    "GATEWAY_ISSUER",
    "MAX_AGE_LIMIT",
    "MAX_STATUS_DOCUMENT_CHARS",
    "REVOKED",
    "STATUSES",
    "STATUS_TYPE",
    "UNKNOWN",
    "VALID",
    "StatusClaims",
    "StatusDocument",
    "check_code_id",
    "check_nonce",
    "parse_time_text",
    "sign_status",
]
