"""The plan's eligibility rules: the colour a certificate earns at a given time, and why.

Pure functions of a validated :class:`gateway.stock.rows.Certificate` and ``now``; no I/O.
(docs/stock-conversion.md, "The rules: which colour".)
"""

from __future__ import annotations

from datetime import date, datetime

from adapters.base import Colour
from adapters.fields import CHINA_STANDARD_TIME
from gateway.stock.rows import Certificate
from keys.timeutil import ensure_utc

FEVER_CELSIUS = 37.3
DAYS = 14  # the plan's 14 days, counted in calendar days of China Standard Time

_RANK = {Colour.GREEN: 0, Colour.YELLOW: 1, Colour.RED: 2}


def _days_since(day: date | None, today: date) -> int:
    return 10**6 if day is None else (today - day).days


def _isolated_enough(cert: Certificate, today: date) -> bool:
    """Isolation ended (on or before today) and lasted at least 14 days."""
    start, end = cert.isolation_start, cert.isolation_end
    return start is not None and end is not None and end <= today and (end - start).days >= DAYS


def decide(cert: Certificate, now: datetime) -> tuple[Colour, tuple[str, ...]]:
    """The colour under the plan's eligibility rules at ``now``, and the rules that failed.

    Green only if every rule holds; red for fever or an active confirmed, suspected or positive
    case; yellow for any other failed rule. Never better than the city's own status.
    """
    today = ensure_utc(now).astimezone(CHINA_STANDARD_TIME).date()
    red: list[str] = []
    yellow: list[str] = []
    if cert.resident_since > today or _days_since(cert.resident_since, today) < DAYS:
        yellow.append("RESIDENT_UNDER_14_DAYS")
    if cert.temperature is not None and cert.temperature >= FEVER_CELSIUS:
        red.append("FEVER")
    if cert.dry_cough or cert.fatigue:
        yellow.append("SYMPTOMS")
    if cert.case == "confirmed":
        if cert.discharged_on is None or cert.discharged_on > today:
            red.append("CONFIRMED_NOT_DISCHARGED")
        elif _days_since(cert.discharged_on, today) < DAYS:
            yellow.append("DISCHARGED_UNDER_14_DAYS")
    elif cert.case in ("suspected", "positive"):
        if cert.isolation_end is None or cert.isolation_end > today:
            red.append("NOT_CURED")
        elif not _isolated_enough(cert, today):
            yellow.append("ISOLATED_UNDER_14_DAYS")
    elif cert.case == "close_contact":
        if cert.observation_end is None or cert.observation_end > today:
            yellow.append("UNDER_MEDICAL_OBSERVATION")
    elif cert.case == "high_risk_contact" and not _isolated_enough(cert, today):
        yellow.append("CONTACT_ISOLATED_UNDER_14_DAYS")
    if cert.last_arrival is not None and _days_since(cert.last_arrival, today) < DAYS:
        yellow.append("ARRIVED_UNDER_14_DAYS")
    colour = Colour.RED if red else Colour.YELLOW if yellow else Colour.GREEN
    if _RANK[cert.status] > _RANK[colour]:
        colour = cert.status
        yellow.append(f"CITY_STATUS_{cert.status.value.upper()}")
    return colour, tuple(red + yellow)
