"""The plan's eligibility rules, in one place: the colour a holder earns at a given time, the
rules that failed, and, for yellow, the day from which the holder would be green if nothing
changes (docs/rules.md).

Used by the stock conversion (:mod:`gateway.stock.rules`, a city's certificate) and by arrival
declarations (:mod:`gateway.declaration`, what an arriving holder declares). Pure functions of a
:class:`Facts` record and ``now``; no I/O.

Dates are calendar days in China Standard Time; "at least 14 days since D" holds from D + 14.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from adapters.base import Colour
from adapters.fields import CHINA_STANDARD_TIME
from keys.timeutil import ensure_utc

FEVER_CELSIUS = 37.3
DAYS = 14  # the plan's 14 days, counted in calendar days of China Standard Time
CASES = ("none", "confirmed", "suspected", "positive", "close_contact", "high_risk_contact")

_RANK = {Colour.GREEN: 0, Colour.YELLOW: 1, Colour.RED: 2}
_FOREVER = 10**6


class Ceiling(StrEnum):
    """Whose colour the result may not improve on: a city's own status (stock conversion) or
    the partner code the holder showed (declaration)."""

    CITY = "CITY_STATUS"
    PARTNER = "PARTNER_CODE"


# Every rule's stable name and the sentence a holder or operator reads.
RULE_MESSAGES: dict[str, str] = {
    "RESIDENT_UNDER_14_DAYS": "resident in the province for less than 14 days",
    "FEVER": f"temperature of {FEVER_CELSIUS} °C or above",
    "SYMPTOMS": "persistent dry cough or fatigue",
    "CONFIRMED_NOT_DISCHARGED": "confirmed case, not discharged",
    "DISCHARGED_UNDER_14_DAYS": "confirmed case discharged less than 14 days ago",
    "NOT_CURED": "suspected case or positive test, not cured",
    "ISOLATED_UNDER_14_DAYS": "suspected case or positive test isolated less than 14 days",
    "UNDER_MEDICAL_OBSERVATION": "close contact not yet released from medical observation",
    "ARRIVED_UNDER_14_DAYS": "returned from outside the province less than 14 days ago: home "
    "observation",
    "CONTACT_ISOLATED_UNDER_14_DAYS": "contact with people from a high-incidence area, "
    "isolated less than 14 days",
    "CITY_STATUS_YELLOW": "the city's own certificate is yellow",
    "CITY_STATUS_RED": "the city's own certificate is red",
    "PARTNER_CODE_YELLOW": "the home region's code is yellow",
    "PARTNER_CODE_RED": "the home region's code is red",
}


@dataclass(frozen=True)
class Facts:
    """What the rules look at, whoever supplied it.

    ``resident_since``: since when the holder lives in the province (``None``: not asked, as
    for an arrival, whose ``last_arrival`` rule stands for it). ``arrival_exempt``: rule 4 does
    not apply (a recognised green code of a partner region: no 14-day home observation).
    ``ceiling``: a colour the result may not improve on, and whose it is.
    """

    resident_since: date | None = None
    temperature: float | None = None
    dry_cough: bool = False
    fatigue: bool = False
    case: str = "none"
    discharged_on: date | None = None
    isolation_start: date | None = None
    isolation_end: date | None = None
    observation_end: date | None = None
    last_arrival: date | None = None
    arrival_exempt: bool = False
    ceiling: Colour = Colour.GREEN
    ceiling_of: Ceiling = Ceiling.CITY

    def __post_init__(self) -> None:
        if self.case not in CASES:
            raise ValueError(f"unknown case status {self.case[:24]!r}")


@dataclass(frozen=True)
class Outcome:
    """The colour, the rules that failed (red ones first), and for yellow the first day on
    which every failed rule holds again if nothing else changes (``None``: red or green, or a
    failed rule that time alone does not lift)."""

    colour: Colour
    failed: tuple[str, ...]
    green_from: date | None = None

    def messages(self) -> tuple[tuple[str, str], ...]:
        """``(rule, message)`` for every failed rule."""
        return tuple((rule, RULE_MESSAGES[rule]) for rule in self.failed)


def local_date(now: datetime) -> date:
    """The calendar day in China Standard Time at ``now``."""
    return ensure_utc(now).astimezone(CHINA_STANDARD_TIME).date()


def _days_since(day: date | None, today: date) -> int:
    return _FOREVER if day is None else (today - day).days


def _isolated_enough(start: date | None, end: date | None, today: date) -> bool:
    """Isolation ended (on or before today) and lasted at least 14 days."""
    return start is not None and end is not None and end <= today and (end - start).days >= DAYS


def _isolation_lifts(start: date | None, end: date | None) -> date | None:
    """The day an isolation still running lifts its rule: its end, if it lasts 14 days."""
    if start is None or end is None or (end - start).days < DAYS:
        return None
    return end


def evaluate(facts: Facts, now: datetime) -> Outcome:
    """The colour under the plan's eligibility rules at ``now``, the failed rules and the
    green-from day.

    Green only if every rule holds; red for fever or an active confirmed, suspected or positive
    case; yellow for any other failed rule. Never better than ``facts.ceiling``.
    """
    today = local_date(now)
    red: list[str] = []
    yellow: list[str] = []
    lifts: list[date | None] = []  # for each yellow rule, the day it holds again
    f = facts
    if f.resident_since is not None and (
        f.resident_since > today or _days_since(f.resident_since, today) < DAYS
    ):
        yellow.append("RESIDENT_UNDER_14_DAYS")
        lifts.append(f.resident_since + timedelta(days=DAYS))
    if f.temperature is not None and f.temperature >= FEVER_CELSIUS:
        red.append("FEVER")
    if f.dry_cough or f.fatigue:
        yellow.append("SYMPTOMS")
        lifts.append(None)
    if f.case == "confirmed":
        if f.discharged_on is None or f.discharged_on > today:
            red.append("CONFIRMED_NOT_DISCHARGED")
        elif _days_since(f.discharged_on, today) < DAYS:
            yellow.append("DISCHARGED_UNDER_14_DAYS")
            lifts.append(f.discharged_on + timedelta(days=DAYS))
    elif f.case in ("suspected", "positive"):
        if f.isolation_end is None or f.isolation_end > today:
            red.append("NOT_CURED")
        elif not _isolated_enough(f.isolation_start, f.isolation_end, today):
            yellow.append("ISOLATED_UNDER_14_DAYS")
            lifts.append(None)  # an isolation that ended short does not lengthen
    elif f.case == "close_contact":
        if f.observation_end is None or f.observation_end > today:
            yellow.append("UNDER_MEDICAL_OBSERVATION")
            lifts.append(f.observation_end)
    elif f.case == "high_risk_contact" and not _isolated_enough(
        f.isolation_start, f.isolation_end, today
    ):
        yellow.append("CONTACT_ISOLATED_UNDER_14_DAYS")
        ends_later = f.isolation_end is not None and f.isolation_end > today
        lifts.append(_isolation_lifts(f.isolation_start, f.isolation_end) if ends_later else None)
    if (
        not f.arrival_exempt
        and f.last_arrival is not None
        and _days_since(f.last_arrival, today) < DAYS
    ):
        yellow.append("ARRIVED_UNDER_14_DAYS")
        lifts.append(f.last_arrival + timedelta(days=DAYS))
    colour = Colour.RED if red else Colour.YELLOW if yellow else Colour.GREEN
    if f.ceiling is not Colour.GREEN:
        # Listed when it makes the colour worse; a partner's code whenever it is not green (the
        # holder is told why). Either way, when it lifts is the other system's: not known ahead.
        if _RANK[f.ceiling] > _RANK[colour] or f.ceiling_of is Ceiling.PARTNER:
            yellow.append(f"{f.ceiling_of.value}_{f.ceiling.value.upper()}")
        colour = max(colour, f.ceiling, key=_RANK.__getitem__)
        lifts.append(None)
    green_from = None
    if colour is Colour.YELLOW and lifts and all(d is not None for d in lifts):
        green_from = max(d for d in lifts if d is not None)
    return Outcome(colour, tuple(red + yellow), green_from)
