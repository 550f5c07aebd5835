"""The gRPC server: every service on one port behind the request interceptor, mutual TLS,
health and reflection, the metrics endpoint; ``build_server`` starts it and returns the bound
port (port 0 in tests), ``RunningServer.stop`` drains it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from gateway.denylist import DENY_FILE, DenyList
from gateway.grpc.declaration import DeclarationService
from gateway.grpc.health import DrainingHealthServicer, watch_health
from gateway.grpc.interceptors import RequestInterceptor
from gateway.grpc.methods import (
    MAX_RECEIVE_BYTES,
    MAX_SMALL_REQUEST_BYTES,
    Method,
    add_service,
)
from gateway.grpc.partner import PartnerService
from gateway.grpc.probe import ProbeListener
from gateway.grpc.recognition import SERVICE_NAME, RecognitionService
from gateway.grpc.tracing import SERVICE_NAME as TRACING_SERVICE
from gateway.grpc.tracing import TracingService
from gateway.grpc.trustlist import TrustListService
from gateway.listen import listen_error
from gateway.observability import AccessLog, Metrics, start_metrics_http
from gateway.pki import TlsFiles
from gateway.runtime.gateway import Gateway
from gateway.runtime.memory import MemoryReleaser
from gateway.runtime.tasks import Background
from gateway.runtime.trustfeed import TrustListFeed
from keys.errors import GatewayError

log = logging.getLogger("trustgw.server")

# The largest reply (received messages: per method and server-wide, gateway.grpc.methods).
MAX_SEND_BYTES = 4 * 1024 * 1024  # a signed trust list is at most ~2 MiB
SERVICE_NAMES = (
    SERVICE_NAME,
    "gateway.api.v1.PartnerService",
    "gateway.api.v1.TrustListService",
    "gateway.api.v1.DeclarationService",
    TRACING_SERVICE,
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
    probe: ProbeListener | None = None  # probe_listen: health without a client certificate
    tls: ServerTls | None = None  # the certificate served, replaced by reload()
    deny_list: Path | None = None  # the denied client certificates, read again by reload()

    def reload(self) -> list[str]:
        """Read the server certificate and key, the client CA and the deny list again (SIGHUP).
        Each part that fails keeps what is served now and is logged; returns what failed.
        Calls in flight and open connections are not touched."""
        failed = []
        if self.tls is not None:
            try:
                self.tls.reload()
                log.info("TLS files reloaded: new connections get %s", self.tls.files.cert)
            except GatewayError as exc:
                failed.append("tls")
                log.error("TLS reload failed, still serving the previous files: %s", exc)
        if self.deny_list is not None and self.requests is not None:
            try:
                self.requests.deny = DenyList.load(self.deny_list)
                log.info(
                    "deny list reloaded: %d client certificate(s) refused",
                    len(self.requests.deny.entries),
                )
            except GatewayError as exc:
                failed.append("deny-list")
                log.error("deny list reload failed, keeping the previous one: %s", exc)
        return failed

    @property
    def probe_port(self) -> int | None:
        """The bound probe port (``None``: no probe listener)."""
        return None if self.probe is None else self.probe.port

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
        if self.probe is not None:
            await self.probe.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()


# The library's services: any caller that passed the TLS handshake, small requests.
_HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
_REFLECTION = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
_OPEN = Method(None, MAX_SMALL_REQUEST_BYTES)


class ServerTls:
    """The server's certificate, key and client CA, replaceable while serving: grpc asks
    :meth:`_fetch` at every new handshake (``dynamic_ssl_server_credentials``), and gets the
    files :meth:`reload` last read and checked. Connections already open keep theirs."""

    def __init__(self, files: TlsFiles, metrics: Metrics) -> None:
        self.files = files
        self._metrics = metrics
        self._pending: grpc.ServerCertificateConfiguration | None = None
        initial = self._configuration()
        self.credentials = grpc.dynamic_ssl_server_credentials(
            initial,
            self._fetch,  # type: ignore[arg-type]  # grpc documents None as "no change"
            require_client_authentication=True,
        )

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        """The files, read and checked (a pair, PEM, the CA): raises ConfigurationError."""
        cert, key, ca = self.files.read()
        expiry = tls_expiry(cert, ca)
        configuration = grpc.ssl_server_certificate_configuration(
            [(key, cert)], root_certificates=ca
        )
        self._metrics.set_tls_expiry(expiry)
        return configuration

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        pending, self._pending = self._pending, None
        return pending  # None: no change

    def reload(self) -> None:
        """Read the files again; from the next handshake on, serve them. A file that is
        missing, malformed, or a key that is not the certificate's raises
        :class:`keys.errors.ConfigurationError` and keeps the files served now."""
        self._pending = self._configuration()


def tls_expiry(cert: bytes, ca: bytes) -> dict[str, datetime]:
    """``trustgw_tls_certificate_expiry_timestamp_seconds``: when the server certificate (the
    first of its chain) and the client CA (the first of the bundle to expire) stop being valid."""
    server = x509.load_pem_x509_certificates(cert)[0].not_valid_after_utc
    authority = min(c.not_valid_after_utc for c in x509.load_pem_x509_certificates(ca))
    return {"server": server, "ca": authority}


def _start_metrics(listen: str, gateway: Gateway) -> tuple[Any, int]:
    return start_metrics_http(listen, gateway.metrics.registry)


async def build_server(
    gateway: Gateway,
    listen: str,
    tls: TlsFiles | None = None,
    metrics_listen: str | None = None,
    access: AccessLog | None = None,
    probe_listen: str | None = None,
    *,
    deny_list: Path | None = None,
    reuse_port: bool = False,
) -> RunningServer:
    """Create and start the server on ``listen`` (``host:0`` picks a free port).

    With ``tls``, every client must present a certificate issued by ``tls.ca`` (mutual TLS);
    without, the server speaks plaintext, which is for local development only. ``access``:
    the access log (default: none); ``probe_listen``: the plaintext probe port
    (:mod:`gateway.grpc.probe`, default: none); ``deny_list``: the file of denied client
    certificates (default: ``denied.json`` beside ``tls.ca``). :meth:`RunningServer.reload`
    reads the TLS files and the deny list again (SIGHUP). ``reuse_port`` (the workers of
    ``serve --workers N``) shares the port with other processes that set it
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
    requests = RequestInterceptor(gateway.metrics, access)
    # No grpc.aio interceptor: the handlers are wrapped once as they are registered (an
    # interceptor chain runs on every call: gateway.grpc.interceptors.RequestInterceptor).
    server = grpc.aio.server(options=options)
    health_servicer = DrainingHealthServicer()  # Watch streams end when shutdown begins
    names = (*SERVICE_NAMES, _HEALTH.full_name, _REFLECTION.full_name)
    services: list[tuple[Any, object, Mapping[str, Method | None]]] = [
        (RecognitionService.service, RecognitionService(gateway), RecognitionService.methods),
        (PartnerService.service, PartnerService(gateway, tls is not None), PartnerService.methods),
        (TrustListService.service, TrustListService(gateway), TrustListService.methods),
        (DeclarationService.service, DeclarationService(gateway), DeclarationService.methods),
        (TracingService.service, TracingService(gateway, tls is not None), TracingService.methods),
        (_HEALTH, health_servicer, {"Check": _OPEN, "Watch": _OPEN, "List": None}),
        (_REFLECTION, reflection.aio.ReflectionServicer(names), {"ServerReflectionInfo": _OPEN}),
    ]
    for service, servicer, methods in services:
        add_service(
            server,
            service,
            servicer,
            methods,
            tls=tls is not None,
            metrics=gateway.metrics,
            wrap=requests.wrap,
        )
    server.add_generic_rpc_handlers((requests.fallback(),))  # last: methods no service has
    server_tls = None if tls is None else ServerTls(tls, gateway.metrics)
    if tls is not None:
        requests.deny = DenyList.load(deny_list or tls.ca.parent / DENY_FILE)
    try:
        if server_tls is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, server_tls.credentials)
    except RuntimeError:  # grpc's "Failed to bind to address ..."
        port = 0
    except BaseException:
        await server.stop(None)
        raise
    if port == 0:
        await server.stop(None)  # never started; stopped, so that nothing is left for exit
        raise listen_error("gRPC", listen)
    metrics: tuple[Any, int] | None = None
    probe: ProbeListener | None = None
    try:
        if metrics_listen:
            metrics = _start_metrics(metrics_listen, gateway)
        if probe_listen:
            probe = ProbeListener(gateway, health_servicer, lambda: health_servicer.shutting_down)
            await probe.start(probe_listen)
        await server.start()
    except BaseException:
        if probe is not None:
            await probe.stop()
        if metrics is not None:
            metrics[0].shutdown()
            metrics[0].server_close()
        await server.stop(None)
        raise
    healthy = gateway.healthy
    initial = (
        health_pb2.HealthCheckResponse.SERVING
        if healthy
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, initial)
    running = RunningServer(
        server, port, health_servicer, trustlist=gateway.trustlist, requests=requests, probe=probe
    )
    running.tls = server_tls
    running.deny_list = None if tls is None else (deny_list or tls.ca.parent / DENY_FILE)
    running.watcher.start(
        lambda: watch_health(gateway, health_servicer, SERVICE_NAMES, serving=healthy)
    )
    running.releaser.start(MemoryReleaser().run)
    if metrics is not None:
        running._metrics_server, running.metrics_port = metrics
    return running
