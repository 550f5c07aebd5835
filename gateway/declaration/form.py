"""What an arrival declaration says, checked: every field against its limit and its range.

:class:`DeclarationForm` is what the province's app back end sent, field by field as text and
flags; :func:`check` turns it into a :class:`Declared` (the ID number replaced by the holder's
keyed pseudonym at once) or raises a :class:`keys.errors.DeclarationInvalidError` whose message
names the field, never its value.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from adapters.fields import valid_id_number
from gateway.declaration.places import Place, parse_place
from gateway.eligibility import CASES, local_date
from keys.errors import DeclarationInvalidError

MAX_ID_NUMBER_CHARS = 32  # an 18-character number with room for white space
MAX_PLACE_CHARS = 16
MAX_DATE_CHARS = 16
MAX_PLACES = 32
MIN_CELSIUS, MAX_CELSIUS = 34.0, 43.0  # a body temperature someone standing at a desk can have
# An arrival may be dated up to this far ahead of the gateway's clock (the app's clock, a day
# that starts a little earlier there): the same skew as a partner code's issue time.
CLOCK_SKEW = timedelta(minutes=5)
MAX_PAST = timedelta(days=366)  # older arrivals, discharges, isolations: not this declaration's
# The dates each case status takes; any other date given with it is refused.
CASE_DATES: dict[str, tuple[str, ...]] = {
    "none": (),
    "confirmed": ("discharged_on",),
    "suspected": ("isolation_start", "isolation_end"),
    "positive": ("isolation_start", "isolation_end"),
    "close_contact": ("observation_end",),
    "high_risk_contact": ("isolation_start", "isolation_end"),
}
DATE_FIELDS = ("discharged_on", "isolation_start", "isolation_end", "observation_end")
# The reasons a declaration is refused for (docs/api.md, "DeclarationService"), besides the
# partner code's own, which are Recognise's.
REASONS = frozenset(
    {"ID_NUMBER_INVALID", "DATE_INVALID", "DATE_OUT_OF_RANGE", "ORIGIN_UNKNOWN", "PLACE_UNKNOWN",
     "FIELD_INVALID", "FIELD_TOO_LONG", "HOLDER_MISMATCH"}
)  # fmt: skip


def refused(reason: str, message: str, field: str) -> DeclarationInvalidError:
    """The refusal of a declaration for ``field``: its reason, a message naming the field (never
    the value sent), and the field in the ErrorInfo's metadata. ``ValueError`` for a reason
    that is not one of :data:`REASONS` (a programming error)."""
    if reason not in REASONS:
        raise ValueError(f"unknown declaration reason {reason[:32]!r}")
    error = DeclarationInvalidError(reason, message, field)
    error.metadata["field"] = field
    return error


@dataclass(frozen=True)
class DeclarationForm:
    """A declaration as sent. ``id_number`` is used once, for the pseudonym, and never shown:
    the representation leaves it out."""

    id_number: str = field(repr=False)
    origin: str
    arrival_date: str
    places: tuple[str, ...] = ()
    temperature: float | None = None
    dry_cough: bool = False
    fatigue: bool = False
    case: str = "none"
    discharged_on: str = ""
    isolation_start: str = ""
    isolation_end: str = ""
    observation_end: str = ""
    partner_code: str = field(default="", repr=False)


@dataclass(frozen=True)
class Declared:
    """A checked declaration: no ID number, the holder's pseudonym computed by the caller."""

    id_number: str = field(repr=False)  # normalised, for the pseudonyms only; never stored
    origin: Place
    arrival_date: date
    places: tuple[Place, ...]
    temperature: float | None
    dry_cough: bool
    fatigue: bool
    case: str
    dates: dict[str, date | None]
    partner_code: str = field(repr=False)


def _date(text: str, name: str) -> date | None:
    text = text.strip()
    if not text:
        return None
    if len(text) > MAX_DATE_CHARS:
        raise refused("FIELD_TOO_LONG", f"{name} is longer than {MAX_DATE_CHARS} characters", name)
    if len(text) != 10 or not text.isascii():
        raise refused("DATE_INVALID", f"{name} is not a date written YYYY-MM-DD", name)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise refused("DATE_INVALID", f"{name} is not an existing calendar day", name) from None


def _in_range(day: date, name: str, today: date, latest: date) -> date:
    if day > latest:
        raise refused("DATE_OUT_OF_RANGE", f"{name} is in the future", name)
    if day < today - MAX_PAST:
        raise refused("DATE_OUT_OF_RANGE", f"{name} is more than a year ago", name)
    return day


def _place(text: str, name: str) -> Place | None:
    text = text.strip()
    if len(text) > MAX_PLACE_CHARS:
        raise refused("FIELD_TOO_LONG", f"{name} is longer than {MAX_PLACE_CHARS} characters", name)
    return parse_place(text.upper())


def check(form: DeclarationForm, now: datetime) -> Declared:
    """The declaration, checked at ``now``. Raises :class:`DeclarationInvalidError` with reason
    ``ID_NUMBER_INVALID``, ``ORIGIN_UNKNOWN``, ``PLACE_UNKNOWN``, ``DATE_INVALID``,
    ``DATE_OUT_OF_RANGE``, ``FIELD_INVALID``, ``FIELD_TOO_LONG``."""
    if len(form.id_number) > MAX_ID_NUMBER_CHARS:
        raise refused(
            "FIELD_TOO_LONG",
            f"id_number is longer than {MAX_ID_NUMBER_CHARS} characters",
            "id_number",
        )
    id_number = unicodedata.normalize("NFKC", form.id_number).strip().upper()
    if not valid_id_number(id_number, check_digit=True):
        raise refused(
            "ID_NUMBER_INVALID",
            "id_number is not a resident ID number (18 characters, GB 11643 check digit)",
            "id_number",
        )
    origin = _place(form.origin, "origin")
    if origin is None or not origin.outside:
        raise refused(
            "ORIGIN_UNKNOWN",
            "origin is not a division code of another province or a country code",
            "origin",
        )
    today = local_date(now)
    latest = local_date(now + CLOCK_SKEW)
    arrival = _date(form.arrival_date, "arrival_date")
    if arrival is None:
        raise refused("DATE_INVALID", "arrival_date is missing", "arrival_date")
    arrival = _in_range(arrival, "arrival_date", today, latest)
    if len(form.places) > MAX_PLACES:
        raise refused("FIELD_INVALID", f"places lists more than {MAX_PLACES} places", "places")
    places: list[Place] = []
    for index, text in enumerate(form.places):
        place = _place(text, f"places[{index}]")
        if place is None:
            raise refused(
                "PLACE_UNKNOWN",
                f"places[{index}] is not a division code or a country code",
                "places",
            )
        if place not in places:
            places.append(place)
    temperature = form.temperature
    if temperature is not None and (
        not math.isfinite(temperature) or not MIN_CELSIUS <= temperature <= MAX_CELSIUS
    ):
        raise refused(
            "FIELD_INVALID",
            f"temperature_celsius is not between {MIN_CELSIUS} and {MAX_CELSIUS}",
            "temperature_celsius",
        )
    if form.case not in CASES:
        raise refused("FIELD_INVALID", "case_status is not one of the plan's case statuses", "case")
    dates: dict[str, date | None] = {}
    for name in DATE_FIELDS:
        day = _date(getattr(form, name), name)
        if day is not None and name not in CASE_DATES[form.case]:
            raise refused("FIELD_INVALID", f"{name} is not a date of this case status", name)
        # A planned end of isolation or observation may lie ahead; nothing else may.
        ahead = today + MAX_PAST if name in ("isolation_end", "observation_end") else latest
        dates[name] = None if day is None else _in_range(day, name, today, ahead)
    start, end = dates["isolation_start"], dates["isolation_end"]
    if start is not None and end is not None and end < start:
        raise refused("FIELD_INVALID", "isolation_end is before isolation_start", "isolation_end")
    return Declared(
        id_number=id_number,
        origin=origin,
        arrival_date=arrival,
        places=tuple(places),
        temperature=temperature,
        dry_cough=form.dry_cough,
        fatigue=form.fatigue,
        case=form.case,
        dates=dates,
        partner_code=form.partner_code,
    )
