"""Venues and their visits, as the store keeps them (docs/operations.md, "Venues and place codes").

A venue (a mall, a supermarket, a residential compound ...) displays a place code the gateway
signed (:mod:`gateway.places.code`); a checkpoint that scans it with a holder's code records a
visit. A visit names the holder only by the keyed pseudonym of the recognised code
(:mod:`keys.pseudonym`), never by a name or an ID number, and is purged after the retention
period like the recognition log. These types cross the store boundary, so they carry no SQL.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from keys.timeutil import ensure_utc

__all__ = [
    "VENUE_CATEGORIES",
    "VENUE_ID",
    "Contact",
    "Venue",
    "VisitEntry",
    "check_division",
    "check_venue_text",
    "new_venue_id",
]

# The fixed list of venue categories (docs/operations.md): what the plan names, and a few more
# kinds of public place that checkpoints stand at.
VENUE_CATEGORIES = (
    "mall",
    "supermarket",
    "pharmacy",
    "residential",
    "market",
    "restaurant",
    "hotel",
    "hospital",
    "school",
    "office",
    "transport",
    "other",
)
VENUE_ID = re.compile(r"PL[0-9a-f]{16}")
HOME_PROVINCE_PREFIX = "37"  # Shandong's division codes (GB/T 2260)
MAX_NAME_CHARS = 100
MAX_ADDRESS_CHARS = 200
_DIVISION = re.compile(r"[0-9]{6}")


def new_venue_id() -> str:
    """A fresh venue id: ``PL`` and 16 random hex digits."""
    return "PL" + secrets.token_hex(8)


def check_division(code: str) -> str:
    """``code`` if it is a district- or county-level division code of the home province
    (GB/T 2260: 6 ASCII digits, ``37`` then a city, then a district that is not ``00``).

    Raises ``ValueError``.
    """
    if not isinstance(code, str) or _DIVISION.fullmatch(code) is None:
        raise ValueError("a division code is 6 digits (GB/T 2260)")
    if not code.startswith(HOME_PROVINCE_PREFIX):
        raise ValueError(
            f"venues are in the home province: its division codes start with 37, not {code}"
        )
    if code[2:4] == "00" or code[4:] == "00":
        raise ValueError(f"{code} is a province or city code: give the district's (e.g. 370102)")
    return code


def check_venue_text(value: str, what: str, max_chars: int, *, required: bool) -> str:
    """``value`` normalised (NFC, surrounding space stripped) if it is printable text of at most
    ``max_chars`` characters (and not empty when ``required``). Raises ``ValueError``."""
    text = unicodedata.normalize("NFC", value).strip()
    if required and not text:
        raise ValueError(f"a venue's {what} must not be empty")
    if len(text) > max_chars:
        raise ValueError(f"a venue's {what} has at most {max_chars} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text):
        raise ValueError(f"a venue's {what} must not hold control characters")
    return text


@dataclass(frozen=True)
class Venue:
    """A venue and its place code (the code as signed when it was added)."""

    id: str
    name: str
    division: str
    category: str
    address: str
    enabled: bool
    code: str  # the signed place code (gateway.places.code), what its QR image holds
    kid: str  # the place key that signed it
    created_at: datetime
    disabled_at: datetime | None = None

    def __post_init__(self) -> None:
        if VENUE_ID.fullmatch(self.id) is None:
            raise ValueError("a venue id is PL and 16 hex digits")
        check_division(self.division)
        if self.category not in VENUE_CATEGORIES:
            raise ValueError(f"unknown venue category {self.category[:24]!r}")
        object.__setattr__(self, "created_at", ensure_utc(self.created_at))
        if self.disabled_at is not None:
            object.__setattr__(self, "disabled_at", ensure_utc(self.disabled_at))


class VisitEntry(NamedTuple):
    """One visit: at a venue, by a holder (keyed pseudonym; empty when the holder's code did
    not verify), when, and what the recognition decided. A named tuple: one per request."""

    at: datetime
    venue: str
    holder: str
    decision: str  # "recognised" | "refused"
    reason: str


class Contact(NamedTuple):
    """A holder seen at a venue near a traced holder's visit there: the contact's pseudonym,
    the venue, when the contact was there, and the traced visit it was near."""

    holder: str
    venue: str
    at: datetime
    near: datetime
