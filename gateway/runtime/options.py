"""The settings' table: every option's key path, type, range and documentation.

:mod:`gateway.runtime.settings` reads and checks the values; this module only says what exists
(docs/operations.md, "Configuration").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ENV_PREFIX = "TRUSTGW_"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")


Kind = Literal["path", "database", "address", "bool", "int", "float", "choice"]


@dataclass(frozen=True)
class Option:
    """One setting: its key path, type, range and documentation."""

    key: str
    kind: Kind
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False  # may be unset (None)

    @property
    def attr(self) -> str:
        """The :class:`Settings` attribute."""
        return self.key.replace(".", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.attr.upper()

    @property
    def flag(self) -> str:
        return "--" + self.attr.replace("_", "-")

    def expected(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.kind == "path":
            return "a path (string)"
        if self.kind == "database":
            return "a PostgreSQL URL (postgresql://...) or the path of a SQLite file"
        if self.kind == "address":
            return 'a "HOST:PORT" string with a port from 0 to 65535'
        if self.kind == "bool":
            return "a boolean (true or false)"
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        noun = "an integer" if self.kind == "int" else "a number"
        return f"{noun} from {_num(self.low)} to {_num(self.high)}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


OPTIONS: tuple[Option, ...] = (
    Option(
        "data_dir", "path", "the gateway's data directory (keys, trustgw.db, pki)", optional=True
    ),
    Option(
        "database",
        "database",
        "the store: a postgresql:// URL, or a SQLite file (default DATA_DIR/trustgw.db)",
        optional=True,
    ),
    Option("listen", "address", "HOST:PORT of the gRPC server"),
    Option(
        "workers",
        "int",
        "server processes sharing the port under one supervisor (1: this process serves)",
        low=1,
        high=64,
    ),
    Option("insecure", "bool", "serve plaintext without client authentication (development only)"),
    Option(
        "tls.cert", "path", "server certificate (default DATA_DIR/pki/server.pem)", optional=True
    ),
    Option(
        "tls.key", "path", "server private key (default DATA_DIR/pki/server.key)", optional=True
    ),
    Option(
        "tls.ca", "path", "CA of client certificates (default DATA_DIR/pki/ca.pem)", optional=True
    ),
    Option(
        "metrics_listen",
        "address",
        "HOST:PORT of the Prometheus endpoint (unset: off)",
        optional=True,
    ),
    Option(
        "probe_listen",
        "address",
        "HOST:PORT of the plaintext probe port: grpc.health.v1 and HTTP /healthz, /readyz "
        "(unset: off)",
        optional=True,
    ),
    Option("log.level", "choice", "log level", choices=LOG_LEVELS),
    Option("log.format", "choice", "log format", choices=LOG_FORMATS),
    Option("log.access", "bool", "one line per call in the access log (trustgw.access)"),
    Option(
        "log.libraries",
        "bool",
        "let aiosqlite, psycopg and grpc log at log.level (otherwise only their warnings)",
    ),
    Option(
        "refresh_interval",
        "float",
        "seconds between checks for registry and key changes",
        low=0.05,
        high=3600,
    ),
    Option(
        "grace_period",
        "float",
        "seconds to drain in-flight calls on SIGTERM/SIGINT",
        low=0,
        high=3600,
    ),
    Option(
        "retention.recognitions_days",
        "float",
        "days a recognition log entry is kept",
        low=0,
        high=36500,
    ),
    Option(
        "retention.conversions_days",
        "float",
        "days a conversion record is kept after its code expired",
        low=0,
        high=36500,
    ),
    Option("retention.recognition_log", "bool", "keep a (pseudonymous) log of recognitions"),
    Option(
        "retention.purge_interval_seconds",
        "float",
        "seconds between the server's purges (0: none, run trustgw purge instead)",
        low=0,
        high=7 * 86400,
    ),
    Option(
        "trustlist.ttl_hours", "float", "hours a signed trust list stays valid", low=0.1, high=8760
    ),
    Option(
        "online.file", "path", "the online partners' file (docs/partners.md §9.8)", optional=True
    ),
    Option("retention.visits_days", "float", "days a venue visit is kept", low=0, high=36500),
    Option("tracing.daily_quota", "int", "queries per tracer and UTC day", low=1, high=1000000),
)
