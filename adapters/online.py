"""Online codes: the token a holder shows, the question the gateway asks and the signed answer.

docs/partners.md §9 is the wire; this module is its pure half (no I/O, no clock: every time is an
argument). A region in online mode puts no signed status in its code but a token
``PREFIX "ON1." issuer "." code_id``; the gateway asks the region's endpoint for the code's
status (:class:`StatusQuestion`) and gets back a JWS-signed :class:`StatusDocument`, verified
here with a key of *that region* from the registry (same anchors, rotation and revocation as
offline codes) before any member of it is trusted. The I/O client is ``gateway.online``.

The same document answers a partner's question about the home province's own codes (the mutual
direction): :func:`sign_status_document` builds it, :func:`verify_status_document` checks it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from adapters.base import (
    CanonicalStatus,
    Colour,
    OnlineSpec,
    Pseudonymise,
    RegionSpec,
    VerifiedCode,
)
from adapters.codecs.encoding import b64url_strict
from keys.crypto import Algorithm, PrivateKey, b64url_encode
from keys.errors import (
    AlgorithmUnsupportedError,
    CodeExpiredError,
    CodeNotYetValidError,
    CodeRevokedError,
    CodeUnknownError,
    ForeignDataError,
    KeyUnknownError,
    MalformedError,
    PartnerAnswerInvalidError,
    SignatureInvalidError,
)
from keys.jsonutil import canonical_json, loads_strict
from keys.keyid import is_kid
from keys.model import KeyLookup, RegionKey
from keys.timeutil import ensure_utc

ONLINE_MARK = "ON1."
STATUS_TYP = "trustgw-status+jwt"
STATUS_PATH = "/v1/code-status"
WIRE_VERSION = 1

MAX_REQUEST_BYTES = 4096
MAX_ANSWER_BYTES = 16384
MAX_DOCUMENT_CHARS = 12288
MAX_HEADER_BYTES = 512
MAX_MAX_AGE = 3600
# Tolerated difference between the partner's clock and the gateway's, for checked_at.
ANSWER_SKEW = timedelta(seconds=60)
# As for offline codes (gateway.engine.CLOCK_SKEW): valid_from may be this far in the future.
VALIDITY_SKEW = timedelta(minutes=5)
DOCUMENT_ALGS = frozenset({Algorithm.EDDSA, Algorithm.ES256, Algorithm.SM2})

_ISSUER = re.compile(r"[A-Za-z0-9-]{1,32}")
_CODE_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,32}")
_HOLDER_REF = re.compile(r"[!-~]{1,64}")
_REGION = re.compile(r"[0-9]{6}")
_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")
MAX_TOKEN_TAIL = len(ONLINE_MARK) + 32 + 1 + 64


class Status(StrEnum):
    """A code's status as the issuing region states it."""

    VALID = "valid"
    REVOKED = "revoked"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class OnlineToken:
    """A parsed online code: which region, issuer and code to ask about."""

    region: str
    issuer: str
    code_id: str


def is_online_token(text: str, spec: RegionSpec) -> bool:
    """True when ``text`` (of ``spec``'s region, by prefix) is an online token, well formed or
    not: the region is online and the text goes on with ``ON1.`` after the prefix."""
    return spec.online is not None and text.startswith(ONLINE_MARK, len(spec.prefix))


def parse_token(text: str, spec: RegionSpec) -> OnlineToken:
    """The token in ``text`` (docs/partners.md §9.1); raises :class:`MalformedError`.

    The caller has detected the region by prefix and checked :func:`is_online_token`.
    """
    if spec.online is None:
        raise MalformedError(f"region {spec.code} has no online codes", region=spec.code)
    tail = text[len(spec.prefix) :]
    if len(tail) > MAX_TOKEN_TAIL or not tail.startswith(ONLINE_MARK):
        raise MalformedError("not an online token (ON1.<issuer>.<code id>)", region=spec.code)
    issuer, dot, code_id = tail[len(ONLINE_MARK) :].partition(".")
    if not dot or not _ISSUER.fullmatch(issuer) or not _CODE_ID.fullmatch(code_id):
        raise MalformedError(
            "an online token is ON1.<issuer [A-Za-z0-9-]{1,32}>.<code id [A-Za-z0-9_-]{8,64}>",
            region=spec.code,
        )
    if issuer not in spec.online.issuers:
        raise MalformedError(
            f"issuer {issuer!r} is not one of region {spec.code}'s", region=spec.code
        )
    return OnlineToken(spec.code, issuer, code_id)


def format_time(value: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC, fraction dropped), the wire's one time form."""
    return ensure_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_wire_time(value: object, what: str) -> datetime:
    """A time in the wire's one form; raises :class:`MalformedError`."""
    if not isinstance(value, str):
        raise MalformedError(f"{what} is not a time text")
    match = _TIME.fullmatch(value)
    if match is None:
        raise MalformedError(f"{what} is not YYYY-MM-DDTHH:MM:SSZ")
    try:
        year, month, day, hour, minute, second = map(int, match.groups())
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise MalformedError(f"{what} is not a calendar time") from None


@dataclass(frozen=True)
class StatusQuestion:
    """What the gateway asks a region about one code (docs/partners.md §9.2)."""

    region: str
    issuer: str
    code_id: str
    nonce: str
    asked_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "asked_at", ensure_utc(self.asked_at))
        if not _REGION.fullmatch(self.region):
            raise ValueError("region is 6 digits")
        if not _ISSUER.fullmatch(self.issuer) or not _CODE_ID.fullmatch(self.code_id):
            raise ValueError("issuer or code id outside the token grammar")
        if not _NONCE.fullmatch(self.nonce):
            raise ValueError("a nonce is 16 to 32 base64url characters")

    @classmethod
    def ask(cls, token: OnlineToken, nonce: bytes, now: datetime) -> StatusQuestion:
        """The question for ``token`` with 16 random ``nonce`` bytes, asked at ``now``."""
        if len(nonce) != 16:
            raise ValueError("the nonce is 16 random bytes")
        return cls(token.region, token.issuer, token.code_id, b64url_encode(nonce), now)

    def body(self) -> bytes:
        """The request body: RFC 8785 canonical JSON."""
        return canonical_json(
            {
                "v": WIRE_VERSION,
                "region": self.region,
                "issuer": self.issuer,
                "code_id": self.code_id,
                "nonce": self.nonce,
                "asked_at": format_time(self.asked_at),
            }
        )

    @classmethod
    def parse(cls, body: bytes) -> StatusQuestion:
        """A request body, strictly (the endpoint's side); raises :class:`MalformedError`."""
        value = loads_strict(body, max_bytes=MAX_REQUEST_BYTES, max_depth=2, integers_only=True)
        members = ("v", "region", "issuer", "code_id", "nonce", "asked_at")
        if not isinstance(value, dict) or set(value) != set(members):
            raise MalformedError("the request is an object of exactly " + ", ".join(members))
        if type(value["v"]) is not int or value["v"] != WIRE_VERSION:
            raise MalformedError("the request's v is not 1")
        region, issuer, code_id, nonce = (value[m] for m in members[1:5])
        if not all(isinstance(t, str) for t in (region, issuer, code_id, nonce)):
            raise MalformedError("region, issuer, code_id and nonce are text")
        try:
            return cls(
                region, issuer, code_id, nonce, parse_wire_time(value["asked_at"], "asked_at")
            )
        except ValueError as exc:
            raise MalformedError(f"the request is not acceptable: {exc}") from None


@dataclass(frozen=True)
class StatusDocument:
    """The payload of a status document (docs/partners.md §9.4).

    ``colour``, ``holder_ref``, ``valid_from`` and ``valid_until`` are None exactly when the
    status is ``unknown``.
    """

    region: str
    issuer: str
    code_id: str
    nonce: str
    status: Status
    checked_at: datetime
    max_age: int
    colour: Colour | None = None
    holder_ref: str | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "checked_at", ensure_utc(self.checked_at))
        for name in ("valid_from", "valid_until"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, ensure_utc(value))
        if type(self.max_age) is not int or not 0 <= self.max_age <= MAX_MAX_AGE:
            raise ValueError(f"max_age is an integer from 0 to {MAX_MAX_AGE}")
        details = (self.colour, self.holder_ref, self.valid_from, self.valid_until)
        if self.status is Status.UNKNOWN:
            if any(d is not None for d in details):
                raise ValueError("an unknown code's document says nothing about a holder")
            return
        if any(d is None for d in details):
            raise ValueError("colour, holder_ref, valid_from and valid_until are required")
        if self.holder_ref is None or not _HOLDER_REF.fullmatch(self.holder_ref):
            raise ValueError("holder_ref is 1 to 64 printable ASCII characters")
        assert self.valid_from is not None and self.valid_until is not None
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until is later than valid_from")

    def answers(self, question: StatusQuestion) -> bool:
        """True when the document is about exactly what ``question`` asked."""
        return (self.region, self.issuer, self.code_id, self.nonce) == (
            question.region,
            question.issuer,
            question.code_id,
            question.nonce,
        )

    def payload(self) -> dict[str, Any]:
        """The payload members, as JSON values."""
        members: dict[str, Any] = {
            "v": WIRE_VERSION,
            "region": self.region,
            "issuer": self.issuer,
            "code_id": self.code_id,
            "nonce": self.nonce,
            "status": self.status.value,
            "checked_at": format_time(self.checked_at),
            "max_age": self.max_age,
        }
        if self.status is not Status.UNKNOWN:
            assert self.colour is not None and self.valid_from and self.valid_until
            members["colour"] = self.colour.value
            members["holder_ref"] = self.holder_ref
            members["valid_from"] = format_time(self.valid_from)
            members["valid_until"] = format_time(self.valid_until)
        return members


_MINIMAL = frozenset(
    {"v", "region", "issuer", "code_id", "nonce", "status", "checked_at", "max_age"}
)
_FULL = _MINIMAL | {"colour", "holder_ref", "valid_from", "valid_until"}


def sign_status_document(document: StatusDocument, key: PrivateKey, kid: str) -> str:
    """The JWS compact serialisation of ``document`` signed with ``key`` under ``kid``."""
    if key.alg not in DOCUMENT_ALGS:
        raise ValueError(f"a status document is not signed with {key.alg}")
    if not is_kid(kid):
        raise ValueError("the kid breaks the key-id rule")
    header = canonical_json({"alg": key.alg.value, "kid": kid, "typ": STATUS_TYP})
    signing_input = f"{b64url_encode(header)}.{b64url_encode(canonical_json(document.payload()))}"
    return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode('ascii')))}"


def answer_body(status_document: str) -> bytes:
    """The endpoint's HTTP 200 body for a signed document."""
    return canonical_json({"status_document": status_document})


def open_answer(body: bytes) -> str:
    """The status document in an HTTP 200 body; raises :class:`PartnerAnswerInvalidError`."""
    try:
        value = loads_strict(body, max_bytes=MAX_ANSWER_BYTES, max_depth=2, what="answer")
    except MalformedError as exc:
        raise PartnerAnswerInvalidError(f"the answer is not acceptable: {exc.message}") from None
    if not isinstance(value, dict) or set(value) != {"status_document"}:
        raise PartnerAnswerInvalidError('the answer is not {"status_document": ...}')
    document = value["status_document"]
    if not isinstance(document, str) or not 0 < len(document) <= MAX_DOCUMENT_CHARS:
        raise PartnerAnswerInvalidError(
            f"status_document is not a text of 1 to {MAX_DOCUMENT_CHARS} characters"
        )
    return document


def _invalid(message: str, region: str) -> PartnerAnswerInvalidError:
    return PartnerAnswerInvalidError(message, region=region)


def _split(document: str, region: str) -> tuple[str, str, str, dict[str, Any], bytes, bytes]:
    parts = document.split(".")
    if len(parts) != 3:
        raise _invalid("the status document is not a compact JWS (three parts)", region)
    header_b64, payload_b64, signature_b64 = parts
    try:
        header_bytes = b64url_strict(header_b64, limit=MAX_HEADER_BYTES * 4 // 3 + 4)
        header = loads_strict(header_bytes, max_bytes=MAX_HEADER_BYTES, max_depth=1)
        payload = b64url_strict(payload_b64, limit=MAX_DOCUMENT_CHARS)
        signature = b64url_strict(signature_b64, limit=512)
    except MalformedError as exc:
        raise _invalid(f"the status document is not acceptable: {exc.message}", region) from None
    if not isinstance(header, dict) or set(header) != {"alg", "kid", "typ"}:
        raise _invalid("the status document's header is not exactly alg, kid, typ", region)
    return header_b64, payload_b64, signature_b64, header, payload, signature


def verify_status_document(
    document: str, question: StatusQuestion, keys: KeyLookup, now: datetime
) -> tuple[StatusDocument, RegionKey]:
    """Check a status document against the question it answers (docs/partners.md §9.5 steps
    2 to 6) and return its payload and the key that signed it.

    Raises :class:`PartnerAnswerInvalidError` (header, members, another question, stale),
    :class:`KeyUnknownError`, :class:`AlgorithmUnsupportedError`,
    :class:`SignatureInvalidError`, :class:`keys.errors.KeyRevokedError`,
    :class:`keys.errors.KeyNotValidError`. The status itself is not judged here
    (:func:`refusal`).
    """
    region = question.region
    header_b64, payload_b64, _, header, payload_bytes, signature = _split(document, region)
    if header["typ"] != STATUS_TYP:
        raise _invalid(f'the status document\'s typ is not "{STATUS_TYP}"', region)
    alg_name, kid = header["alg"], header["kid"]
    if not isinstance(alg_name, str) or not is_kid(kid):
        raise _invalid("the status document's alg or kid is not acceptable", region)
    alg = Algorithm.parse(alg_name)  # AlgorithmUnsupportedError
    if alg not in DOCUMENT_ALGS:
        raise AlgorithmUnsupportedError(
            f"a status document is not signed with {alg}", region=region
        )
    candidates = keys.keys_for(region, kid)
    if not candidates:
        raise KeyUnknownError(f"region {region} has no key {kid}", region=region, kid=kid)
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    key = None
    for candidate in candidates:
        if candidate.alg is not alg:
            continue
        try:
            candidate.public_key.verify(signing_input, signature)
        except SignatureInvalidError:
            continue
        key = candidate
        break
    if key is None:
        if all(c.alg is not alg for c in candidates):
            raise AlgorithmUnsupportedError(
                f"the document declares {alg}, key {kid} is not", region=region, kid=kid
            )
        raise SignatureInvalidError(
            f"the status document's signature does not verify with key {kid} of region {region}",
            region=region,
            kid=kid,
        )
    parsed = _payload(payload_bytes, region)
    if not parsed.answers(question):
        raise _invalid("the status document answers another question (code or nonce)", region)
    if parsed.checked_at < question.asked_at - ANSWER_SKEW:
        raise _invalid("the status document is stale (checked before it was asked)", region)
    if parsed.checked_at > now + ANSWER_SKEW:
        raise _invalid("the status document is checked in the future", region)
    key.check_valid_at_issuance(parsed.checked_at)
    return parsed, key


def _payload(data: bytes, region: str) -> StatusDocument:
    try:
        value = loads_strict(data, max_bytes=MAX_DOCUMENT_CHARS, max_depth=1, integers_only=True)
        return _members(value)
    except MalformedError as exc:
        raise _invalid(f"the status document is not acceptable: {exc.message}", region) from None


def _members(value: Any) -> StatusDocument:
    if not isinstance(value, dict):
        raise MalformedError("the payload is not an object")
    status_text = value.get("status")
    try:
        status = Status(status_text if isinstance(status_text, str) else "")
    except ValueError:
        raise MalformedError("status is not valid, revoked, expired or unknown") from None
    expected = _MINIMAL if status is Status.UNKNOWN else _FULL
    if set(value) != expected:
        extra = sorted(set(value) - expected)[:3]
        missing = sorted(expected - set(value))[:3]
        raise MalformedError(f"the members are not those of status {status}: "
                             f"extra {extra}, missing {missing}")  # fmt: skip
    if type(value["v"]) is not int or value["v"] != WIRE_VERSION:
        raise MalformedError("v is not 1")
    texts = ("region", "issuer", "code_id", "nonce")
    if not all(isinstance(value[m], str) for m in texts):
        raise MalformedError("region, issuer, code_id and nonce are text")
    colour: Colour | None = None
    holder_ref = valid_from = valid_until = None
    if status is not Status.UNKNOWN:
        try:
            colour = Colour(value["colour"])
        except ValueError:
            raise MalformedError("colour is not green, yellow or red") from None
        holder_ref = value["holder_ref"]
        if not isinstance(holder_ref, str):
            raise MalformedError("holder_ref is not text")
        valid_from = parse_wire_time(value["valid_from"], "valid_from")
        valid_until = parse_wire_time(value["valid_until"], "valid_until")
    max_age = value["max_age"]
    if type(max_age) is not int:
        raise MalformedError("max_age is not an integer")
    try:
        return StatusDocument(
            region=value["region"],
            issuer=value["issuer"],
            code_id=value["code_id"],
            nonce=value["nonce"],
            status=status,
            checked_at=parse_wire_time(value["checked_at"], "checked_at"),
            max_age=max_age,
            colour=colour,
            holder_ref=holder_ref,
            valid_from=valid_from,
            valid_until=valid_until,
        )
    except ValueError as exc:
        raise MalformedError(str(exc)) from None


def refusal(document: StatusDocument, now: datetime) -> ForeignDataError | None:
    """Why a verified document's code is not honoured at ``now`` (its status, or its validity
    against the clock), or None when it is valid now (docs/partners.md §9.5 steps 7-8)."""
    region = document.region
    if document.status is Status.REVOKED:
        return CodeRevokedError("the issuing region says the code is revoked", region=region)
    if document.status is Status.EXPIRED:
        return CodeExpiredError("the issuing region says the code has expired", region=region)
    if document.status is Status.UNKNOWN:
        return CodeUnknownError(region=region)
    assert document.valid_from is not None and document.valid_until is not None
    if document.valid_from > now + VALIDITY_SKEW:
        return CodeNotYetValidError(
            f"the code is valid from {document.valid_from.isoformat()}", region=region
        )
    if now > document.valid_until:
        return CodeExpiredError(
            f"the code expired at {document.valid_until.isoformat()}", region=region
        )
    return None


def holder_of(document: StatusDocument, pseudonymise: Pseudonymise) -> str:
    """The gateway's keyed pseudonym of the document's holder reference ('' when unknown).

    The region's reference is treated like an identifier: only its keyed pseudonym is kept.
    """
    if document.holder_ref is None:
        return ""
    return pseudonymise(document.region, document.holder_ref)


def to_verified(
    document: StatusDocument, key: RegionKey, spec: RegionSpec, pseudonymise: Pseudonymise
) -> VerifiedCode:
    """A verified document with status valid, as the engine's verified code: issued at
    ``checked_at`` (the moment the status was stated, inside the key's validity), expiring at
    ``valid_until``."""
    if document.colour is None or document.valid_until is None:
        raise ValueError("only a document with a status other than unknown is a verified code")
    status = CanonicalStatus(
        region=document.region,
        holder=holder_of(document, pseudonymise),
        colour=document.colour,
        issued_at=document.checked_at,
        expires_at=document.valid_until,
        code_id=document.code_id,
        kid=key.kid,
    )
    return VerifiedCode(status, key, spec)


def cache_until(document: StatusDocument, received_at: datetime) -> datetime | None:
    """Until when a verified answer may be cached: ``max_age`` from its receipt, never past
    ``valid_until``; None when it may not be cached."""
    if document.max_age <= 0:
        return None
    until = received_at + timedelta(seconds=document.max_age)
    if document.valid_until is not None:
        until = min(until, document.valid_until)
    return until if until > received_at else None


__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_REQUEST_BYTES",
    "ONLINE_MARK",
    "STATUS_PATH",
    "STATUS_TYP",
    "OnlineSpec",
    "OnlineToken",
    "Status",
    "StatusDocument",
    "StatusQuestion",
    "answer_body",
    "cache_until",
    "holder_of",
    "is_online_token",
    "open_answer",
    "parse_token",
    "refusal",
    "sign_status_document",
    "to_verified",
    "verify_status_document",
]
