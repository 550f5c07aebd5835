"""The PostgreSQL server of the tests: where it is, a fresh database per test, and its absence.

The server's address is ``$TRUSTGW_TEST_DATABASE`` (default
``postgresql://postgres@127.0.0.1:5432/test``, the project machines' server: trust
authentication). That database is only the door: each test gets a database of its own, created
empty under a unique name (``trustgw_t_<pid>_<random>``) and dropped after the test (even if it
left connections open: ``DROP DATABASE ... WITH (FORCE)``), so tests never see each other's data
and the ``test`` database's public schema is never written.

Without a reachable server every test that asks for a database is skipped with one reason that
says which address was tried. Under ``CI=true`` (``.ci/run`` sets it) that skip is a **failure**
instead, so the PostgreSQL backend can never go silently untested in CI.

The fixtures, imported by ``tests/conftest.py``: ``pg_url`` (a fresh database for one test) and
``pg_module_url`` (one for a whole module, for expensive setups). Tests that use them open
sockets: mark them ``integration`` (``tests/support/tiers.py``). Helpers for tests that need
more: :func:`require_server`, :func:`fresh_database`, :func:`drop_database`, :func:`admin`.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

DATABASE_ENV = "TRUSTGW_TEST_DATABASE"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
CI_ENV = "CI"
PREFIX = "trustgw_t_"
CONNECT_TIMEOUT_SECONDS = 5


def server_url() -> str:
    """The test server's address: ``$TRUSTGW_TEST_DATABASE`` or :data:`DEFAULT_URL`."""
    return os.environ.get(DATABASE_ENV) or DEFAULT_URL


def in_ci() -> bool:
    """Whether the run is CI's (``CI=true``): an unreachable server then fails the test."""
    return os.environ.get(CI_ENV, "").strip().lower() in ("1", "true", "yes")


def with_database(url: str, name: str) -> str:
    """``url`` naming the database ``name`` instead of its own."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _shown(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username
    return urlunsplit((parts.scheme, f"{user}@{netloc}" if user else netloc, parts.path, "", ""))


@functools.cache
def unreachable() -> str | None:
    """Why the test server cannot be used (one line), or None when it answers. Asked once."""
    url = server_url()
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS, autocommit=True) as c:
            c.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no PostgreSQL server at {_shown(url)} (${DATABASE_ENV}): {first}"
    return None


def require_server() -> None:
    """Skip the calling test without a server; under ``CI=true`` fail it instead."""
    reason = unreachable()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"{reason}; CI=true requires the PostgreSQL tests to run", pytrace=False)
    pytest.skip(reason)


@contextmanager
def admin() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to the server's own database (create and drop databases)."""
    with psycopg.connect(
        server_url(), connect_timeout=CONNECT_TIMEOUT_SECONDS, autocommit=True
    ) as conn:
        yield conn


def fresh_database() -> str:
    """Create an empty database with a unique name and return its URL."""
    require_server()
    name = f"{PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
    with admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url(), name)


def drop_database(url: str) -> None:
    """Drop a database :func:`fresh_database` made, closing whatever is still connected."""
    name = urlsplit(url).path.lstrip("/")
    if not name.startswith(PREFIX):
        raise ValueError(f"{name!r} is not a test database")
    with admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def database() -> Iterator[str]:
    """A fresh database for the ``with`` block, dropped after it."""
    url = fresh_database()
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of an empty database of this test's own, dropped after the test."""
    with database() as url:
        yield url


@pytest.fixture(scope="module")
def pg_module_url() -> Iterator[str]:
    """The URL of an empty database shared by one test module, dropped after it."""
    with database() as url:
        yield url
