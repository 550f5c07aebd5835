"""The claims of everything the gateway signs, one typed class per signed output.

Each class is built in one place on the signing side (the engine, the stock converter, the
partner service, through :mod:`gateway.tokens`), written with ``to_json`` into the canonical
payload, and read back with ``from_json`` by the verifier after the signature has verified. The
members are those docs/verifying.md lists, no more: an unknown member, a missing one or one of
the wrong type is ``MALFORMED``. The trust list's own payload is checked member by member by
:class:`keys.trustlist.TrustListVerifier`.

``iat`` and ``exp`` are left at 0 by the code that decides what to sign:
:func:`gateway.tokens.validity` states them when the key is chosen (``with_validity``), so a
window the verifier refuses is never signed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Self

from keys.errors import MalformedError
from keys.model import HOME_REGION
from keys.records import SubmissionResult
from keys.signed import MAX_JSON_INT
from keys.timeutil import to_unix

ATTESTATION_TYPE = "trustgw/attestation/v1"
HOME_CODE_TYPE = "trustgw/home-code/v1"
RECEIPT_TYPE = "trustgw/receipt/v1"

__all__ = [
    "ATTESTATION_TYPE",
    "HOME_CODE_TYPE",
    "RECEIPT_TYPE",
    "AttestationClaims",
    "DeclarationSource",
    "HomeCodeClaims",
    "PartnerSource",
    "ReceiptClaims",
    "StockSource",
]


# --- reading members ---------------------------------------------------------------------------


def _members(
    obj: object, what: str, required: Sequence[str], optional: Sequence[str] = ()
) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise MalformedError(f"the {what} is not a JSON object")
    missing = [k for k in required if k not in obj]
    if missing:
        raise MalformedError(f"the {what} lacks {missing[0]!r}")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise MalformedError(f"the {what} has an unknown member {unknown[0][:32]!r}")
    return obj


def _str(obj: Mapping[str, Any], name: str, what: str) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise MalformedError(f"the {what}'s {name!r} is not text")
    return value


def _int(obj: Mapping[str, Any], name: str, what: str) -> int:
    value = obj[name]
    if type(value) is not int or not 0 <= value <= MAX_JSON_INT:
        raise MalformedError(f"the {what}'s {name!r} is not a whole number of at least 0")
    return value


def _bool(obj: Mapping[str, Any], name: str, what: str) -> bool:
    value = obj[name]
    if not isinstance(value, bool):
        raise MalformedError(f"the {what}'s {name!r} is not true or false")
    return value


def _strs(obj: Mapping[str, Any], name: str, what: str) -> tuple[str, ...]:
    value = obj[name]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedError(f"the {what}'s {name!r} is not a list of text")
    return tuple(value)


def _header(obj: Mapping[str, Any], typ: str, what: str) -> None:
    if obj["typ"] != typ:
        raise MalformedError(f"the payload is not a trustgw {what}")
    if obj["iss"] != HOME_REGION:
        raise MalformedError(f"the {what} is not issued by {HOME_REGION}")


class _Validity:
    iat: int
    exp: int

    def with_validity(self, iat: int, exp: int) -> Self:
        """These claims with the signing window :func:`gateway.tokens.validity` stated."""
        # On the hot path once per decision: a copy of the fields, without dataclasses.replace's
        # re-validation (these frozen dataclasses have no __post_init__).
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__, iat=iat, exp=exp)
        return new

    def _check_times(self) -> None:
        # Only that a window was stated: whether it holds is the verifier's rule to apply.
        if self.iat <= 0:
            raise ValueError("sign only with the window gateway.tokens.validity states")


# --- attestations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttestationClaims(_Validity):
    """What a decision attestation asserts (docs/verifying.md, "Attestation format")."""

    region: str
    mode: str  # "show" | "convert"
    holder: str  # keyed pseudonym
    colour: str
    code_id: str
    code_kid: str
    code_iat: int
    code_exp: int
    converted_code_id: str | None = None  # convert mode only
    iat: int = 0
    exp: int = 0

    _REQUIRED = ("typ", "iss", "region", "mode", "holder", "colour", "code_id", "code_kid",
                 "code_iat", "code_exp", "iat", "exp")  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The payload's members; raises ``ValueError`` before the window is stated."""
        self._check_times()
        obj: dict[str, Any] = {
            "typ": ATTESTATION_TYPE,
            "iss": HOME_REGION,
            "region": self.region,
            "mode": self.mode,
            "holder": self.holder,
            "colour": self.colour,
            "code_id": self.code_id,
            "code_kid": self.code_kid,
            "code_iat": self.code_iat,
            "code_exp": self.code_exp,
            "iat": self.iat,
            "exp": self.exp,
        }
        if self.converted_code_id is not None:
            obj["converted_code_id"] = self.converted_code_id
        return obj

    @classmethod
    def from_json(cls, obj: object) -> AttestationClaims:
        """Read a verified payload; raises :class:`MalformedError`."""
        what = "attestation"
        o = _members(obj, what, cls._REQUIRED, ("converted_code_id",))
        _header(o, ATTESTATION_TYPE, what)
        return cls(
            region=_str(o, "region", what),
            mode=_str(o, "mode", what),
            holder=_str(o, "holder", what),
            colour=_str(o, "colour", what),
            code_id=_str(o, "code_id", what),
            code_kid=_str(o, "code_kid", what),
            code_iat=_int(o, "code_iat", what),
            code_exp=_int(o, "code_exp", what),
            converted_code_id=(
                _str(o, "converted_code_id", what) if "converted_code_id" in o else None
            ),
            iat=_int(o, "iat", what),
            exp=_int(o, "exp", what),
        )


# --- home-province codes -----------------------------------------------------------------------


@dataclass(frozen=True)
class PartnerSource:
    """A home code's source: a partner region's code.

    Home codes name only the region: the source's code id may be the holder's ID number, and
    the attestation returned with the home code names it. ``code_id`` is read from codes
    issued before that change (``{"region", "code_id"}``), which still verify.
    """

    region: str
    code_id: str | None = None

    def to_json(self) -> dict[str, str]:
        """``{"region"}`` (or ``{"region", "code_id"}`` for a code that named its source)."""
        if self.code_id is None:
            return {"region": self.region}
        return {"region": self.region, "code_id": self.code_id}


@dataclass(frozen=True)
class StockSource:
    """A home code's source: a city's local health certificate (docs/stock-conversion.md)."""

    city: str
    certificate_id: str

    def to_json(self) -> dict[str, str]:
        """``{"city", "certificate_id"}``."""
        return {"city": self.city, "certificate_id": self.certificate_id}


@dataclass(frozen=True)
class DeclarationSource:
    """A home code's source: an arrival declaration, from ``origin`` (a province's division code
    ``xx0000`` or an ISO 3166-1 country code; docs/api.md, "DeclarationService")."""

    origin: str

    def to_json(self) -> dict[str, str]:
        """``{"declaration"}``: the origin."""
        return {"declaration": self.origin}


def _source(obj: object) -> PartnerSource | StockSource | DeclarationSource:
    what = "home code's src"
    if isinstance(obj, Mapping) and "declaration" in obj:
        o = _members(obj, what, ("declaration",))
        return DeclarationSource(_str(o, "declaration", what))
    if isinstance(obj, Mapping) and "city" in obj:
        o = _members(obj, what, ("city", "certificate_id"))
        return StockSource(_str(o, "city", what), _str(o, "certificate_id", what))
    o = _members(obj, what, ("region",), ("code_id",))
    code_id = _str(o, "code_id", what) if "code_id" in o else None
    return PartnerSource(_str(o, "region", what), code_id)


@dataclass(frozen=True)
class HomeCodeClaims(_Validity):
    """What a home-province code asserts (docs/verifying.md, "Home-province code format").

    ``src_iat`` (when the source was issued) is stated for converted partner codes only.
    ``kid`` is the issuing key's id, set with the window when the key is chosen.
    """

    id: str
    holder: str
    colour: str
    src: PartnerSource | StockSource | DeclarationSource
    src_iat: int | None = None
    kid: str = ""
    iat: int = 0
    exp: int = 0

    _REQUIRED = ("typ", "iss", "kid", "id", "holder", "colour", "src", "iat", "exp")

    def signed_by(self, kid: str, iat: int, exp: int) -> HomeCodeClaims:
        """These claims with the issuing key and the window :func:`gateway.tokens.validity`
        stated."""
        return replace(self, kid=kid, iat=iat, exp=exp)

    def to_json(self) -> dict[str, Any]:
        """The payload's members; raises ``ValueError`` before the key and window are set."""
        self._check_times()
        if not self.kid:
            raise ValueError("a home code names the key that signs it")
        obj: dict[str, Any] = {
            "typ": HOME_CODE_TYPE,
            "iss": HOME_REGION,
            "kid": self.kid,
            "id": self.id,
            "holder": self.holder,
            "colour": self.colour,
            "src": self.src.to_json(),
            "iat": self.iat,
            "exp": self.exp,
        }
        if self.src_iat is not None:
            obj["src_iat"] = self.src_iat
        return obj

    @classmethod
    def from_json(cls, obj: object) -> HomeCodeClaims:
        """Read a verified payload; raises :class:`MalformedError`."""
        what = "home code"
        o = _members(obj, what, cls._REQUIRED, ("src_iat",))
        _header(o, HOME_CODE_TYPE, what)
        return cls(
            id=_str(o, "id", what),
            holder=_str(o, "holder", what),
            colour=_str(o, "colour", what),
            src=_source(o["src"]),
            src_iat=_int(o, "src_iat", what) if "src_iat" in o else None,
            kid=_str(o, "kid", what),
            iat=_int(o, "iat", what),
            exp=_int(o, "exp", what),
        )


# --- submission receipts -----------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptClaims(_Validity):
    """What a submission receipt asserts: the ``SubmissionReceipt`` fields under their proto
    names (docs/verifying.md, "Submission receipts")."""

    kind: str
    region: str
    digest: str
    accepted_at: int
    duplicate: bool
    version: int
    keys_added: tuple[str, ...]
    keys_removed: tuple[str, ...]
    keys_kept: tuple[str, ...]
    anchors_rotated: bool
    key_id: str
    revoked_at: int  # 0: none
    batch_id: str
    codes: int
    holders: int
    conversions_revoked: int
    iat: int = 0
    exp: int = 0

    _FIELDS = ("kind", "region", "digest", "accepted_at", "duplicate", "version", "keys_added",
               "keys_removed", "keys_kept", "anchors_rotated", "key_id", "revoked_at", "batch_id",
               "codes", "holders", "conversions_revoked")  # fmt: skip
    _TEXT = ("kind", "region", "digest", "key_id", "batch_id")
    _FLAGS = ("duplicate", "anchors_rotated")
    _LISTS = ("keys_added", "keys_removed", "keys_kept")

    @classmethod
    def of(cls, result: SubmissionResult) -> ReceiptClaims:
        """The claims a receipt of ``result`` makes (without its window)."""
        return cls(
            kind=result.kind.value,
            region=result.region,
            digest=result.digest,
            accepted_at=to_unix(result.accepted_at),
            duplicate=result.duplicate,
            version=result.version or 0,
            keys_added=tuple(result.keys_added),
            keys_removed=tuple(result.keys_removed),
            keys_kept=tuple(result.keys_kept),
            anchors_rotated=result.anchors_rotated,
            key_id=result.kid or "",
            revoked_at=0 if result.revoked_at is None else to_unix(result.revoked_at),
            batch_id=result.batch_id or "",
            codes=result.codes,
            holders=result.holders,
            conversions_revoked=result.conversions_revoked,
        )

    def fields(self) -> dict[str, Any]:
        """The receipt's fields alone (no ``typ``/``iss``/window), lists as lists."""
        out: dict[str, Any] = {}
        for name in self._FIELDS:
            value = getattr(self, name)
            out[name] = list(value) if name in self._LISTS else value
        return out

    def to_json(self) -> dict[str, Any]:
        """The payload's members; raises ``ValueError`` before the window is stated."""
        self._check_times()
        return {
            "typ": RECEIPT_TYPE,
            "iss": HOME_REGION,
            **self.fields(),
            "iat": self.iat,
            "exp": self.exp,
        }

    @classmethod
    def from_json(cls, obj: object) -> ReceiptClaims:
        """Read a verified payload; raises :class:`MalformedError`."""
        what = "receipt"
        o = _members(obj, what, ("typ", "iss", *cls._FIELDS, "iat", "exp"))
        _header(o, RECEIPT_TYPE, what)
        values: dict[str, Any] = {}
        for name in (*cls._FIELDS, "iat", "exp"):
            if name in cls._TEXT:
                values[name] = _str(o, name, what)
            elif name in cls._FLAGS:
                values[name] = _bool(o, name, what)
            elif name in cls._LISTS:
                values[name] = _strs(o, name, what)
            else:
                values[name] = _int(o, name, what)
        return cls(**values)
