"""The connection surface the aggregate modules use, the same on SQLite and PostgreSQL.

Every aggregate (``regions``, ``trust``, ``audit``, ``trustlists``, ``conversions``,
``personal``) is plain functions of a :class:`Connection`: ``execute`` (returning a
:class:`Cursor`) and ``executemany``, with ``?`` placeholders (or ``:name`` with a mapping).
``sqlite3.Connection`` is one as it is; the PostgreSQL backend wraps its psycopg connection
(:class:`keys.store.pgdb.PgConnection`) and translates the placeholders, so that both backends
run the very same SQL. The SQL is therefore written in the dialect both accept: ``ON CONFLICT``,
row values, ``CASE`` rather than SQLite's scalar ``MIN(a, b)`` or PostgreSQL's ``LEAST``.

:data:`INTEGRITY_ERRORS` are the constraint violations of either backend, the ones an aggregate
turns into a domain error (:class:`keys.errors.AlreadyExistsError` ...).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any, Protocol

import psycopg


class Cursor(Protocol):
    """What a statement returns: its rows and how many rows it changed."""

    @property
    def rowcount(self) -> int:
        """Rows changed by an INSERT, UPDATE or DELETE."""
        ...

    def fetchone(self) -> Any:
        """The next row, or None."""
        ...

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        ...

    def fetchmany(self, size: int) -> list[Any]:
        """Up to ``size`` of the remaining rows (none when done)."""
        ...


class Connection(Protocol):
    """The part of a DB-API connection the aggregate modules use, inside one transaction."""

    def execute(self, sql: str, params: Any = (), /) -> Cursor:
        """Run one statement with bound parameters."""
        ...

    def executemany(self, sql: str, params: Iterable[Any], /) -> Any:
        """Run one statement for each parameter set, as one batch."""
        ...


#: Constraint violations (unique, foreign key, check) of either backend.
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)
