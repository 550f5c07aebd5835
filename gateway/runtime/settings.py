"""The configuration of a gateway process, from a TOML file, the environment and flags.

Every setting has one key path in the file (``retention.recognitions_days``), one environment
variable derived from it (``TRUSTGW_`` + the path in capitals with ``.`` as ``_``:
``TRUSTGW_RETENTION_RECOGNITIONS_DAYS``) and one flag (``--retention-recognitions-days``).
Precedence, highest first: **flags > environment > file > defaults**. The passphrase of the key
directory is never a setting: it comes only from ``TRUSTGW_PASSPHRASE`` or
``TRUSTGW_PASSPHRASE_FILE`` (see :func:`keys.keystore.passphrase_from_env`).

:class:`Settings` is a frozen dataclass that validates itself in its constructor and reports every
problem at once, each with its key path and where the value came from.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from gateway.online.config import load_online
from gateway.pki import TlsFiles
from gateway.places.tracing import TraceLimits
from gateway.runtime import dburl
from gateway.runtime.config import GatewayConfig
from gateway.runtime.datadir import DataDir
from gateway.runtime.options import OPTIONS as OPTIONS
from gateway.runtime.options import Option
from gateway.runtime.retention import RetentionPolicy
from keys.errors import InvalidConfigError

MAX_PATH_CHARS = 4096
# HOST:PORT: a DNS name, IPv4 or [IPv6] address (ASCII), and a port in ASCII digits.
_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]|\*")
_PORT = re.compile(r"[0-9]{1,5}")
_INT = re.compile(r"-?[0-9]{1,18}")
_NUMBER = re.compile(r"-?(?:[0-9]{1,18}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})(?:[eE][-+]?[0-9]{1,3})?")

BY_KEY: Mapping[str, Option] = {o.key: o for o in OPTIONS}
BY_ATTR: Mapping[str, Option] = {o.attr: o for o in OPTIONS}
_TABLES = {o.key.split(".")[0] for o in OPTIONS if "." in o.key}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration."""

    key: str  # the key path, e.g. "retention.recognitions_days"
    message: str
    source: str = ""  # "file x.toml", "env TRUSTGW_...", "flag --...", "" for defaults

    def __str__(self) -> str:
        where = f" (from {self.source})" if self.source else ""
        return f"{self.key}: {self.message}{where}"

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "message": self.message, "source": self.source}


@dataclass(frozen=True)
class Settings:
    """The effective configuration of one gateway process. Validates itself on construction.

    Raises :class:`InvalidConfigError` listing every invalid value.
    """

    data_dir: Path | None = None
    # A PostgreSQL URL (kept out of repr: it may hold a password), or a SQLite file.
    database: str | Path | None = field(default=None, repr=False)
    listen: str = "127.0.0.1:50051"
    workers: int = 1
    insecure: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    metrics_listen: str | None = None
    probe_listen: str | None = None
    log_level: str = "info"
    log_format: str = "json"
    log_access: bool = True
    log_libraries: bool = False
    refresh_interval: float = 0.5
    grace_period: float = 5.0
    retention_recognitions_days: float = 30.0
    retention_conversions_days: float = 180.0
    retention_recognition_log: bool = True
    retention_purge_interval_seconds: float = 3600.0
    trustlist_ttl_hours: float = 24.0
    online_file: Path | None = None
    retention_visits_days: float = 28.0
    tracing_daily_quota: int = 200
    # Where each value came from: attribute -> "default", "file F", "env NAME", "flag --name".
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    # The file the settings were read from (read again on SIGHUP: gateway/cli/_reload.py).
    config_file: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        for option in OPTIONS:
            value = getattr(self, option.attr)
            source = self.sources.get(option.attr, "")
            source = "" if source == "default" else source
            try:
                normalised = _check(option, value)
            except ValueError as exc:
                problems.append(Problem(option.key, str(exc), source))
                continue
            object.__setattr__(self, option.attr, normalised)
        if problems:
            raise InvalidConfigError(problems)
        object.__setattr__(
            self, "sources", {o.attr: self.sources.get(o.attr, "default") for o in OPTIONS}
        )

    # --- what the server needs ----------------------------------------------------------

    def require_data_dir(self) -> Path:
        if self.data_dir is None:
            raise InvalidConfigError(
                [
                    Problem(
                        "data_dir", "required: set it in the file, TRUSTGW_DATA_DIR or --data-dir"
                    )
                ]
            )
        return self.data_dir

    def database_target(self) -> str | Path:
        """The store to open: the ``database`` setting, else ``DATA_DIR/trustgw.db``."""
        if self.database is not None:
            return self.database
        return DataDir(self.require_data_dir()).database

    def tls_files(self) -> TlsFiles | None:
        """The server's TLS files (``DATA_DIR/pki/...`` unless given); ``None`` if ``insecure``."""
        if self.insecure:
            return None
        default = DataDir(self.require_data_dir()).server_tls()
        return TlsFiles(
            cert=self.tls_cert or default.cert,
            key=self.tls_key or default.key,
            ca=self.tls_ca or default.ca,
        )

    def gateway_config(self, passphrase: bytes | None) -> GatewayConfig:
        """The :class:`gateway.runtime.config.GatewayConfig` for these settings."""
        return GatewayConfig(
            data_dir=self.require_data_dir(),
            database_target=self.database,
            migrate=False,  # serve refuses an outdated schema: trustgw db migrate
            listen=self.listen,
            passphrase=passphrase,
            refresh_interval=self.refresh_interval,
            grace=self.grace_period,
            tls=self.tls_files(),
            metrics_listen=self.metrics_listen,
            retention=RetentionPolicy(
                recognitions_days=self.retention_recognitions_days,
                conversions_days=self.retention_conversions_days,
                interval_seconds=self.retention_purge_interval_seconds,
                recognition_log=self.retention_recognition_log,
                visits_days=self.retention_visits_days,
            ),
            trustlist_ttl=timedelta(hours=self.trustlist_ttl_hours),
            online=load_online(self.online_file, self.require_data_dir()),
            tracing=TraceLimits(daily_quota=self.tracing_daily_quota),
        )

    def effective(self) -> list[dict[str, Any]]:
        """Every setting with its value and where it came from, in documentation order."""
        rows = []
        for option in OPTIONS:
            value = getattr(self, option.attr)
            source = self.sources.get(option.attr, "default")
            if value is None and option.key.startswith("tls.") and not self.insecure:
                derived = getattr(self.tls_files() if self.data_dir else None, option.key[4:], None)
                value, source = derived, "default (DATA_DIR/pki)" if derived else source
            if option.kind == "database":
                if value is None and self.data_dir is not None:
                    value, source = self.database_target(), "default (DATA_DIR/trustgw.db)"
                value = None if value is None else dburl.redact(value)  # never the password
            rows.append(
                {
                    "key": option.key,
                    "value": str(value) if isinstance(value, Path) else value,
                    "source": source,
                }
            )
        return rows


def _check(option: Option, value: Any) -> Any:
    """``value`` normalised for ``option``; ``ValueError`` with the expectation otherwise."""
    if value is None:
        if option.optional:
            return None
        raise ValueError(f"expected {option.expected()}, got nothing")
    kind = option.kind
    if kind == "database":
        return _check_database(value)
    if kind == "path":
        text = str(value) if isinstance(value, (str, Path)) else ""
        if text and len(text) <= MAX_PATH_CHARS and text.isprintable():
            return Path(text).expanduser()
        raise ValueError(f"expected {option.expected()}, got {_describe(value)[:80]}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected {option.expected()}, got {_describe(value)}")
    if kind == "choice":
        if isinstance(value, str) and value.lower() in option.choices:
            return value.lower()
        raise ValueError(f"expected {option.expected()}, got {_describe(value)}")
    if kind == "address":
        if not isinstance(value, str):
            raise ValueError(f"expected {option.expected()}, got {_describe(value)}")
        host, sep, port = value.rpartition(":")
        if (
            not sep
            or _HOST.fullmatch(host) is None
            or _PORT.fullmatch(port) is None
            or int(port) > 65535
        ):
            raise ValueError(f"expected {option.expected()}, got {value[:80]!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected {option.expected()}, got {_describe(value)}")
    if kind == "int" and not isinstance(value, int):
        raise ValueError(f"expected {option.expected()}, got {_describe(value)}")
    low = option.low if option.low is not None else float("-inf")
    high = option.high if option.high is not None else float("inf")
    if not low <= value <= high:
        raise ValueError(f"expected {option.expected()}, got {value!r}")
    return value if kind == "int" else float(value)


def _check_database(value: Any) -> str | Path:
    """A PostgreSQL URL (kept as text, checked by :func:`gateway.runtime.dburl.parse`) or a
    SQLite file path. Messages show a URL only redacted."""
    if isinstance(value, str) and dburl.is_url(value):
        dburl.parse(value)  # ValueError with a redacted message
        return value
    if isinstance(value, (str, Path)):
        text = str(value)
        if text and len(text) <= MAX_PATH_CHARS and text.isprintable():
            return Path(text).expanduser()
        raise ValueError(
            f"expected {BY_KEY['database'].expected()}, got {dburl.redact(text)[:80]!r}"
        )
    raise ValueError(f"expected {BY_KEY['database'].expected()}, got {_describe(value)}")


def _describe(value: Any) -> str:
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        dict: "table",
        list: "array",
    }
    return f"{names.get(type(value), type(value).__name__)} {value!r}"


# --- the layers -------------------------------------------------------------------------------

Layer = dict[str, tuple[Any, str]]  # attribute -> (value, source)


def read_file(path: Path) -> tuple[Layer, list[Problem]]:
    """The settings in a TOML file, and every problem found in it (syntax, unknown keys, types).

    Relative paths in the file are relative to the file's directory.
    """
    source = f"file {path}"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return {}, [Problem("(file)", f"cannot read {path}: {exc.strerror}", source)]
    except UnicodeDecodeError:
        return {}, [Problem("(file)", "not UTF-8 text", source)]
    except tomllib.TOMLDecodeError as exc:
        return {}, [Problem("(file)", f"not valid TOML: {exc}", source)]
    layer: Layer = {}
    problems: list[Problem] = []
    for key, value in _flatten(raw):
        option = BY_KEY.get(key)
        if option is None:
            if key in _TABLES:
                problems.append(Problem(key, "expected a table ([" + key + "])", source))
                continue
            hint = difflib.get_close_matches(key, list(BY_KEY), n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            problems.append(Problem(key, f"unknown key{suggestion}", source))
            continue
        try:
            value = _check(option, value)
        except ValueError as exc:
            problems.append(Problem(key, str(exc), source))
            continue
        if isinstance(value, Path) and not value.is_absolute():
            value = (path.parent / value).resolve()
        layer[option.attr] = (value, source)
    return layer, problems


def _flatten(table: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in table.items():
        path = prefix + key
        if isinstance(value, dict) and path in _TABLES:
            items += _flatten(value, path + ".")
        else:
            items.append((path, value))
    return items


def _parse_text(option: Option, text: str) -> Any:
    """A value from its text form (environment variables and flags)."""
    if option.kind == "bool":
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"expected {option.expected()}, got {text!r}")
    if option.optional and text == "":
        return None
    if option.kind in ("int", "float"):
        pattern = _INT if option.kind == "int" else _NUMBER
        if pattern.fullmatch(text.strip()) is None:
            raise ValueError(f"expected {option.expected()}, got {text[:80]!r}")
        return int(text) if option.kind == "int" else float(text)
    return text


def read_env(environ: Mapping[str, str]) -> tuple[Layer, list[Problem]]:
    """The settings in ``TRUSTGW_*`` environment variables (others, like the passphrase, are
    not settings and are left alone)."""
    layer: Layer = {}
    problems: list[Problem] = []
    for option in OPTIONS:
        if option.env not in environ:
            continue
        source = f"env {option.env}"
        try:
            value = _check(option, _parse_text(option, environ[option.env]))
        except ValueError as exc:
            problems.append(Problem(option.key, str(exc), source))
            continue
        if isinstance(value, Path):
            value = value.resolve()
        layer[option.attr] = (value, source)
    return layer, problems


def read_flags(flags: Mapping[str, Any]) -> tuple[Layer, list[Problem]]:
    """The settings given as flags: ``{attribute: value}``, ``None`` meaning not given.

    Values may be text (parsed like environment variables) or already typed.
    """
    layer: Layer = {}
    problems: list[Problem] = []
    for attr, given in flags.items():
        option = BY_ATTR.get(attr)
        if option is None or given is None:
            continue
        source = f"flag {option.flag}"
        if isinstance(given, str) and not given.strip():
            problems.append(Problem(option.key, "an empty value (leave the flag out)", source))
            continue
        try:
            value = _parse_text(option, given) if isinstance(given, str) else given
            value = _check(option, value)
        except ValueError as exc:
            problems.append(Problem(option.key, str(exc), source))
            continue
        if isinstance(value, Path):
            value = value.resolve()
        layer[option.attr] = (value, source)
    return layer, problems


def load(
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """The effective settings: flags > environment > file > defaults.

    Raises :class:`InvalidConfigError` listing every problem in every layer.
    """
    layers: list[Layer] = []
    problems: list[Problem] = []
    if file is not None:
        layer, found = read_file(file)
        layers.append(layer)
        problems += found
    layer, found = read_env(os.environ if environ is None else environ)
    layers.append(layer)
    problems += found
    layer, found = read_flags(flags or {})
    layers.append(layer)
    problems += found
    if problems:
        raise InvalidConfigError(problems)
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in layers:  # later layers win
        for attr, (value, source) in layer.items():
            merged[attr] = value
            sources[attr] = source
    return Settings(**merged, sources=sources, config_file=file)


def check_file(path: Path) -> list[Problem]:
    """Every problem in a configuration file on its own (no environment, no flags)."""
    layer, problems = read_file(path)
    if problems:
        return problems
    try:
        Settings(
            **{a: v for a, (v, _) in layer.items()}, sources={a: s for a, (_, s) in layer.items()}
        )
    except InvalidConfigError as exc:
        return list(exc.problems)
    return []


def load_database(
    file: Path | None, environ: Mapping[str, str], flag: str | None
) -> str | Path | None:
    """The ``database`` setting alone, for commands that open the store but do not serve:
    ``--database`` > ``TRUSTGW_DATABASE`` > the file's ``database`` > ``None`` (the data
    directory's SQLite file). Other ``TRUSTGW_*`` variables are not read.

    Raises :class:`InvalidConfigError` for a bad value (or any problem in a given file).
    """
    option = BY_KEY["database"]
    layers: list[Layer] = []
    problems: list[Problem] = []
    if file is not None:
        layer, found = read_file(file)
        layers.append(layer)
        problems += found
    layer, found = read_env({option.env: environ[option.env]} if option.env in environ else {})
    layers.append(layer)
    problems += found
    layer, found = read_flags({option.attr: flag})
    layers.append(layer)
    problems += found
    if problems:
        raise InvalidConfigError(problems)
    value: str | Path | None = None
    for layer in layers:
        if option.attr in layer:
            value = layer[option.attr][0]
    return value
