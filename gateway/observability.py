"""Request ids, structured logs and Prometheus metrics.

Nothing here configures logging at import time: ``configure_logging`` is called by ``trustgw
serve``. Log lines never carry a personal identifier or a key: the gateway only ever handles
keyed pseudonyms, and log calls pass ids and reasons, not codes.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")
REQUEST_ID_HEADER = "x-request-id"
# Generated ids: a random per-process prefix and a counter (unique without a urandom call each).
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created)
            .astimezone()
            .isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": REQUEST_ID.get(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Configure the root logger once, for a server process."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
        handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
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
        self.latency = Histogram(
            "trustgw_rpc_latency_seconds",
            "Server-side handling time per RPC method.",
            ["method"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.errors = Counter(
            "trustgw_rpc_errors",
            "RPCs that ended with a status other than OK.",
            ["method", "code"],
            registry=self.registry,
        )
        self.bad_requests = Counter(
            "trustgw_bad_requests",
            "Requests refused before any decision (malformed bytes, over the method's size "
            "limit, invalid fields), in unary calls and inside streams.",
            ["method", "reason"],
            registry=self.registry,
        )
        self.key_expiry_days = Gauge(
            "trustgw_key_expiry_days",
            "Days until a key the gateway holds or trusts stops being valid.",
            ["owner", "role", "kid"],
            registry=self.registry,
        )
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

    def set_key_expiry(self, rows: Iterable[tuple[str, str, str, datetime]], now: datetime) -> None:
        """Replace the key-expiry gauges with ``(owner, role, kid, not_after)`` rows."""
        self.key_expiry_days.clear()
        for owner, role, kid, not_after in rows:
            days = (not_after - now).total_seconds() / 86400
            self.key_expiry_days.labels(owner, role, kid).set(round(days, 3))


def request_id_from(metadata: Iterable[tuple[str, Any]] | None) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and _REQUEST_ID_OK.match(value):
            return value
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFF:08x}"
