"""A scanned place code's part of a ``Recognise`` answer, and the visit it records
(docs/api.md, "Place codes and visits").

The holder's code is decided exactly as without a place code; the place code's outcome is
reported beside it (``place_reason``, ``place_message``, ``venue_id``). A visit is recorded only
for a place code that verified and names an enabled venue, queued in memory for the batched
visit log (:class:`gateway.places.visits.VisitLog`): no store access on the request path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.api.v1 import recognition_pb2 as pb
from gateway.engine import Recognition
from gateway.places.book import PlaceOutcome
from gateway.runtime.gateway import Gateway
from keys.places import VisitEntry

# The metric's children by reason, bound once (``labels()`` takes a lock and builds a key per
# call); the reasons are the bounded set of docs/api.md, "Place codes and visits".
_COUNTED: dict[tuple[int, str], Any] = {}


def record_visit(
    gateway: Gateway,
    response: pb.RecogniseResponse,
    decision: Recognition,
    place: PlaceOutcome,
    now: datetime,
) -> None:
    """Fill the place fields of ``response`` and queue the visit when there is one."""
    response.place_reason = place.reason
    response.place_message = place.message
    key = (id(gateway.metrics), place.reason)
    child = _COUNTED.get(key)
    if child is None:
        if len(_COUNTED) >= 256:
            _COUNTED.clear()
        child = _COUNTED[key] = gateway.metrics.place_scans.labels(place.reason)
    child.inc()
    venue = place.venue
    if venue is None:
        return
    response.venue_id = venue.id
    gateway.visits.record(
        VisitEntry(
            now,
            venue.id,
            decision.holder,
            "recognised" if decision.recognised else "refused",
            decision.reason,
        )
    )
