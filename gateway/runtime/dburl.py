"""The ``database`` setting's text: a PostgreSQL URL or the path of a SQLite file.

A URL is parsed here only to check it and to show it without its secret: libpq (through the
store) is what connects. Both forms a password can take are redacted, the userinfo
(``postgresql://user:secret@host/db``) and the ``password`` query parameter
(``?password=secret``); several hosts (``postgresql://h1:5432,h2:5433/db``, libpq's failover
list) are kept as written. Nothing that shows a database target to a person (``config show``,
``db status``, a log line, an error message) may show it other than through :func:`redact`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote

SCHEMES = ("postgresql", "postgres")
MAX_URL_CHARS = 4096
MASK = "***"
_HOST = re.compile(r"[A-Za-z0-9._\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]|/[^,]*|%2[Ff][^,]*")
_PORT = re.compile(r"[0-9]{1,5}")
_DBNAME = re.compile(r"[^\s/?#]{0,63}")


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed PostgreSQL URL: what it names, with its password kept apart."""

    scheme: str
    user: str
    password: str | None
    hosts: tuple[tuple[str, int | None], ...]  # (host, port) in libpq's failover order
    dbname: str
    params: tuple[tuple[str, str], ...]


def is_url(text: str) -> bool:
    """True when ``text`` is meant as a URL (it has a ``scheme://``), not a file path."""
    return "://" in text and re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://", text) is not None


def is_postgres_url(text: str) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` URL (any case of the scheme)."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def parse(text: str) -> DatabaseUrl:
    """The parts of a PostgreSQL URL. Raises ``ValueError`` whose message never holds the
    password (it names the URL only as :func:`redact` shows it)."""
    shown = redact(text)[:120]
    if len(text) > MAX_URL_CHARS:
        raise ValueError(f"a database URL of {len(text)} characters")
    if not text.isprintable() or any(c.isspace() for c in text):
        raise ValueError(f"the database URL {shown!r} holds spaces or control characters")
    if not is_postgres_url(text):
        scheme = text.partition("://")[0]
        raise ValueError(
            f"the database URL scheme {scheme[:20]!r} is not postgresql:// or postgres:// "
            "(a SQLite store is given as a file path)"
        )
    scheme, _, rest = text.partition("://")
    userinfo, _, rest = rest.rpartition("@")  # as redact() reads it
    rest = rest.partition("#")[0]
    rest, _, query = rest.partition("?")
    hostlist, slash, path = rest.partition("/")
    user, colon, password = userinfo.partition(":")
    hosts: list[tuple[str, int | None]] = []
    for item in hostlist.split(",") if hostlist else []:
        host, port = _split_host(item, shown)
        hosts.append((host, port))
    dbname = unquote(path) if slash else ""
    if _DBNAME.fullmatch(dbname) is None:
        raise ValueError(f"the database name in {shown!r} is not valid")
    try:
        params = tuple(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise ValueError(f"the query of the database URL {shown!r} is not valid") from None
    return DatabaseUrl(
        scheme=scheme.lower(),
        user=unquote(user),
        password=unquote(password) if colon else None,
        hosts=tuple(hosts),
        dbname=dbname,
        params=params,
    )


def _split_host(item: str, shown: str) -> tuple[str, int | None]:
    if item.startswith("["):
        host, close, after = item.partition("]")
        host += close
        port_text = after[1:] if after.startswith(":") else None
        if after and port_text is None:
            raise ValueError(f"the host {item[:60]!r} in {shown!r} is not valid")
    else:
        host, colon, port_text_or = item.partition(":")
        port_text = port_text_or if colon else None
    if _HOST.fullmatch(host) is None:
        raise ValueError(f"the host {item[:60]!r} in {shown!r} is not valid")
    if port_text is None or port_text == "":
        return host, None
    if _PORT.fullmatch(port_text) is None or not 0 < int(port_text) <= 65535:
        raise ValueError(f"the port {port_text[:10]!r} in {shown!r} is not from 1 to 65535")
    return host, int(port_text)


def redact(target: str | Path) -> str:
    """``target`` as a person may see it: a URL with every password replaced by ``***``, a
    path unchanged. Works on text that does not parse too (it is used in error messages):
    everything between the user's ``:`` and the last ``@`` goes, however it is encoded."""
    text = str(target)
    if not is_url(text):
        return text
    scheme, _, rest = text.partition("://")
    # The last "@" anywhere: a password with an unencoded "/" or "?" is still hidden (a query
    # value with an "@" hides more than it must, never less).
    userinfo, at, after = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}{':' + MASK if colon else ''}@{after}"
    main, question, query = rest.partition("?")
    if question:
        query = "&".join(
            f"{part.partition('=')[0]}={MASK}" if _is_password_param(part) else part
            for part in query.split("&")
        )
    return f"{scheme}://{main}{question}{query}"


def _is_password_param(part: str) -> bool:
    return unquote(part.partition("=")[0]).strip().lower() == "password"


def secrets_of(target: str | Path) -> list[str]:
    """The passwords written in ``target`` (raw and decoded), longest first."""
    text = str(target)
    if not is_url(text):
        return []
    rest = text.partition("://")[2]
    userinfo, _, after = rest.rpartition("@")
    query = after.partition("?")[2]
    found = set()
    if ":" in userinfo:
        found.add(userinfo.partition(":")[2])
    for part in query.split("&"):
        if _is_password_param(part):
            found.add(part.partition("=")[2])
    found |= {unquote(s) for s in found}
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(message: str, target: str | Path) -> str:
    """``message`` (say a driver's error text) with ``target`` redacted and its password
    taken out wherever else it appears."""
    text = str(target)
    if text and is_url(text):
        message = message.replace(text, redact(text))
    for secret in secrets_of(text):
        message = message.replace(secret, MASK)
    return message


def describe(target: str | Path) -> tuple[str, str]:
    """``(backend, shown)``: ``"postgresql"`` or ``"sqlite"``, and the redacted target."""
    text = str(target)
    return ("postgresql" if is_postgres_url(text) else "sqlite"), redact(text)
