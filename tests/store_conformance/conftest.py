"""Fixtures of the store conformance suite: ``backend``, ``store`` and ``arun``.

``backend`` is parametrized over :data:`store_conformance.backends.BACKENDS`, so every test runs
once per backend (``-k sqlite`` / ``-k postgres`` picks one). The suite needs no asyncio plugin:
``arun(coro)`` runs a coroutine on the test's one event loop, the loop ``store`` was opened on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from keys.store import Store
from store_conformance.backends import BACKENDS, Backend, PostgresBackend, SQLiteBackend


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """One backend, on a database of this test's own."""
    if request.param == "sqlite":
        return SQLiteBackend(tmp_path)
    if request.param == "postgres":
        # A fresh database per test (skipped without a server, failed so under CI=true).
        return PostgresBackend(request.getfixturevalue("pg_url"))
    raise AssertionError(f"unknown backend {request.param}")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The test's event loop (a store's connections may belong to the loop that opened them)."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.fixture
def arun(loop: asyncio.AbstractEventLoop) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """``arun(coro)``: run ``coro`` to completion on the test's loop."""
    return loop.run_until_complete


@pytest.fixture
def store(backend: Backend, loop: asyncio.AbstractEventLoop) -> Iterator[Store]:
    """A store on the backend's fresh database, migrated to the current schema; closed after."""
    opened = loop.run_until_complete(backend.open())
    try:
        yield opened
    finally:
        loop.run_until_complete(opened.close())
