"""The gRPC server: lifecycle, services and the one place where errors become statuses.

``Gateway`` owns the state of a running gateway (store, registry snapshot, the gateway's keys,
the recogniser); ``build_server`` puts it behind a grpc.aio server and returns the bound port
(port 0 in tests). Generated protobuf types appear only in this layer, the client and the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import grpc
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from adapters.base import Colour
from adapters.regions import REGION_ALGORITHMS
from gateway.api.v1 import recognition_pb2 as pb
from gateway.engine import Conversions, Decision, Recogniser
from gateway.grpc.methods import (
    MAX_RECEIVE_BYTES,
    MAX_RECOGNISE_REQUEST_BYTES,
    MAX_SMALL_REQUEST_BYTES,
    Method,
    add_service,
    decode,
    note_bad_request,
)
from gateway.observability import DrainingHealthServicer, Metrics, RequestInterceptor
from gateway.pki import Role, TlsFiles
from gateway.runtime.memory import MemoryReleaser
from gateway.runtime.reclog import RecognitionLog
from gateway.runtime.retention import PeriodicPurge, RetentionPolicy
from gateway.runtime.trustfeed import DEFAULT_PUSH_TIMEOUT as TRUSTLIST_PUSH_TIMEOUT
from gateway.runtime.trustfeed import DEFAULT_RESEND as TRUSTLIST_RESEND
from gateway.runtime.trustfeed import TrustListFeed
from keys.crypto import PrivateKey
from keys.errors import GatewayError, InvalidRequestError, StoreUnavailableError
from keys.keystore import MANIFEST, GatewayKeyInfo, KeyDirectory, KeyRole
from keys.model import HOME_REGION, Mode
from keys.personal import RecognitionEntry
from keys.pseudonym import Pseudonymiser
from keys.registry import KeyRegistry
from keys.store import SQLiteStore
from keys.timeutil import to_unix, utcnow
from keys.trustlist import DEFAULT_TTL as TRUSTLIST_TTL
from keys.trustlist import TrustListPublisher
from keys.trustregistry import TrustRegistry

log = logging.getLogger("trustgw.server")

# Received messages: per method, and server-wide the largest legitimate one (gateway.grpc.methods).
MAX_SEND_BYTES = 4 * 1024 * 1024  # a signed trust list is at most ~2 MiB
MAX_REQUEST_ID_CHARS = 128
STREAM_WINDOW = 64  # unanswered requests read ahead per stream
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RecognitionService"].full_name
SERVICE_NAMES = (
    SERVICE_NAME,
    "gateway.api.v1.PartnerService",
    "gateway.api.v1.TrustListService",
)

_COLOURS = {
    None: pb.COLOUR_UNSPECIFIED,
    Colour.GREEN: pb.COLOUR_GREEN,
    Colour.YELLOW: pb.COLOUR_YELLOW,
    Colour.RED: pb.COLOUR_RED,
}
_MODES = {None: pb.MODE_UNSPECIFIED, Mode.SHOW: pb.MODE_SHOW, Mode.CONVERT: pb.MODE_CONVERT}


@dataclass(frozen=True)
class GatewayConfig:
    data_dir: Path
    listen: str = "127.0.0.1:50051"
    passphrase: bytes | None = None
    refresh_interval: float = 0.5  # seconds between registry change checks
    grace: float = 5.0  # seconds to drain in-flight calls on shutdown
    tls: TlsFiles | None = None  # None: plaintext, for local development only
    metrics_listen: str | None = None  # HOST:PORT of the Prometheus endpoint, None: off
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)  # docs/retention.md
    trustlist_ttl: timedelta = TRUSTLIST_TTL  # how long a signed trust list stays valid

    @property
    def database(self) -> Path:
        return self.data_dir / "trustgw.db"

    @property
    def key_dir(self) -> Path:
        return self.data_dir / "keys"


class Gateway:
    """A running gateway's state. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(
        self,
        store: SQLiteStore,
        registry: KeyRegistry,
        key_dir: KeyDirectory,
        config: GatewayConfig,
    ) -> None:
        self.store = store
        self.registry = registry
        self.key_dir = key_dir
        self.conversions = Conversions(store)
        pseudonymiser = Pseudonymiser(key_dir.pseudonym_secret())
        self.reclog = (
            RecognitionLog(store, pseudonymiser.code_key)
            if config.retention.recognition_log
            else None
        )
        self.purger = PeriodicPurge(store, config.retention)
        self.recogniser = Recogniser(
            lambda: self.registry.snapshot, self, pseudonymiser, self.conversions
        )
        # Partner writes refresh ``registry`` at once, so this process recognises with them.
        self.trust = TrustRegistry(store, pseudonymiser, registry, REGION_ALGORITHMS)
        self._trustlist_keys = key_dir  # the keys the trust list publishes (ahead of key_dir)
        self._push_timeout = TRUSTLIST_PUSH_TIMEOUT
        self._trustlist_seen = -1  # the registry version the trust list was last recorded for
        self.trustlist = TrustListFeed(
            TrustListPublisher(
                store,
                lambda: self.registry.snapshot,
                lambda: self._trustlist_keys,
                ttl=config.trustlist_ttl,
            ),
            # Idle watchers get the list again well before the one they hold expires.
            resend=min(TRUSTLIST_RESEND, config.trustlist_ttl / 4),
        )
        self._config = config
        self._key_dir_stamp = _stamp(config.key_dir)
        self._refresher: asyncio.Task[None] | None = None
        self.metrics = Metrics()
        self.healthy = True
        self.unhealthy_reason = ""
        self._metrics_updated = 0.0

    def signer(self, role: KeyRole, now: datetime) -> tuple[GatewayKeyInfo, PrivateKey]:
        """The gateway's current signing key for ``role`` (follows rotations without restart)."""
        return self.key_dir.signer(role, now)

    def published_keys(self) -> list[GatewayKeyInfo]:
        """The gateway keys published now (trust list, ``GetGatewayKeys``): during a reload a
        new key is published before it may sign."""
        return self._trustlist_keys.public_keys()

    @classmethod
    async def open(cls, config: GatewayConfig) -> Gateway:
        key_dir = KeyDirectory.open(config.key_dir, passphrase=config.passphrase)
        # With the secret: an older database's code ids are keyed when its schema is upgraded.
        store = await SQLiteStore.open(
            config.database, code_keys=Pseudonymiser(key_dir.pseudonym_secret())
        )
        registry = KeyRegistry(store)
        await registry.load()
        gateway = cls(store, registry, key_dir, config)
        await gateway.check_health()
        gateway.update_key_metrics()
        await gateway.publish_trustlist()
        gateway.conversions.start()
        if gateway.reclog is not None:
            gateway.reclog.start()
        gateway.purger.start()
        gateway._refresher = asyncio.create_task(gateway._refresh_loop(), name="refresh")
        return gateway

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.trustlist.close()
        await self.purger.stop()
        if self.reclog is not None:
            await self.reclog.stop()
        await self.conversions.stop()
        await self.store.close()

    async def _refresh_loop(self) -> None:
        """Pick up changes made by the CLI, partners or other replicas, without a restart."""
        while True:
            await asyncio.sleep(self._config.refresh_interval)
            await self.refresh()

    async def refresh(self) -> None:
        """Reload the registry snapshot and the key directory when they changed.

        A failed reload keeps serving with what was loaded before and says so in the log.
        """
        try:
            if await self.registry.refresh_if_changed():
                log.info("registry reloaded, version %s", self.registry.snapshot.version)
        except StoreUnavailableError as exc:
            log.warning("registry refresh failed: %s", exc)
        stamp = _stamp(self._config.key_dir)
        if stamp != self._key_dir_stamp:
            try:
                # Decrypting keys is slow (scrypt): keep it off the event loop.
                key_dir = await asyncio.to_thread(
                    KeyDirectory.open, self._config.key_dir, passphrase=self._config.passphrase
                )
            except GatewayError as exc:
                log.warning("key directory reload failed, keeping the loaded keys: %s", exc)
                return
            # A new key signs only once the trust list carrying it is recorded and every
            # watcher of this process has been sent it (docs/verifying.md, "Keys and rotation").
            self._trustlist_keys = key_dir
            if not await self.publish_trustlist():
                self._trustlist_keys = self.key_dir
                return
            behind = await self.trustlist.pushed(self.trustlist.version, self._push_timeout)
            if behind:
                log.warning(
                    "%d trust-list watcher(s) did not take version %d within %s; "
                    "signing with the reloaded keys anyway",
                    behind,
                    self.trustlist.version,
                    self._push_timeout,
                )
            self.key_dir = key_dir
            self._key_dir_stamp = stamp
            log.info("gateway keys reloaded: %s", [k.kid for k in key_dir.public_keys()])
            self._metrics_updated = 0.0
        elif self.registry.snapshot.version != self._trustlist_seen:
            await self.publish_trustlist()
        await self.check_health()
        if time.monotonic() - self._metrics_updated > 30:
            self.update_key_metrics()

    async def publish_trustlist(self) -> bool:
        """Record the trust-list version of the current registry and keys; wake its watchers.

        False (and a log line) when the store cannot be reached: the next refresh retries.
        """
        seen = self.registry.snapshot.version
        try:
            version = await self.trustlist.update(utcnow())
        except GatewayError as exc:
            log.warning("trust list not updated: %s", exc)
            return False
        self._trustlist_seen = seen
        self.metrics.trustlist_version.set(version)
        return True

    async def check_health(self) -> None:
        """SERVING needs a reachable store and signing keys valid now."""
        now = utcnow()
        reason = ""
        try:
            await self.store.ping()
        except StoreUnavailableError as exc:
            reason = f"store unreachable: {exc}"
        if not reason:
            for role in (KeyRole.ATTEST, KeyRole.ISSUE):
                try:
                    self.key_dir.signer(role, now)
                except GatewayError as exc:
                    reason = f"no valid {role.value} key: {exc}"
                    break
        if bool(reason) == self.healthy:  # a change: say it once
            if reason:
                log.error("gateway NOT SERVING: %s", reason)
            else:
                log.warning("gateway serving again")
        self.healthy = not reason
        self.unhealthy_reason = reason

    def update_key_metrics(self) -> None:
        now = utcnow()
        rows = [("gateway", i.role.value, i.kid, i.not_after) for i in self.key_dir.public_keys()]
        snapshot = self.registry.snapshot
        rows += [(k.region, "code-signing", k.kid, k.not_after) for k in snapshot.keys()]
        self.metrics.set_key_expiry(rows, now)
        self.metrics.registry_version.set(snapshot.version)
        self._metrics_updated = time.monotonic()


def _stamp(key_dir: Path) -> tuple[int, int]:
    """Changes whenever the key directory's manifest is replaced."""
    try:
        st = (key_dir / MANIFEST).stat()
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_ino)


def _check_request(request: pb.RecogniseRequest) -> None:
    if len(request.request_id) > MAX_REQUEST_ID_CHARS:
        raise InvalidRequestError(f"request_id is longer than {MAX_REQUEST_ID_CHARS} characters")
    if request.region_hint and (len(request.region_hint) != 6 or not request.region_hint.isdigit()):
        raise InvalidRequestError("region_hint must be a 6-digit division code")


def decision_to_proto(request_id: str, decision: Decision) -> pb.RecogniseResponse:
    response = pb.RecogniseResponse(
        request_id=request_id,
        recognised=decision.recognised,
        reason=decision.reason,
        message=decision.message,
        region=decision.region,
        mode=_MODES[decision.mode],
        colour=_COLOURS[decision.colour],
    )
    if decision.valid_until is not None:
        response.valid_until = to_unix(decision.valid_until)
    if decision.attestation is not None:
        att = decision.attestation
        response.attestation.CopyFrom(
            pb.Attestation(
                payload=att.payload, key_id=att.kid, alg=att.alg, signature=att.signature
            )
        )
    if decision.converted is not None:
        conv = decision.converted
        response.converted.CopyFrom(
            pb.ConvertedCode(
                code=conv.code,
                key_id=conv.kid,
                expires_at=to_unix(conv.expires_at),
                code_id=conv.code_id,
            )
        )
    return response


class RecognitionService:
    """For local verifiers: recognise codes, fetch the gateway's keys."""

    service = pb.DESCRIPTOR.services_by_name["RecognitionService"]
    methods: ClassVar[dict[str, Method]] = {
        "Recognise": Method((Role.VERIFIER,), MAX_RECOGNISE_REQUEST_BYTES),
        "RecogniseStream": Method((Role.VERIFIER,), MAX_RECOGNISE_REQUEST_BYTES, raw_stream=True),
        "GetGatewayKeys": Method(
            (Role.VERIFIER, Role.PARTNER, Role.OPERATOR), MAX_SMALL_REQUEST_BYTES
        ),
    }

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def _respond(self, request_id: str, decision: Decision) -> pb.RecogniseResponse:
        metrics = self._gateway.metrics
        metrics.recognitions.labels(
            decision.region or "-",
            decision.mode.value if decision.mode else "-",
            "recognised" if decision.recognised else "refused",
            decision.reason,
        ).inc()
        if decision.converted is not None:
            metrics.conversions.labels(decision.region).inc()
        reclog = self._gateway.reclog
        if reclog is not None:  # queued in memory; written in batches off the request path
            reclog.record(
                RecognitionEntry(
                    utcnow(),
                    decision.region,
                    decision.mode.value if decision.mode else "",
                    "recognised" if decision.recognised else "refused",
                    decision.reason,
                    decision.holder,
                    decision.code_id,
                    decision.kid,
                    request_id,
                )
            )
        return decision_to_proto(request_id, decision)

    async def _finish(
        self, request_id: str, pending: Coroutine[Any, Any, Decision]
    ) -> pb.RecogniseResponse:
        return self._respond(request_id, await pending)

    def _start(
        self, request: pb.RecogniseRequest
    ) -> pb.RecogniseResponse | Coroutine[Any, Any, pb.RecogniseResponse]:
        """The response to a checked request, or a coroutine when the decision waits for I/O
        (a new conversion)."""
        result = self._gateway.recogniser.start(request.code, utcnow(), request.region_hint)
        if isinstance(result, Decision):
            return self._respond(request.request_id, result)
        return self._finish(request.request_id, result)

    def _start_in_stream(
        self, raw: bytes
    ) -> pb.RecogniseResponse | Coroutine[Any, Any, pb.RecogniseResponse]:
        """As :meth:`_start` for one message of a stream; a bad request (not a message, too
        large, invalid fields) is answered in its place, not fatal to the stream."""
        request_id = ""
        try:
            request = decode(pb.RecogniseRequest, raw, MAX_RECOGNISE_REQUEST_BYTES)
            request_id = request.request_id
            _check_request(request)
        except InvalidRequestError as exc:
            note_bad_request(self._gateway.metrics, "RecogniseStream", exc)
            return pb.RecogniseResponse(
                request_id=request_id[:MAX_REQUEST_ID_CHARS],
                recognised=False,
                reason=exc.reason,
                message=exc.message,
            )
        return self._start(request)

    async def Recognise(
        self, request: pb.RecogniseRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecogniseResponse:
        _check_request(request)
        result = self._start(request)
        return result if isinstance(result, pb.RecogniseResponse) else await result

    async def RecogniseStream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RecogniseResponse]:
        """Answers every request in order. Requests are read ahead while a decision waits for
        I/O (a conversion being committed), up to ``STREAM_WINDOW`` unanswered ones."""
        answers: asyncio.Queue[pb.RecogniseResponse | asyncio.Task[pb.RecogniseResponse] | None] = (
            asyncio.Queue(STREAM_WINDOW)
        )

        async def read() -> None:
            try:
                async for raw in requests:
                    result = self._start_in_stream(raw)
                    if isinstance(result, pb.RecogniseResponse):
                        await answers.put(result)
                    else:
                        await answers.put(asyncio.ensure_future(result))
            finally:
                await answers.put(None)

        reader = asyncio.create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                if isinstance(answer, asyncio.Task):
                    answer = await answer
                yield answer
            await reader  # re-raises what ended the request stream, if anything did
        finally:
            reader.cancel()
            while not answers.empty():
                leftover = answers.get_nowait()
                if isinstance(leftover, asyncio.Task):
                    leftover.cancel()

    async def GetGatewayKeys(
        self, request: pb.GetGatewayKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.GatewayKeys:
        return pb.GatewayKeys(
            region=HOME_REGION,
            keys=[
                pb.GatewayKey(
                    key_id=info.kid,
                    role=info.role.value,
                    alg=str(info.public_key.alg),
                    public_key=info.public_key.spki,
                    not_before=to_unix(info.not_before),
                    not_after=to_unix(info.not_after),
                    status=info.status.value,
                )
                for info in self._gateway.published_keys()
            ],
        )


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    watcher: asyncio.Task[None] | None = None
    releaser: asyncio.Task[None] | None = None  # gives freed memory back (gateway.runtime.memory)
    metrics_port: int | None = None
    _metrics_server: Any = None
    requests: RequestInterceptor | None = None  # drains: refuses new calls, waits for the rest
    trustlist: TrustListFeed | None = None  # closed first, so that watch streams end with OK

    async def stop(self, grace: float | None) -> None:
        """Turn health to NOT_SERVING, then drain in-flight calls for up to ``grace`` seconds."""
        for task in (self.watcher, self.releaser):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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


async def _watch_health(gateway: Gateway, servicer: health.aio.HealthServicer) -> None:
    serving = True
    while True:
        await asyncio.sleep(0.25)
        if gateway.healthy != serving:
            serving = gateway.healthy
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in ("", *SERVICE_NAMES):
                await servicer.set(name, status)


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
) -> RunningServer:
    """Create and start the server on ``listen`` (``host:0`` picks a free port).

    With ``tls``, every client must present a certificate issued by ``tls.ca`` (mutual TLS);
    without, the server speaks plaintext, which is for local development only.
    """
    options = [
        ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ("grpc.so_reuseport", 0),
        # Long-lived WatchTrustList streams: ping idle connections, accept clients' pings.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]
    requests = RequestInterceptor(gateway.metrics)
    server = grpc.aio.server(options=options, interceptors=[requests])
    from gateway.grpc.partner import PartnerService  # they import this module
    from gateway.grpc.trustlist import TrustListService

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
    initial = (
        health_pb2.HealthCheckResponse.SERVING
        if gateway.healthy
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, initial)
    running = RunningServer(
        server, port, health_servicer, trustlist=gateway.trustlist, requests=requests
    )
    running.watcher = asyncio.create_task(_watch_health(gateway, health_servicer))
    running.releaser = asyncio.create_task(MemoryReleaser().run(), name="release-memory")
    if metrics_listen:
        running._metrics_server, running.metrics_port = _start_metrics(metrics_listen, gateway)
    return running
