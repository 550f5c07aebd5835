"""The standard health service, as the gateway serves it: NOT_SERVING follows the gateway's
health state, and ``Watch`` streams end when a graceful shutdown begins.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health, health_pb2

from gateway.runtime.gateway import Gateway


class DrainingHealthServicer(health.aio.HealthServicer):
    """The standard health service, whose ``Watch`` streams end (after reporting NOT_SERVING)
    when a graceful shutdown begins.

    Clients with gRPC client-side health checking keep a ``Watch`` open on every connection;
    left open, each one would hold ``server.stop(grace)`` for the whole grace period.
    """

    def __init__(self) -> None:
        super().__init__()
        self._status: dict[str, int] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._changed = asyncio.Event()
        self._shutting_down = False

    @property
    def shutting_down(self) -> bool:
        """A graceful shutdown has begun (everything NOT_SERVING from then on)."""
        return self._shutting_down

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def set(self, service: str, status: int) -> None:
        await super().set(service, status)
        if not self._shutting_down:
            self._status[service] = status
            self._wake()

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        if not self._shutting_down:
            self._shutting_down = True
            self._status = dict.fromkeys(self._status, health_pb2.HealthCheckResponse.NOT_SERVING)
            self._wake()

    async def Watch(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[
            health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        ],
    ) -> None:
        last: int | None = None
        while True:
            changed = self._changed
            # Read before the write below awaits: a shutdown that begins during the write is
            # seen on the next turn (``changed`` is set), and its NOT_SERVING is sent first.
            shutting_down = self._shutting_down
            status = self._status.get(
                request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            )
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if shutting_down:
                return
            await changed.wait()


async def watch_health(
    gateway: Gateway,
    servicer: health.aio.HealthServicer,
    names: tuple[str, ...],
    serving: bool = True,
) -> None:
    """Set every service in ``names`` (and the server, ``""``) to SERVING or NOT_SERVING
    as the gateway's health changes; ``serving`` is the status the servicer holds now (a
    gateway that became healthy before the first look would otherwise stay NOT_SERVING)."""
    while True:
        await asyncio.sleep(0.25)
        if gateway.healthy != serving:
            serving = gateway.healthy
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in ("", *names):
                await servicer.set(name, status)
