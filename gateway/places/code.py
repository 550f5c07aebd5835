"""The place code: what a venue displays, signed by the gateway's ``place`` key.

``SDP1:`` + base64url(payload) + ``.`` + base64url(signature), the payload being canonical JSON
(RFC 8785) that names its key id; the signature covers the base64url payload text as it stands
in the code (the bytes before the ``.``), so nothing is re-serialised to verify, exactly as for
home-province codes (:mod:`gateway.tokens`). The same validity rule as every signed output
(docs/verifying.md, "When a signed output is valid"): the ``place`` key was valid and not
withdrawn at ``iat``, ``exp`` is within the key's window, and the code holds while
``iat <= now <= exp``. A place code is valid for as long as the key that signed it
(``exp`` = the key's ``not_after``): printed codes are re-issued before that
(``trustgw place reissue``).

:func:`verify_place_code` needs only the gateway's published keys (a trust file, the trust list
or ``GetGatewayKeys``): a checkpoint verifies a place code offline, and so does the gateway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from gateway.tokens import GatewayTrust, validity
from keys.crypto import PrivateKey, b64url_decode, b64url_encode
from keys.errors import CodeExpiredError, CodeNotYetValidError, MalformedError, OversizedError
from keys.jsonutil import canonical_json, loads_strict
from keys.keyset import GatewayKeyInfo
from keys.model import HOME_REGION
from keys.places import VENUE_CATEGORIES, VENUE_ID, check_division
from keys.timeutil import ensure_utc, from_unix

__all__ = [
    "MAX_PLACE_CODE_CHARS",
    "PLACE_CODE_PREFIX",
    "PLACE_CODE_TYPE",
    "PlaceCodeClaims",
    "issue_place_code",
    "verify_place_code",
]

PLACE_CODE_PREFIX = "SDP1:"
PLACE_CODE_TYPE = "trustgw/place-code/v1"
MAX_PLACE_CODE_CHARS = 1024  # a code of a 100-character name is about 600
_MEMBERS = ("typ", "iss", "kid", "venue", "name", "division", "category", "iat", "exp")


@dataclass(frozen=True)
class PlaceCodeClaims:
    """What a place code asserts (docs/verifying.md, "Place codes")."""

    venue: str
    name: str
    division: str
    category: str
    kid: str = ""
    iat: int = 0
    exp: int = 0

    def to_json(self) -> dict[str, Any]:
        """The payload's members; raises ``ValueError`` before the key and window are set."""
        if not self.kid or self.iat <= 0:
            raise ValueError(
                "a place code is signed with the window gateway.tokens.validity states"
            )
        return {
            "typ": PLACE_CODE_TYPE,
            "iss": HOME_REGION,
            "kid": self.kid,
            "venue": self.venue,
            "name": self.name,
            "division": self.division,
            "category": self.category,
            "iat": self.iat,
            "exp": self.exp,
        }

    @classmethod
    def from_json(cls, obj: object) -> PlaceCodeClaims:
        """Read a verified payload; raises :class:`MalformedError` for a member missing,
        unknown or of the wrong type, or a value out of its grammar."""
        if not isinstance(obj, Mapping):
            raise MalformedError("the place code payload is not a JSON object")
        missing = [k for k in _MEMBERS if k not in obj]
        if missing:
            raise MalformedError(f"the place code lacks {missing[0]!r}")
        unknown = sorted(set(obj) - set(_MEMBERS))
        if unknown:
            raise MalformedError(f"the place code has an unknown member {unknown[0][:32]!r}")
        if obj["typ"] != PLACE_CODE_TYPE:
            raise MalformedError("the payload is not a trustgw place code")
        if obj["iss"] != HOME_REGION:
            raise MalformedError(f"the place code is not issued by {HOME_REGION}")
        for name in ("kid", "venue", "name", "division", "category"):
            if not isinstance(obj[name], str):
                raise MalformedError(f"the place code's {name!r} is not text")
        for name in ("iat", "exp"):
            if type(obj[name]) is not int or obj[name] < 0:
                raise MalformedError(f"the place code's {name!r} is not a whole number")
        if VENUE_ID.fullmatch(obj["venue"]) is None:
            raise MalformedError("the place code's venue is not a venue id")
        try:
            check_division(obj["division"])
        except ValueError as exc:
            raise MalformedError(f"the place code's division: {exc}") from None
        if obj["category"] not in VENUE_CATEGORIES:
            raise MalformedError("the place code's category is not one of the venue categories")
        return cls(
            venue=obj["venue"],
            name=obj["name"],
            division=obj["division"],
            category=obj["category"],
            kid=obj["kid"],
            iat=obj["iat"],
            exp=obj["exp"],
        )


def sign_place_code(claims: PlaceCodeClaims, key: PrivateKey) -> str:
    """Sign a place code as given, its key id and window included."""
    body = b64url_encode(canonical_json(claims.to_json()))
    signature = key.sign(body.encode("ascii"))
    return f"{PLACE_CODE_PREFIX}{body}.{b64url_encode(signature)}"


def issue_place_code(
    info: GatewayKeyInfo, key: PrivateKey, now: datetime, claims: PlaceCodeClaims
) -> str:
    """Issue a place code at ``now`` with the ``place`` key ``info``: ``iat`` = ``now``, ``exp``
    = the key's ``not_after``. Raises ``ValueError`` as :func:`gateway.tokens.validity`."""
    iat, exp = validity(now, info)
    return sign_place_code(replace(claims, kid=info.kid, iat=iat, exp=exp), key)


def verify_place_code(code: str, trust: GatewayTrust, now: datetime) -> PlaceCodeClaims:
    """Verify a place code offline at ``now`` with the gateway's public keys and return its
    claims.

    Raises :class:`MalformedError`, :class:`OversizedError`, :class:`keys.errors.KeyUnknownError`,
    :class:`keys.errors.SignatureInvalidError`, :class:`keys.errors.KeyNotValidError`,
    :class:`keys.errors.KeyRevokedError`, :class:`CodeNotYetValidError` or
    :class:`CodeExpiredError`.
    """
    now = ensure_utc(now)
    code = code.strip()
    if len(code) > MAX_PLACE_CODE_CHARS:
        raise OversizedError(f"a place code has at most {MAX_PLACE_CODE_CHARS} characters")
    if not code.startswith(PLACE_CODE_PREFIX):
        raise MalformedError(f"a place code starts with {PLACE_CODE_PREFIX}")
    body, sep, sig_text = code[len(PLACE_CODE_PREFIX) :].partition(".")
    if not sep or "." in sig_text:
        raise MalformedError("a place code has two dot-separated parts")
    payload = b64url_decode(body, limit=MAX_PLACE_CODE_CHARS)
    signature = b64url_decode(sig_text, limit=256)
    obj = loads_strict(payload, max_bytes=MAX_PLACE_CODE_CHARS, max_depth=2, what="place code")
    if not isinstance(obj, dict):
        raise MalformedError("the place code payload is not a JSON object")
    # The key id is only a hint until the signature verifies with that key of role "place".
    key = trust.find(str(obj.get("kid", ""))[:64], "place")
    key.public_key.verify(body.encode("ascii"), signature)
    claims = PlaceCodeClaims.from_json(obj)
    if claims.exp < claims.iat:
        raise MalformedError("the place code expires before it is issued")
    try:
        iat, exp = from_unix(claims.iat), from_unix(claims.exp)
    except ValueError:
        raise MalformedError("the place code's iat/exp are out of range") from None
    key.check_signed(iat, exp)
    if now < iat:
        raise CodeNotYetValidError(f"the place code is not valid before {iat.isoformat()}")
    if now > exp:
        raise CodeExpiredError(f"the place code expired at {exp.isoformat()}")
    return claims
