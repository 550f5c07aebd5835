"""``TrustListService``: the signed trust list, fetched or watched by partners and verifiers.

``GetTrustList`` answers with a delta since the caller's version when the gateway still knows
it, else the full list. ``WatchTrustList`` pushes every new version as it is recorded (the
gateway records one after each registry or key change, see :class:`gateway.runtime.trustfeed.
TrustListFeed`); while nothing changes it re-sends the current list every ``feed.resend`` so
that a subscriber's copy never expires, and it ends with OK when the server stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import grpc

from gateway.api.v1 import registry_pb2 as rpb
from gateway.grpc.methods import MAX_SMALL_REQUEST_BYTES, Method
from gateway.pki import Role
from gateway.runtime.gateway import Gateway
from keys.errors import InvalidRequestError
from keys.timeutil import to_unix, utcnow
from keys.trustlist import PublishedTrustList

READERS = (Role.PARTNER, Role.VERIFIER, Role.OPERATOR)


def trustlist_to_proto(signed: PublishedTrustList) -> rpb.TrustListResponse:
    return rpb.TrustListResponse(
        envelope=signed.envelope,
        version=signed.version,
        expires=to_unix(signed.expires),
        since_version=signed.since or 0,
        issued_at=to_unix(signed.issued_at),
    )


def _check_since(since: int) -> None:
    if since < 0:
        raise InvalidRequestError("since_version must not be negative")


class TrustListService:
    """Reads of the signed trust list."""

    service = rpb.DESCRIPTOR.services_by_name["TrustListService"]
    methods: ClassVar[dict[str, Method]] = dict.fromkeys(
        ("GetTrustList", "WatchTrustList"), Method(READERS, MAX_SMALL_REQUEST_BYTES)
    )

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def GetTrustList(
        self, request: rpb.GetTrustListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> rpb.TrustListResponse:
        _check_since(request.since_version)
        feed = self._gateway.trustlist
        return trustlist_to_proto(await feed.signed(request.since_version, utcnow()))

    async def WatchTrustList(
        self, request: rpb.WatchTrustListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[rpb.TrustListResponse]:
        feed = self._gateway.trustlist
        _check_since(request.since_version)
        held = request.since_version
        with feed.watching(held) as watch:
            resend = feed.resend.total_seconds()
            while not feed.closed:
                if feed.version == held:
                    if await feed.wait(held, resend):
                        continue  # a new version, or the feed closed
                    since = 0  # nothing changed for a while: the same version, freshly signed
                else:
                    since = held
                # An error ends the stream with its status (gateway.grpc.methods).
                signed = await feed.signed(since, utcnow())
                held = signed.version
                # Re-send well before the list held expires (its lifetime can be cut short by a
                # trustlist key's not_after), at most every feed.resend.
                lifetime = (signed.expires - signed.issued_at).total_seconds()
                resend = min(feed.resend.total_seconds(), max(1.0, lifetime / 2))
                yield trustlist_to_proto(signed)
                # Resumed only once the message has been written: this client has the list.
                watch.delivered(held)
