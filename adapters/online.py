"""Online codes: the token a holder shows, the question the gateway asks and the checks on the
signed answer (docs/partners.md §9).

The pure half (no I/O, no clock: every time is an argument). A region in online mode puts no
signed status in its code but a token ``PREFIX "ON1." issuer "." code_id``; the gateway asks the
region's endpoint (:class:`StatusQuestion`) and gets back a status document in the one format
of :mod:`keys.statusdoc` (shared with the mutual direction), verified here with a key of *the
asked region* from the registry (same anchors, rotation and revocation as offline codes) before
any member of it is trusted. The I/O client is ``gateway.online``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from adapters.base import (
    CanonicalStatus,
    Colour,
    OnlineSpec,
    Pseudonymise,
    RegionSpec,
    VerifiedCode,
)
from keys.crypto import b64url_encode
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
    StatusMismatchError,
)
from keys.jsonutil import canonical_json, loads_strict
from keys.model import KeyLookup, RegionKey
from keys.regioncode import is_region_code
from keys.statusdoc import (
    CODE_ID_RE,
    EXPIRED,
    ISSUER_RE,
    NONCE_RE,
    REVOKED,
    STATUS_VERSION,
    UNKNOWN,
    StatusClaims,
    StatusDocument,
    parse_time_text,
)
from keys.timeutil import ensure_utc, to_iso

ONLINE_MARK = "ON1."
STATUS_PATH = "/v1/code-status"

MAX_REQUEST_BYTES = 4096
MAX_ANSWER_BYTES = 16384
MAX_DOCUMENT_CHARS = 12288
# Tolerated difference between the partner's clock and the gateway's, for checked_at.
ANSWER_SKEW = timedelta(seconds=60)
# As for offline codes (gateway.engine.CLOCK_SKEW): valid_from may be this far in the future.
VALIDITY_SKEW = timedelta(minutes=5)
MAX_TOKEN_TAIL = len(ONLINE_MARK) + 32 + 1 + 64


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
    if not dot or not ISSUER_RE.fullmatch(issuer) or not CODE_ID_RE.fullmatch(code_id):
        raise MalformedError(
            "an online token is ON1.<issuer [A-Za-z0-9-]{1,32}>.<code id [A-Za-z0-9_-]{8,64}>",
            region=spec.code,
        )
    if issuer not in spec.online.issuers:
        raise MalformedError(
            f"issuer {issuer!r} is not one of region {spec.code}'s", region=spec.code
        )
    return OnlineToken(spec.code, issuer, code_id)


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
        if not is_region_code(self.region):
            raise ValueError("region is 6 digits")
        if not ISSUER_RE.fullmatch(self.issuer) or not CODE_ID_RE.fullmatch(self.code_id):
            raise ValueError("issuer or code id outside the token grammar")
        if not NONCE_RE.fullmatch(self.nonce):
            raise ValueError("a nonce is 16 to 64 base64url characters")

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
                "v": STATUS_VERSION,
                "region": self.region,
                "issuer": self.issuer,
                "code_id": self.code_id,
                "nonce": self.nonce,
                "asked_at": to_iso(self.asked_at),
            }
        )

    @classmethod
    def parse(cls, body: bytes) -> StatusQuestion:
        """A request body, strictly (the endpoint's side); raises :class:`MalformedError`."""
        value = loads_strict(body, max_bytes=MAX_REQUEST_BYTES, max_depth=2, integers_only=True)
        members = ("v", "region", "issuer", "code_id", "nonce", "asked_at")
        if not isinstance(value, dict) or set(value) != set(members):
            raise MalformedError("the request is an object of exactly " + ", ".join(members))
        if type(value["v"]) is not int or value["v"] != STATUS_VERSION:
            raise MalformedError("the request's v is not 1")
        region, issuer, code_id, nonce = (value[m] for m in members[1:5])
        if not all(isinstance(t, str) for t in (region, issuer, code_id, nonce)):
            raise MalformedError("region, issuer, code_id and nonce are text")
        try:
            return cls(region, issuer, code_id, nonce, parse_time_text(value["asked_at"]))
        except ValueError as exc:
            raise MalformedError(f"the request is not acceptable: {exc}") from None


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


def verify_status_document(
    document: str, question: StatusQuestion, keys: KeyLookup, now: datetime
) -> tuple[StatusClaims, RegionKey]:
    """Check a partner's status document against the question it answers (docs/partners.md
    §9.5 steps 2 to 6) and return its claims and the key that signed it.

    The format is :mod:`keys.statusdoc`'s (one format for both directions); this adds the
    question's side: the key among *the asked region's* keys only, the document about exactly
    what was asked, fresh, and the key valid and not revoked at ``checked_at``.
    Raises :class:`PartnerAnswerInvalidError` (header, members, another question, stale),
    :class:`KeyUnknownError`, :class:`AlgorithmUnsupportedError`,
    :class:`SignatureInvalidError`, :class:`keys.errors.KeyRevokedError`,
    :class:`keys.errors.KeyNotValidError`. The status itself is judged by :func:`refusal`.
    """
    region = question.region
    try:
        parsed = StatusDocument.parse(document)
    except AlgorithmUnsupportedError as exc:
        exc.metadata.setdefault("region", region)
        raise
    except MalformedError as exc:  # OversizedError too
        raise _invalid(f"the status document is not acceptable: {exc.message}", region) from None
    candidates = keys.keys_for(region, parsed.kid)
    if not candidates:
        raise KeyUnknownError(
            f"region {region} has no key {parsed.kid}", region=region, kid=parsed.kid
        )
    matching = [c for c in candidates if c.alg is parsed.alg]
    if not matching:
        raise AlgorithmUnsupportedError(
            f"the document declares {parsed.alg}, key {parsed.kid} is not",
            region=region,
            kid=parsed.kid,
        )
    claims: StatusClaims | None = None
    key = matching[0]
    for key in matching:
        try:
            claims = parsed.verify(key.public_key)
        except SignatureInvalidError:
            continue
        except MalformedError as exc:
            raise _invalid(
                f"the status document is not acceptable: {exc.message}", region
            ) from None
        break
    if claims is None:
        raise SignatureInvalidError(
            f"the status document's signature does not verify with key {parsed.kid} of region "
            f"{region}",
            region=region,
            kid=parsed.kid,
        )
    try:
        claims.check_answers(
            region=region,
            issuer=question.issuer,
            code_id=question.code_id,
            nonce=question.nonce,
            now=now,
            skew=ANSWER_SKEW,
        )
    except StatusMismatchError as exc:
        raise _invalid(exc.message, region) from None
    if claims.checked_at < question.asked_at - ANSWER_SKEW:
        raise _invalid("the status document is stale (checked before it was asked)", region)
    key.check_valid_at_issuance(claims.checked_at)
    return claims, key


def refusal(document: StatusClaims, now: datetime) -> ForeignDataError | None:
    """Why a verified document's code is not honoured at ``now`` (its status, or its validity
    against the clock), or None when it is valid now (docs/partners.md §9.5 steps 7-8)."""
    region = document.region
    if document.status == REVOKED:
        return CodeRevokedError("the issuing region says the code is revoked", region=region)
    if document.status == EXPIRED:
        return CodeExpiredError("the issuing region says the code has expired", region=region)
    if document.status == UNKNOWN:
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


def holder_of(document: StatusClaims, pseudonymise: Pseudonymise) -> str:
    """The gateway's keyed pseudonym of the document's holder reference ('' when unknown).

    The region's reference is treated like an identifier: only its keyed pseudonym is kept.
    """
    if document.holder_ref is None:
        return ""
    return pseudonymise(document.region, document.holder_ref)


def to_verified(
    document: StatusClaims, key: RegionKey, spec: RegionSpec, pseudonymise: Pseudonymise
) -> VerifiedCode:
    """A verified document with status valid, as the engine's verified code: issued at
    ``checked_at`` (the moment the status was stated, inside the key's validity), expiring at
    ``valid_until``."""
    if document.colour is None or document.valid_until is None:
        raise ValueError("only a document with a status other than unknown is a verified code")
    status = CanonicalStatus(
        region=document.region,
        holder=holder_of(document, pseudonymise),
        colour=Colour(document.colour),
        issued_at=document.checked_at,
        expires_at=document.valid_until,
        code_id=document.code_id,
        kid=key.kid,
    )
    return VerifiedCode(status, key, spec)


def cache_until(document: StatusClaims, received_at: datetime) -> datetime | None:
    """Until when a verified answer may be cached: ``max_age`` from ``checked_at`` and from its
    receipt, whichever ends first, never past ``valid_until``; None when it may not be cached."""
    if document.max_age <= 0:
        return None
    until = min(received_at + timedelta(seconds=document.max_age), document.fresh_until)
    if document.valid_until is not None:
        until = min(until, document.valid_until)
    return until if until > received_at else None


__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_REQUEST_BYTES",
    "ONLINE_MARK",
    "STATUS_PATH",
    "OnlineSpec",
    "OnlineToken",
    "StatusQuestion",
    "answer_body",
    "cache_until",
    "holder_of",
    "is_online_token",
    "open_answer",
    "parse_token",
    "refusal",
    "to_verified",
    "verify_status_document",
]
