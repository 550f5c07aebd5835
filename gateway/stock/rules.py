"""The plan's eligibility rules applied to a city's certificate (docs/rules.md).

The rules themselves live in :mod:`gateway.eligibility`, shared with arrival declarations; this
module only says which certificate column is which fact.
"""

from __future__ import annotations

from datetime import datetime

from adapters.base import Colour
from gateway.eligibility import DAYS, FEVER_CELSIUS, Ceiling, Facts, evaluate
from gateway.stock.rows import Certificate

__all__ = ["DAYS", "FEVER_CELSIUS", "decide", "facts_of"]


def facts_of(cert: Certificate) -> Facts:
    """What the rules look at in a certificate; the city's status is the ceiling."""
    return Facts(
        resident_since=cert.resident_since,
        temperature=cert.temperature,
        dry_cough=cert.dry_cough,
        fatigue=cert.fatigue,
        case=cert.case,
        discharged_on=cert.discharged_on,
        isolation_start=cert.isolation_start,
        isolation_end=cert.isolation_end,
        observation_end=cert.observation_end,
        last_arrival=cert.last_arrival,
        ceiling=cert.status,
        ceiling_of=Ceiling.CITY,
    )


def decide(cert: Certificate, now: datetime) -> tuple[Colour, tuple[str, ...]]:
    """The colour under the plan's eligibility rules at ``now``, and the rules that failed.

    Green only if every rule holds; red for fever or an active confirmed, suspected or positive
    case; yellow for any other failed rule. Never better than the city's own status.
    """
    outcome = evaluate(facts_of(cert), now)
    return outcome.colour, outcome.failed
