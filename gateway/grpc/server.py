"""The gRPC server: every service on one port behind the request interceptor, mutual TLS,
health and reflection, the metrics endpoint; ``build_server`` starts it and returns the bound
port (port 0 in tests), ``RunningServer.stop`` drains it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from gateway.grpc.health import DrainingHealthServicer, watch_health
from gateway.grpc.interceptors import RequestInterceptor
from gateway.grpc.methods import (
    MAX_RECEIVE_BYTES,
    MAX_SMALL_REQUEST_BYTES,
    Method,
    add_service,
)
from gateway.grpc.partner import PartnerService
from gateway.grpc.recognition import SERVICE_NAME, RecognitionService
from gateway.grpc.trustlist import TrustListService
from gateway.pki import TlsFiles
from gateway.runtime.gateway import Gateway
from gateway.runtime.memory import MemoryReleaser
from gateway.runtime.tasks import Background
from gateway.runtime.trustfeed import TrustListFeed

# The largest reply (received messages: per method and server-wide, gateway.grpc.methods).
MAX_SEND_BYTES = 4 * 1024 * 1024  # a signed trust list is at most ~2 MiB
SERVICE_NAMES = (
    SERVICE_NAME,
    "gateway.api.v1.PartnerService",
    "gateway.api.v1.TrustListService",
)


@dataclass
class RunningServer:
    """A started server (:func:`build_server`): its bound ``port`` (and ``metrics_port``), the
    health service, and the background work it owns; :meth:`stop` drains and stops it."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    watcher: Background = field(default_factory=lambda: Background("health-watch"))
    # gives freed memory back (gateway.runtime.memory)
    releaser: Background = field(default_factory=lambda: Background("release-memory"))
    metrics_port: int | None = None
    _metrics_server: Any = None
    requests: RequestInterceptor | None = None  # drains: refuses new calls, waits for the rest
    trustlist: TrustListFeed | None = None  # closed first, so that watch streams end with OK

    async def stop(self, grace: float | None) -> None:
        """Turn health to NOT_SERVING, then drain in-flight calls for up to ``grace`` seconds."""
        await self.watcher.stop()
        await self.releaser.stop()
        await self.health.enter_graceful_shutdown()
        if self.trustlist is not None:
            await self.trustlist.close()
        if self.requests is not None and grace:
            # grpc.aio's stop() cancels calls it has received but not yet started: answer them
            # UNAVAILABLE ourselves and let the started ones finish, then stop.
            started = time.monotonic()
            await self.requests.drain(grace)
            grace = max(0.0, grace - (time.monotonic() - started))
        await self.server.stop(grace)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()


# The library's services: any caller that passed the TLS handshake, small requests.
_HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
_REFLECTION = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
_OPEN = Method(None, MAX_SMALL_REQUEST_BYTES)


def _start_metrics(listen: str, gateway: Gateway) -> tuple[Any, int]:
    from prometheus_client import start_http_server

    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(
        int(port), addr=host or "127.0.0.1", registry=gateway.metrics.registry
    )
    return server, server.server_port


async def build_server(
    gateway: Gateway,
    listen: str,
    tls: TlsFiles | None = None,
    metrics_listen: str | None = None,
    *,
    reuse_port: bool = False,
) -> RunningServer:
    """Create and start the server on ``listen`` (``host:0`` picks a free port).

    With ``tls``, every client must present a certificate issued by ``tls.ca`` (mutual TLS);
    without, the server speaks plaintext, which is for local development only. ``reuse_port``
    (the workers of ``serve --workers N``) shares the port with other processes that set it
    (``SO_REUSEPORT``); otherwise a port in use is refused.
    """
    options = [
        ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        # Long-lived WatchTrustList streams: ping idle connections, accept clients' pings.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]
    requests = RequestInterceptor(gateway.metrics)
    server = grpc.aio.server(options=options, interceptors=[requests])
    health_servicer = DrainingHealthServicer()  # Watch streams end when shutdown begins
    names = (*SERVICE_NAMES, _HEALTH.full_name, _REFLECTION.full_name)
    services: list[tuple[Any, object, Mapping[str, Method | None]]] = [
        (RecognitionService.service, RecognitionService(gateway), RecognitionService.methods),
        (PartnerService.service, PartnerService(gateway, tls is not None), PartnerService.methods),
        (TrustListService.service, TrustListService(gateway), TrustListService.methods),
        (_HEALTH, health_servicer, {"Check": _OPEN, "Watch": _OPEN, "List": None}),
        (_REFLECTION, reflection.aio.ReflectionServicer(names), {"ServerReflectionInfo": _OPEN}),
    ]
    for service, servicer, methods in services:
        add_service(
            server, service, servicer, methods, tls=tls is not None, metrics=gateway.metrics
        )
    if tls is None:
        port = server.add_insecure_port(listen)
    else:
        cert, key, ca = tls.read()
        credentials = grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )
        port = server.add_secure_port(listen, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    healthy = gateway.healthy
    initial = (
        health_pb2.HealthCheckResponse.SERVING
        if healthy
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, initial)
    running = RunningServer(
        server, port, health_servicer, trustlist=gateway.trustlist, requests=requests
    )
    running.watcher.start(
        lambda: watch_health(gateway, health_servicer, SERVICE_NAMES, serving=healthy)
    )
    running.releaser.start(MemoryReleaser().run)
    if metrics_listen:
        running._metrics_server, running.metrics_port = _start_metrics(metrics_listen, gateway)
    return running
