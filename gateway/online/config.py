"""Which partners are asked online, where and within what limits (docs/operations.md, "Online
partners"; the file's format is docs/partners.md §9.8).

The endpoint URLs, CAs and limits are deployment settings, not registry data: a TOML file named by
the ``online.file`` setting, with one ``[region.CODE]`` table per online region and the client
certificate the gateway presents to them.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from adapters.regions import ONLINE_REGIONS
from keys.errors import InvalidConfigError

_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")


@dataclass(frozen=True)
class PartnerSettings:
    """One online region's endpoint and limits (defaults: docs/partners.md §9.6)."""

    region: str
    endpoint: str
    ca: Path | None = None  # None: the system's trusted CAs
    deadline_ms: int = 800
    concurrency: int = 32
    retry: bool = True
    breaker_failures: int = 5
    breaker_cooldown_s: float = 10.0
    cache_entries: int = 10_000

    @property
    def deadline(self) -> float:
        """The per-call deadline in seconds."""
        return self.deadline_ms / 1000


@dataclass(frozen=True)
class OnlineSettings:
    """Every online partner's settings and the gateway's client certificate."""

    partners: Mapping[str, PartnerSettings] = field(default_factory=dict)
    client_cert: Path | None = None
    client_key: Path | None = None


# name -> (type, low, high)
_LIMITS: Mapping[str, tuple[type, float, float]] = {
    "deadline_ms": (int, 50, 10_000),
    "concurrency": (int, 1, 1024),
    "breaker_failures": (int, 1, 1000),
    "breaker_cooldown_s": (float, 0.1, 3600),
    "cache_entries": (int, 0, 1_000_000),
}


def check_endpoint(url: object) -> str:
    """An ``https://host[:port][/path]`` base URL (no query, fragment, user or trailing ``/``);
    raises ``ValueError``."""
    if not isinstance(url, str) or len(url) > 2048 or not url.isascii() or not url.isprintable():
        raise ValueError("expected an https:// URL (ASCII text)")
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError(f"expected an https:// URL, got {url[:80]!r}")
    if parts.query or parts.fragment or "@" in parts.netloc or url.endswith("/"):
        raise ValueError("the endpoint has no query, fragment, user or trailing '/'")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"the endpoint's port is not 0..65535: {url[:80]!r}") from None
    if (
        not parts.hostname
        or _HOST.fullmatch(parts.netloc.rsplit(":", 1)[0] if port else parts.netloc) is None
    ):
        raise ValueError(f"the endpoint's host is not acceptable: {url[:80]!r}")
    return url


def _partner(region: str, table: Any, base: Path) -> tuple[PartnerSettings | None, list[str]]:
    problems: list[str] = []
    if not isinstance(table, dict):
        return None, [f"region.{region}: expected a table"]
    values: dict[str, Any] = {}
    for name, value in table.items():
        key = f"region.{region}.{name}"
        if name == "endpoint":
            try:
                values[name] = check_endpoint(value)
            except ValueError as exc:
                problems.append(f"{key}: {exc}")
        elif name == "ca":
            if not isinstance(value, str) or not value or not value.isprintable():
                problems.append(f"{key}: expected a path (string)")
            else:
                path = Path(value).expanduser()
                values[name] = path if path.is_absolute() else (base / path).resolve()
        elif name == "retry":
            if not isinstance(value, bool):
                problems.append(f"{key}: expected a boolean (true or false)")
            values[name] = value
        elif name in _LIMITS:
            kind, low, high = _LIMITS[name]
            ok_type = isinstance(value, int) if kind is int else isinstance(value, int | float)
            if isinstance(value, bool) or not ok_type or not low <= value <= high:
                noun = "an integer" if kind is int else "a number"
                problems.append(f"{key}: expected {noun} from {low:g} to {high:g}, got {value!r}")
            else:
                values[name] = kind(value)
        else:
            problems.append(f"{key}: unknown key")
    if "endpoint" not in table:
        problems.append(f"region.{region}.endpoint: required")
    if problems:
        return None, problems
    return PartnerSettings(region=region, **values), []


def load_online(path: Path | None, data_dir: Path) -> OnlineSettings:
    """The online partners of the file at ``path`` (None: no online partner), and the client
    certificate they are called with: the file's ``client_cert`` / ``client_key``, by default
    ``DATA_DIR/pki/online-client.pem`` / ``.key``. Relative paths are relative to the file's
    directory. Raises :class:`InvalidConfigError` listing every problem.
    """
    if path is None:
        return OnlineSettings()
    where = f"online.file {path}"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidConfigError([f"{where}: cannot read it: {exc.strerror}"]) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidConfigError([f"{where}: not valid TOML: {exc}"]) from None
    problems: list[str] = []
    partners: dict[str, PartnerSettings] = {}
    files = {
        "client_cert": data_dir / "pki" / "online-client.pem",
        "client_key": data_dir / "pki" / "online-client.key",
    }
    for top, value in raw.items():
        if top in files:
            if not isinstance(value, str) or not value or not value.isprintable():
                problems.append(f"{top}: expected a path (string)")
            else:
                files[top] = (path.parent / Path(value).expanduser()).resolve()
            continue
        if top != "region" or not isinstance(value, dict):
            problems.append(f"{top}: unknown key (client_cert, client_key, [region.CODE])")
            continue
        for region, table in value.items():
            if region not in ONLINE_REGIONS:
                online = ", ".join(ONLINE_REGIONS)
                problems.append(f"region.{region}: not an online region (online: {online})")
                continue
            partner, found = _partner(region, table, path.parent)
            problems += found
            if partner is not None:
                partners[region] = partner
    if problems:
        raise InvalidConfigError([f"{where}: {p}" for p in problems])
    return OnlineSettings(partners, files["client_cert"], files["client_key"])
