"""``TrustListService``: the signed trust list, fetched or watched by partners and verifiers.

``GetTrustList`` answers with a delta since the caller's version when the gateway still knows
it, else the full list. ``WatchTrustList`` pushes every new version as it is recorded (the
gateway records one after each registry or key change, see :class:`gateway.trustfeed.
TrustListFeed`); while nothing changes it re-sends the current list every ``feed.resend`` so
that a subscriber's copy never expires, and it ends with OK when the server stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from gateway.api.v1 import registry_pb2 as rpb
from gateway.api.v1 import registry_pb2_grpc as rpb_grpc
from gateway.pki import Role
from gateway.server import Gateway, InvalidRequestError, _guard, _rich_status, require
from keys.errors import GatewayError
from keys.timeutil import to_unix, utcnow
from keys.trustlist import SignedTrustList

READERS = (Role.PARTNER, Role.VERIFIER, Role.OPERATOR)


def trustlist_to_proto(signed: SignedTrustList) -> rpb.TrustListResponse:
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


class TrustListService(rpb_grpc.TrustListServiceServicer):
    """Reads of the signed trust list."""

    def __init__(self, gateway: Gateway, tls: bool) -> None:
        self._gateway = gateway
        self._tls = tls

    async def GetTrustList(
        self, request: rpb.GetTrustListRequest, context: grpc.aio.ServicerContext
    ) -> rpb.TrustListResponse:
        async def call() -> rpb.TrustListResponse:
            require(context, self._tls, *READERS)
            _check_since(request.since_version)
            feed = self._gateway.trustlist
            return trustlist_to_proto(await feed.signed(request.since_version, utcnow()))

        return await _guard(context, call)

    async def WatchTrustList(
        self, request: rpb.WatchTrustListRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpb.TrustListResponse]:
        feed = self._gateway.trustlist
        try:
            require(context, self._tls, *READERS)
            _check_since(request.since_version)
        except GatewayError as exc:
            await context.abort_with_status(_rich_status(exc))
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
                try:
                    signed = await feed.signed(since, utcnow())
                except GatewayError as exc:
                    await context.abort_with_status(_rich_status(exc))
                held = signed.version
                # Re-send well before the list held expires (its lifetime can be cut short by a
                # trustlist key's not_after), at most every feed.resend.
                lifetime = (signed.expires - signed.issued_at).total_seconds()
                resend = min(feed.resend.total_seconds(), max(1.0, lifetime / 2))
                yield trustlist_to_proto(signed)
                # Resumed only once the message has been written: this client has the list.
                watch.delivered(held)
