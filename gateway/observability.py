"""Request ids, structured logs and Prometheus metrics.

Nothing here configures logging at import time: ``configure_logging`` is called by ``trustgw
serve``. Log lines never carry a personal identifier or a key: the gateway only ever handles
keyed pseudonyms, and log calls pass ids and reasons, not codes.
"""

from __future__ import annotations

import asyncio
import errno
import importlib.metadata
import itertools
import json
import logging
import platform
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)

from adapters.regions import ONLINE_REGIONS
from gateway.online.breaker import STATE_VALUES, BreakerState

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")
REQUEST_ID_HEADER = "x-request-id"
# Generated ids: a random per-process prefix and a counter (unique without a urandom call each).
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

ACCESS_LOGGER = "trustgw.access"
# The libraries whose own logs are noise at the gateway's level (aiosqlite logs every
# statement at debug): kept at WARNING unless ``log.libraries`` is on.
LIBRARY_LOGGERS = ("aiosqlite", "psycopg", "psycopg.pool", "grpc", "asyncio", "hpack", "h2")


class CallRecord:
    """What the access log says of one call, filled in while it runs: set by the request
    interceptor (:data:`CALL`), annotated by the handlers (:func:`note_outcome`).

    Never a code, a name or an id number: only the method, the caller's certificate role and
    name (a region code or a checkpoint's name), the region and reason of the outcome, counts.
    """

    __slots__ = (
        "address",
        "method",
        "peer",
        "reason",
        "received",
        "region",
        "request_id",
        "sent",
        "stream",
    )

    def __init__(self, method: str, request_id: str, stream: bool) -> None:
        self.method = method
        self.request_id = request_id
        self.stream = stream
        self.peer = ""  # "role/name" from the client certificate, "" when there is none
        self.address = ""  # the connection's address (grpc's peer string)
        self.region = ""
        self.reason = ""
        self.received = 0
        self.sent = 0


CALL: ContextVar[CallRecord | None] = ContextVar("call", default=None)


def note_outcome(region: str | None, reason: str) -> None:
    """Record the outcome of the current unary call (a decision's region and reason) for the
    access log. A stream's many decisions are counted, not logged one by one."""
    call = CALL.get()
    if call is not None and not call.stream:
        call.region = region or ""
        call.reason = reason


def note_failure(reason: str) -> None:
    """Record the reason a call (unary or stream) ended with an error status."""
    call = CALL.get()
    if call is not None:
        call.reason = reason


class AccessLog:
    """One line per call to the ``trustgw.access`` logger (docs/operations.md, "Access log"),
    switched by ``log.access`` (re-read on SIGHUP: :attr:`enabled`).

    When the line would reach only the gateway's own JSON handler (:class:`LogHandler`, as
    ``trustgw serve`` configures logging), it is formatted here, byte for byte as
    :class:`JsonFormatter` writes the record, from parts cached per method, outcome and caller
    (:meth:`json_line`), and handed to the handler's buffer; otherwise (the text format, a
    handler of the operator's or a test's) it is a record like any other."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._log = logging.getLogger(ACCESS_LOGGER)
        # (method, status, reason, region, peer, address) -> the line's constant parts
        self._parts: dict[tuple[str, str, str, str, str, str], tuple[str, str, str]] = {}

    def write(self, call: CallRecord, status: str, seconds: float, peer_address: str) -> None:
        """Log ``call``, ended with ``status`` after ``seconds``."""
        log = self._log
        if not (self.enabled and log.isEnabledFor(logging.INFO)):
            return
        sink = _json_sink(log)
        if sink is not None and sink.json is not None:
            line = self.json_line(call, status, seconds, peer_address, time.time(), sink.json)
            sink.add_line(line)
            return
        role, _, name = call.peer.partition("/")
        reason = call.reason or ("OK" if status == "OK" else status)
        latency_ms = round(seconds * 1000, 3)
        fields = {
            "method": call.method,
            "status": status,
            "reason": reason,
            "region": call.region,
            "peer_role": role,
            "peer_name": name,
            "peer_address": peer_address,
            "latency_ms": latency_ms,
            "messages_in": call.received,
            "messages_out": call.sent,
        }
        # One line per call: the record is made directly (the message already formatted, no
        # caller lookup: every access line comes from here), then handled as any other.
        record = log.makeRecord(
            log.name,
            logging.INFO,
            __file__,
            0,
            f"{call.method} {status} {reason} {latency_ms:.3f}ms in={call.received} "
            f"out={call.sent} peer={call.peer or '-'}",
            (),  # no arguments: the message is final
            None,
            "write",
            {"access": fields, "call_id": call.request_id},
        )
        log.handle(record)

    def json_line(
        self,
        call: CallRecord,
        status: str,
        seconds: float,
        peer_address: str,
        created: float,
        formatter: JsonFormatter,
    ) -> str:
        """The line :meth:`write`'s record makes through ``formatter`` (created at
        ``created``), without the record: what varies per call is formatted, the rest is
        cached by the method, the outcome and the caller (bounded)."""
        reason = call.reason or ("OK" if status == "OK" else status)
        key = (call.method, status, reason, call.region, call.peer, peer_address)
        parts = self._parts.get(key)
        if parts is None:
            if len(self._parts) >= 4096:  # never unbounded, whatever callers send
                self._parts.clear()
            role, _, name = call.peer.partition("/")
            parts = self._parts[key] = (
                _json_chars(f"{call.method} {status} {reason} "),
                f' peer={_json_chars(call.peer or "-")}", "request_id": "',
                f'", "method": "{_json_chars(call.method)}", "status": "{_json_chars(status)}", '
                f'"reason": "{_json_chars(reason)}", "region": "{_json_chars(call.region)}", '
                f'"peer_role": "{_json_chars(role)}", "peer_name": "{_json_chars(name)}", '
                f'"peer_address": "{_json_chars(peer_address)}", "latency_ms": ',
            )
        head, middle, tail = parts
        latency_ms = round(seconds * 1000, 3)
        request_id = call.request_id or REQUEST_ID.get()
        if not _PLAIN_JSON(request_id):
            request_id = _json_chars(request_id)
        received, sent = call.received, call.sent
        return (
            f'{{"ts": "{formatter.ts(created)}", "level": "info", "logger": "{ACCESS_LOGGER}", '
            f'"msg": "{head}{latency_ms:.3f}ms in={received} out={sent}{middle}{request_id}'
            f'{tail}{latency_ms!r}, "messages_in": {received}, "messages_out": {sent}}}'
        )


# A string json.dumps(ensure_ascii=False) writes as it is, between its quotes.
_PLAIN_JSON = re.compile(r'[^\x00-\x1f"\\]*').fullmatch


def _json_chars(text: str) -> str:
    """``text`` as json.dumps writes it (``ensure_ascii=False``) between its quotes."""
    return text if _PLAIN_JSON(text) else json.dumps(text, ensure_ascii=False)[1:-1]


def _json_sink(log: logging.Logger) -> LogHandler | None:
    """The gateway's JSON handler when it is the only one a record of ``log`` would reach (no
    filter, no other handler on the way to the root), else None."""
    if log.filters:
        return None
    logger: logging.Logger | None = log
    sink = None
    while logger is not None:
        handlers = logger.handlers
        if handlers:
            if sink is not None or len(handlers) != 1:
                return None
            handler = handlers[0]
            if type(handler) is not LogHandler or handler.filters or handler.level > logging.INFO:
                return None
            sink = handler
        if not logger.propagate:
            break
        logger = logger.parent
    return sink


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, exception."""

    _second = -1
    _stamp = ""  # the local time of _second: "YYYY-MM-DDTHH:MM:SS+HH:MM"

    def ts(self, created: float) -> str:
        """``created`` as local ISO time in milliseconds, as ``datetime.isoformat`` writes it;
        the date, time and offset are formatted once per second (a line per call)."""
        second = int(created)
        micros = round((created - second) * 1e6)
        if micros >= 1_000_000 or created < 0:  # rounds into the next second: the plain way
            return datetime.fromtimestamp(created).astimezone().isoformat(timespec="milliseconds")
        if second != self._second:
            self._stamp = datetime.fromtimestamp(second).astimezone().isoformat()
            self._second = second
        stamp = self._stamp
        return f"{stamp[:19]}.{micros // 1000:03d}{stamp[19:]}"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.ts(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "call_id", None) or REQUEST_ID.get(),
        }
        access = getattr(record, "access", None)
        if access is not None:
            entry.update(access)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class LogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root logger's handler in a server (:func:`configure_logging`): each record is one
    line on standard error, written at once, except the access log's, which are gathered and
    written together (one ``write`` per batch) at most :attr:`flush_seconds` later, when
    :attr:`max_lines` are waiting, before any other line (the order of the lines is kept), on
    :meth:`flush` and at exit (``logging.shutdown``). A process killed outright loses at most
    the last :attr:`flush_seconds` of access lines (docs/operations.md, "Access log")."""

    flush_seconds = 0.1
    max_lines = 512

    def __init__(self, fmt: str = "json") -> None:
        super().__init__()
        self.json: JsonFormatter | None = None
        if fmt == "json":
            self.json = JsonFormatter()
            self.setFormatter(self.json)
        else:
            self.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
            )
            self.addFilter(_RequestIdFilter())
        self._pending: list[str] = []  # access lines, each with its newline
        self._flush_due = False  # a flush is scheduled on the event loop

    def add_line(self, line: str) -> None:
        """Queue one formatted access line (without its newline)."""
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            pending = self._pending
            pending.append(line + self.terminator)
            if len(pending) >= self.max_lines:
                self._write_pending()
                self.stream.flush()
                return
            if self._flush_due:
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on an event loop: nothing would flush it later
                self._write_pending()
                self.stream.flush()
                return
            self._flush_due = True
            loop.call_later(self.flush_seconds, self._flush_later)

    def _flush_later(self) -> None:
        self._flush_due = False
        self.flush()

    def _write_pending(self) -> None:
        if self._pending:
            lines, self._pending = self._pending, []
            self.stream.write("".join(lines))

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record``'s line, after the access lines still waiting; an access record
        (the text format, or logging configured otherwise) waits with them."""
        if record.name == ACCESS_LOGGER and getattr(record, "access", None) is not None:
            try:
                self.add_line(self.format(record))
            except Exception:
                self.handleError(record)
            return
        try:
            self._write_pending()
        except Exception:
            self.handleError(record)
        super().emit(record)

    def flush(self) -> None:
        """Write the access lines still waiting, then flush the stream."""
        with self.lock:  # type: ignore[union-attr]
            try:
                self._write_pending()
            finally:
                super().flush()


def configure_logging(level: str = "info", fmt: str = "json", libraries: bool = False) -> None:
    """Configure the root logger for a server process (again on SIGHUP: it replaces the
    handler, after writing out what the old one holds). ``libraries``: let aiosqlite, psycopg
    and grpc log at ``level`` too (otherwise only their warnings)."""
    handler = LogHandler(fmt)
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, LogHandler):
            old.flush()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if libraries else logging.WARNING)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(record, "call_id", None) or REQUEST_ID.get()
        return True


class Metrics:
    """The gateway's metrics, in a registry of their own (one per gateway: tests run many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.recognitions = Counter(
            "trustgw_recognitions",
            "Decisions on scanned codes.",
            ["region", "mode", "decision", "reason"],
            registry=self.registry,
        )
        self.conversions = Counter(
            "trustgw_conversions",
            "Partner codes exchanged for home-province codes (new or repeated).",
            ["region"],
            registry=self.registry,
        )
        self.place_scans = Counter(
            "trustgw_place_scans",
            "Place codes scanned with a holder's code, by outcome (VISIT_RECORDED or why not).",
            ["reason"],
            registry=self.registry,
        )
        self.trace_queries = Counter(
            "trustgw_trace_queries",
            "Tracing queries by tracer (certificate name), query and outcome (OK or a reason).",
            ["tracer", "query", "outcome"],
            registry=self.registry,
        )
        # The standard gRPC server metrics, named and labelled as go-grpc-prometheus names them
        # (grpc_type: unary, client_stream, server_stream, bidi_stream).
        rpc = ["grpc_type", "grpc_service", "grpc_method"]
        self.grpc_started = Counter(
            "grpc_server_started", "RPCs started on the server.", rpc, registry=self.registry
        )
        self.grpc_handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by status code.",
            [*rpc, "grpc_code"],
            registry=self.registry,
        )
        self.grpc_msg_received = Counter(
            "grpc_server_msg_received",
            "Messages received by the server (1 per unary call).",
            rpc,
            registry=self.registry,
        )
        self.grpc_msg_sent = Counter(
            "grpc_server_msg_sent",
            "Messages sent by the server (1 per successful unary call).",
            rpc,
            registry=self.registry,
        )
        self.grpc_handling = Histogram(
            "grpc_server_handling_seconds",
            "Server-side handling time of unary RPCs (streams: trustgw_stream_duration_seconds).",
            rpc,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.stream_duration = Histogram(
            "trustgw_stream_duration_seconds",
            "How long streaming RPCs stay open (a recognition stream, a trust-list watch).",
            rpc,
            buckets=(0.01, 0.1, 1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400),
            registry=self.registry,
        )
        self.bad_requests = Counter(
            "trustgw_bad_requests",
            "Requests refused before any decision (malformed bytes, over the method's size "
            "limit, invalid fields), in unary calls and inside streams.",
            ["method", "reason"],
            registry=self.registry,
        )
        self.key_expiry = Gauge(
            "trustgw_key_expiry_timestamp_seconds",
            "When a key the gateway holds or trusts stops being valid (unix time).",
            ["owner", "role", "kid"],
            registry=self.registry,
        )
        self.tls_expiry = Gauge(
            "trustgw_tls_certificate_expiry_timestamp_seconds",
            "When the server's TLS certificate or the client CA stops being valid (unix time).",
            ["certificate"],
            registry=self.registry,
        )
        self.build_info = Gauge(
            "trustgw_build_info",
            "Always 1; the labels say what is running.",
            ["version", "python", "grpc", "platform"],
            registry=self.registry,
        )
        self.build_info.labels(*build_labels()).set(1)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, ..._memory_bytes
        PlatformCollector(registry=self.registry)  # python_info
        self.registry_version = Gauge(
            "trustgw_registry_version",
            "Version of the loaded key registry.",
            registry=self.registry,
        )
        self.trustlist_version = Gauge(
            "trustgw_trustlist_version",
            "Version of the current signed trust list.",
            registry=self.registry,
        )
        # Online partners (docs/partners.md §9, docs/operations.md "Online partners").
        self.partner_calls = Counter(
            "trustgw_partner_calls",
            "Status lookups of online codes by outcome: ok, cached, or the refusal's reason.",
            ["region", "outcome"],
            registry=self.registry,
        )
        self.partner_latency = Histogram(
            "trustgw_partner_call_seconds",
            "Time of the status calls made to an online partner (retry included).",
            ["region"],
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1, 2, 5),
            registry=self.registry,
        )
        self.partner_breaker_state = Gauge(
            "trustgw_partner_breaker_state",
            "An online partner's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["region"],
            registry=self.registry,
        )
        for region in ONLINE_REGIONS:  # exported from the start: closed until a call fails
            self.partner_breaker_state.labels(region).set(0)
            self.partner_latency.labels(region)
            self.partner_calls.labels(region, "ok")

    def partner_call(self, region: str, outcome: str, seconds: float | None) -> None:
        """One status lookup of an online code (``seconds``: the call's time, None when no
        call was made: cached, busy, circuit open)."""
        self.partner_calls.labels(region, outcome).inc()
        if seconds is not None:
            self.partner_latency.labels(region).observe(seconds)

    def partner_breaker(self, region: str, state: BreakerState) -> None:
        """An online partner's breaker state after a call."""
        self.partner_breaker_state.labels(region).set(STATE_VALUES[state])

    def set_key_expiry(self, rows: Iterable[tuple[str, str, str, datetime]], now: datetime) -> None:
        """Replace the key-expiry gauges with ``(owner, role, kid, not_after)`` rows (``now``:
        the time of the reading; the gauges hold timestamps, which need no clock)."""
        del now
        self.key_expiry.clear()
        for owner, role, kid, not_after in rows:
            self.key_expiry.labels(owner, role, kid).set(not_after.timestamp())

    def set_tls_expiry(self, expiry: Mapping[str, datetime]) -> None:
        """Replace the TLS expiry gauges: ``{"server": not_after, "ca": not_after}``."""
        self.tls_expiry.clear()
        for name, not_after in expiry.items():
            self.tls_expiry.labels(name).set(not_after.timestamp())


def version() -> str:
    """The installed trustgw's version (the source tree's when not installed)."""
    try:
        return importlib.metadata.version("trustgw")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def build_labels() -> tuple[str, str, str, str]:
    """``trustgw_build_info``'s labels: trustgw, Python and grpc versions, and the platform."""
    try:
        grpc_version = importlib.metadata.version("grpcio")
    except importlib.metadata.PackageNotFoundError:
        grpc_version = "unknown"
    return version(), platform.python_version(), grpc_version, sys.platform


def request_id_from(metadata: Iterable[tuple[str, Any]] | None) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and _REQUEST_ID_OK.match(value):
            return value
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFF:08x}"


# --- the metrics endpoint ---------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


def start_metrics_http(listen: str, registry: CollectorRegistry) -> tuple[WSGIServer, int]:
    """Serve ``registry`` as Prometheus text at ``/metrics`` only (any other path is 404: the
    probes are elsewhere, ``probe_listen``), in a thread of its own; (server, bound port).

    Raises :class:`keys.errors.ListenError` when ``listen`` cannot be opened."""
    from gateway.listen import host_port, listen_error

    app = make_wsgi_app(registry)

    def only_metrics(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/metrics":
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: the metrics are at /metrics\n"]

    host, port = host_port(listen)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except (socket.gaierror, UnicodeError):
        raise listen_error("metrics", listen, errno.EADDRNOTAVAIL) from None
    server_class = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
    try:
        server: WSGIServer = make_server(host, port, only_metrics, server_class, _QuietHandler)
    except OSError as exc:
        raise listen_error("metrics", listen, exc.errno) from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server, server.server_port


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per scrape, none kept at exit."""

    daemon_threads = True
