"""``TracingService``, for contact tracers (certificate role ``tracer``, and no other):
the venues a person visited, and the holders seen near those visits (docs/api.md,
"TracingService"). A thin adapter over :class:`gateway.places.tracing.Tracing`: the tracer's
identity is its certificate name, read here from the verified TLS session.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

import grpc

from gateway.api.v1 import tracing_pb2 as pb
from gateway.grpc.auth import caller
from gateway.grpc.methods import MAX_SMALL_REQUEST_BYTES, Method
from gateway.pki import Role
from gateway.places.tracing import TraceQuery
from gateway.runtime.gateway import Gateway
from keys.errors import GatewayError, InvalidRequestError
from keys.timeutil import from_unix, to_unix, utcnow

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TracingService"].full_name
DEV_TRACER = "plaintext-dev"  # the tracer's name on a plaintext (development) server


def _time(value: int, name: str) -> datetime:
    try:
        return from_unix(value)
    except ValueError:
        raise InvalidRequestError(f"{name} is not a time the gateway can read") from None


class TracingService:
    """For contact tracers: which venues, which contacts."""

    service = pb.DESCRIPTOR.services_by_name["TracingService"]
    methods: ClassVar[dict[str, Method]] = {
        "VenuesVisited": Method((Role.TRACER,), MAX_SMALL_REQUEST_BYTES),
        "Contacts": Method((Role.TRACER,), MAX_SMALL_REQUEST_BYTES),
    }

    def __init__(self, gateway: Gateway, tls: bool) -> None:
        self._gateway = gateway
        self._tls = tls

    def _tracer(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        peer = caller(context, self._tls)
        return DEV_TRACER if peer is None else peer.name

    def _query(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        kind: str,
        subject: pb.TraceSubject,
        start: int,
        end: int,
        purpose: str,
        now: datetime,
        margin: int = 0,
    ) -> TraceQuery:
        tracer = self._tracer(context)
        try:
            if not 0 <= margin <= 86400:
                margin = -1  # refused by the bounds below with its own reason
            return self._gateway.tracing.check(
                tracer,
                kind,
                subject.id_number,
                list(subject.regions),
                _time(start, "start"),
                _time(end, "end"),
                purpose,
                now,
                timedelta(seconds=margin),
            )
        except GatewayError as exc:
            self._gateway.metrics.trace_queries.labels(tracer[:64], kind, exc.reason).inc()
            raise

    async def VenuesVisited(
        self, request: pb.VenuesVisitedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.VenuesVisitedResponse:
        now = utcnow()
        query = self._query(
            context, "venues", request.subject, request.start, request.end, request.purpose, now
        )
        visits = await self._counted(query, self._gateway.tracing.visits(query, now))
        venues = self._gateway.places.venues
        answer = pb.VenuesVisitedResponse(holders=sorted({v.holder for v in visits}))
        for visit in visits:
            venue = venues.get(visit.venue)
            answer.visits.append(
                pb.Visit(
                    venue_id=visit.venue,
                    venue_name="" if venue is None else venue.name,
                    division="" if venue is None else venue.division,
                    category="" if venue is None else venue.category,
                    at=to_unix(visit.at),
                    holder=visit.holder,
                    decision=visit.decision,
                    reason=visit.reason,
                )
            )
        return answer

    async def Contacts(
        self, request: pb.ContactsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ContactsResponse:
        now = utcnow()
        query = self._query(
            context,
            "contacts",
            request.subject,
            request.start,
            request.end,
            request.purpose,
            now,
            request.margin_seconds,
        )
        contacts = await self._counted(query, self._gateway.tracing.contacts(query, now))
        venues = self._gateway.places.venues
        answer = pb.ContactsResponse(holders=sorted(set(query.holders)))
        for contact in contacts:
            venue = venues.get(contact.venue)
            answer.contacts.append(
                pb.Contact(
                    holder=contact.holder,
                    venue_id=contact.venue,
                    venue_name="" if venue is None else venue.name,
                    at=to_unix(contact.at),
                    near=to_unix(contact.near),
                )
            )
        return answer

    async def _counted(self, query: TraceQuery, pending: Any) -> Any:
        metric = self._gateway.metrics.trace_queries
        try:
            result = await pending
        except GatewayError as exc:
            metric.labels(query.tracer[:64], query.kind, exc.reason).inc()
            raise
        metric.labels(query.tracer[:64], query.kind, "OK").inc()
        return result
