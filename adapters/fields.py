"""Declarative field conventions: how a region's claims spell holder, colour, times and code id.

A :class:`Fields` value names the claim paths (flat ``("color",)``, nested ``("hs", "c")`` or CWT
integer labels ``(-70001, 3)``), the colour spelling and the time format of one region. It reads
verified claims into a :class:`CanonicalStatus` and, for the simulator, writes them. The holder's
name may be in the code, but translation never reads it; the ID number is kept only as the keyed
pseudonym.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from adapters.base import CanonicalStatus, Colour, Pseudonymise
from adapters.codecs.encoding import dump_cbor
from keys.errors import MalformedError
from keys.timeutil import UTC, ensure_utc, from_unix, to_unix

Path = tuple[Any, ...]

CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")
MAX_CODE_ID_CHARS = 128
MAX_TIME_TEXT = 40
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def id_check_digit(first17: str) -> str:
    """GB 11643-1999 check character (ISO 7064 MOD 11-2) of the first 17 digits."""
    total = sum(int(ch) * w for ch, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def valid_id_number(value: str, *, check_digit: bool = False) -> bool:
    """An 18-character resident ID number: 17 digits then a digit or X.

    The check digit is verified only on request: the partner's signature vouches for the number,
    and refusing a signed code over a partner's data-entry slip would strand its holder.
    """
    return (
        len(value) == 18
        and value.isascii()
        and value[:17].isdigit()
        and (value[17].isdigit() or value[17] in "Xx")
        and (not check_digit or id_check_digit(value[:17]) == value[17].upper())
    )


# --- colours ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColourSpelling:
    """One exact spelling per colour; the value's type must match too (``1`` is not ``"1"``)."""

    green: Any
    yellow: Any
    red: Any

    def __post_init__(self) -> None:
        values = (self.green, self.yellow, self.red)
        if len({(type(v), v) for v in values}) != 3:
            raise ValueError("colour spellings must differ")
        if any(isinstance(v, bool) or not isinstance(v, (int, str)) for v in values):
            raise ValueError("colours are spelled as text or integers")

    def read(self, value: Any) -> Colour:
        """The colour ``value`` spells (same type and value); raises :class:`MalformedError`
        otherwise.
        """
        for spelled, colour in (
            (self.green, Colour.GREEN),
            (self.yellow, Colour.YELLOW),
            (self.red, Colour.RED),
        ):
            if type(value) is type(spelled) and value == spelled:
                return colour
        raise MalformedError(f"unknown colour spelling {str(value)[:16]!r}")

    def write(self, colour: Colour) -> Any:
        """How this region spells ``colour``."""
        return {Colour.GREEN: self.green, Colour.YELLOW: self.yellow, Colour.RED: self.red}[colour]


WORDS = ColourSpelling("green", "yellow", "red")
LETTERS = ColourSpelling("G", "Y", "R")
CHINESE = ColourSpelling("绿", "黄", "红")
DIGITS_012 = ColourSpelling(0, 1, 2)
DIGITS_123 = ColourSpelling(1, 2, 3)
DIGITS_012_TEXT = ColourSpelling("0", "1", "2")


# --- times ------------------------------------------------------------------------------------


class TimeFormat(StrEnum):
    """How a region writes a time claim: unix seconds or milliseconds, ISO 8601 with an offset, or
    compact China Standard Time.
    """

    UNIX_SECONDS = "unix-seconds"  # integer seconds since 1970-01-01T00:00:00Z
    UNIX_MILLIS = "unix-millis"  # integer milliseconds since the epoch
    ISO8601 = "iso8601"  # text, with a UTC offset ("Z" or "+08:00"); no offset is refused
    CST_COMPACT = "cst-compact"  # text "YYYYMMDDhhmmss" in China Standard Time (UTC+8)

    def read(self, value: Any, name: str) -> datetime:
        """The time claim ``name`` in this format, aware UTC; raises :class:`MalformedError`."""
        try:
            return self._read(value)
        except (ValueError, TypeError, OverflowError):
            raise MalformedError(f"claim {name} is not a time in {self.value} form") from None

    def _read(self, value: Any) -> datetime:
        if self is TimeFormat.UNIX_SECONDS or self is TimeFormat.UNIX_MILLIS:
            if type(value) is not int:
                raise TypeError("an integer")
            return from_unix(value / 1000 if self is TimeFormat.UNIX_MILLIS else value)
        if type(value) is not str or len(value) > MAX_TIME_TEXT:
            raise TypeError("text")
        if self is TimeFormat.CST_COMPACT:
            if len(value) != 14 or not value.isascii() or not value.isdigit():
                raise ValueError("YYYYMMDDhhmmss")
            parsed = datetime(
                int(value[0:4]), int(value[4:6]), int(value[6:8]),
                int(value[8:10]), int(value[10:12]), int(value[12:14]),
                tzinfo=CHINA_STANDARD_TIME,
            )  # fmt: skip
        else:
            if "T" not in value:
                raise ValueError("a date and a time")
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                raise ValueError("an offset")
        result = ensure_utc(parsed)
        from_unix(result.timestamp())  # range check: 2000..2200
        return result

    def write(self, value: datetime) -> Any:
        """``value`` in this format (the issuer's side of :meth:`read`)."""
        if self is TimeFormat.UNIX_SECONDS:
            return to_unix(value)
        if self is TimeFormat.UNIX_MILLIS:
            return to_unix(value) * 1000
        if self is TimeFormat.CST_COMPACT:
            return ensure_utc(value).astimezone(CHINA_STANDARD_TIME).strftime("%Y%m%d%H%M%S")
        return ensure_utc(value).astimezone(CHINA_STANDARD_TIME).replace(microsecond=0).isoformat()


# --- code ids ---------------------------------------------------------------------------------


class CodeIdForm(StrEnum):
    """How a region writes its code id: text, or bytes shown as lower-case hex."""

    TEXT = "text"  # a string of 1 to 128 printable characters
    BYTES = "bytes"  # a byte string (CWT cti), written as lower-case hex in the canonical status


def derived_code_id(claims: Mapping[Any, Any]) -> str:
    """A stable id for a region whose codes carry none (docs/partners.md section 1.6).

    ``d-`` and the first 32 hex digits of SHA-256 over the RFC 8949 core deterministic CBOR
    encoding of the whole claims value as decoded from the signed payload (JSON objects as text-
    keyed maps, JSON numbers with a fraction or exponent as floats). Hashing the claims rather than
    the signature keeps the id stable when the same claims are signed again (ECDSA signatures are
    randomised and malleable). Raises :class:`MalformedError` for text that is not Unicode.
    """
    return "d-" + hashlib.sha256(dump_cbor(claims)).hexdigest()[:32]


# --- the convention ---------------------------------------------------------------------------


def _dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


@dataclass(frozen=True)
class Fields:
    """A region's field convention (implements :class:`adapters.base.FieldConvention`).

    ``constants`` are claims every code of the region carries with a fixed value (a format
    version, an issuer name): written by :meth:`build` and checked by :meth:`translate`.
    ``holder_name`` is where the issuer writes the name (``None``: the region omits it).
    ``code_id`` ``None`` means the region's codes carry no id: one is derived from the claims.
    """

    holder_id: Path
    colour: Path
    colour_spelling: ColourSpelling
    issued_at: Path
    expires_at: Path
    time_format: TimeFormat
    holder_name: Path | None = None
    code_id: Path | None = None
    code_id_form: CodeIdForm = CodeIdForm.TEXT
    constants: tuple[tuple[Path, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        paths = [self.holder_id, self.colour, self.issued_at, self.expires_at]
        paths += [p for p in (self.holder_name, self.code_id) if p is not None]
        paths += [p for p, _ in self.constants]
        if any(not p for p in paths) or len(set(paths)) != len(paths):
            raise ValueError("claim paths must be non-empty and distinct")

    # -- reading ---------------------------------------------------------------------------

    def translate(
        self, claims: Mapping[Any, Any], region: str, kid: str, pseudonymise: Pseudonymise
    ) -> CanonicalStatus:
        """Read verified claims into the canonical status; only the ID number's pseudonym is kept.

        Raises :class:`MalformedError` naming the claim that is missing or wrongly spelled.
        """
        for path, expected in self.constants:
            value = self._get(claims, path, "constant")
            if type(value) is not type(expected) or value != expected:
                raise MalformedError(f"claim {_dotted(path)} is not {expected!r}")
        holder_id = self._get(claims, self.holder_id, "holder id number")
        if type(holder_id) is not str or not valid_id_number(holder_id):
            raise MalformedError(
                f"claim {_dotted(self.holder_id)} (holder id number) is not an ID number"
            )
        colour = self.colour_spelling.read(self._get(claims, self.colour, "colour"))
        issued_at = self.time_format.read(
            self._get(claims, self.issued_at, "issued-at"), _dotted(self.issued_at)
        )
        expires_at = self.time_format.read(
            self._get(claims, self.expires_at, "expires-at"), _dotted(self.expires_at)
        )
        if expires_at <= issued_at:
            raise MalformedError("the code expires before it is issued")
        return CanonicalStatus(
            region=region,
            holder=pseudonymise(region, holder_id.upper()),
            colour=colour,
            issued_at=issued_at,
            expires_at=expires_at,
            code_id=self._code_id(claims),
            kid=kid,
        )

    def _code_id(self, claims: Mapping[Any, Any]) -> str:
        if self.code_id is None:
            return derived_code_id(claims)
        value = self._get(claims, self.code_id, "code id")
        if self.code_id_form is CodeIdForm.BYTES:
            if type(value) is not bytes or not 0 < len(value) <= MAX_CODE_ID_CHARS // 2:
                raise MalformedError(
                    f"claim {_dotted(self.code_id)} (code id) is not 1 to 64 bytes"
                )
            return value.hex()
        if (
            type(value) is not str
            or not 0 < len(value) <= MAX_CODE_ID_CHARS
            or not value.isprintable()
        ):
            raise MalformedError(
                f"claim {_dotted(self.code_id)} (code id) is not 1 to 128 characters"
            )
        return value

    @staticmethod
    def _get(claims: Mapping[Any, Any], path: Path, what: str) -> Any:
        node: Any = claims
        for step in path:
            # type() first: the decoders make dicts, and an ABC isinstance costs a call each.
            if (type(node) is not dict and not isinstance(node, Mapping)) or step not in node:
                raise MalformedError(f"the code has no claim {_dotted(path)} ({what})")
            node = node[step]
        return node

    # -- writing (the issuer side) ---------------------------------------------------------

    def build(
        self,
        *,
        holder_id: str,
        holder_name: str,
        colour: Colour,
        issued_at: datetime,
        expires_at: datetime,
        code_id: str,
    ) -> dict[Any, Any]:
        """The claims this region's issuer writes, in the order docs/partners.md lists them."""
        claims: dict[Any, Any] = {}
        for path, value in self.constants:
            _put(claims, path, value)
        if self.code_id is not None:
            _put(
                claims,
                self.code_id,
                bytes.fromhex(code_id) if self.code_id_form is CodeIdForm.BYTES else code_id,
            )
        _put(claims, self.holder_id, holder_id)
        if self.holder_name is not None:
            _put(claims, self.holder_name, holder_name)
        _put(claims, self.colour, self.colour_spelling.write(colour))
        _put(claims, self.issued_at, self.time_format.write(issued_at))
        _put(claims, self.expires_at, self.time_format.write(expires_at))
        return claims


def _put(claims: dict[Any, Any], path: Path, value: Any) -> None:
    node = claims
    for step in path[:-1]:
        node = node.setdefault(step, {})
    node[path[-1]] = value


__all__ = [
    "CHINA_STANDARD_TIME",
    "CHINESE",
    "DIGITS_012",
    "DIGITS_012_TEXT",
    "DIGITS_123",
    "LETTERS",
    "UTC",
    "WORDS",
    "CodeIdForm",
    "ColourSpelling",
    "Fields",
    "TimeFormat",
    "derived_code_id",
    "id_check_digit",
    "valid_id_number",
]
