"""Schema migrations every backend shares: from empty to current, once; a newer database refused;
two stores migrating one empty database at once; opening without migrating (the ``database``
setting's :func:`keys.store.factory.open_store`, as ``trustgw serve`` does).

Upgrades from each earlier version with data in it are per backend (each has its own migration
list): ``test_migrations_sqlite.py`` and the PostgreSQL module beside it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from gateway.grpc.errors import rich_status
from keys.errors import ConfigurationError, SchemaOutdatedError
from keys.store.factory import open_store, schema_status
from store_conformance.backends import Backend
from store_conformance.data import ACTOR, BEIJING, T0, populate, region_key, snapshot


def test_an_empty_database_is_migrated_to_current_once(backend: Backend, arun: Any) -> None:
    async def scenario() -> dict[str, Any]:
        store = await backend.open()
        try:
            assert backend.schema_version() == backend.expected_version()
            await populate(store)
            return await snapshot(store)
        finally:
            await store.close()

    before = arun(scenario())

    async def reopen() -> dict[str, Any]:
        store = await backend.open()  # nothing left to migrate: the data is as it was
        try:
            return await snapshot(store)
        finally:
            await store.close()

    assert arun(reopen()) == before
    assert backend.schema_version() == backend.expected_version()


def test_a_database_newer_than_the_code_is_refused_and_left_alone(
    backend: Backend, arun: Any
) -> None:
    async def prepare() -> dict[str, Any]:
        store = await backend.open()
        try:
            await populate(store)
            return await snapshot(store)
        finally:
            await store.close()

    before = arun(prepare())
    backend.mark_newer()
    with pytest.raises(ConfigurationError) as caught:
        arun(backend.open())
    error = caught.value
    assert error.reason == "CONFIGURATION" and "upgrade the gateway" in error.message
    assert f"schema version {backend.expected_version() + 1}" in error.message
    assert rich_status(error).code is grpc.StatusCode.FAILED_PRECONDITION
    assert backend.schema_version() == backend.expected_version() + 1
    backend.unmark_newer()

    async def reopen() -> dict[str, Any]:
        store = await backend.open()
        try:
            return await snapshot(store)
        finally:
            await store.close()

    assert arun(reopen()) == before  # the refused open wrote nothing


def test_two_stores_migrating_one_empty_database_at_once_end_at_one_schema(
    backend: Backend, arun: Any
) -> None:
    async def scenario() -> None:
        one, two = await asyncio.gather(backend.open(), backend.open())
        try:
            assert backend.schema_version() == backend.expected_version()
            await one.upsert_region(BEIJING, actor=ACTOR, now=T0)
            await two.add_key(region_key(), actor=ACTOR, now=T0)
            assert await one.list_keys() == await two.list_keys() == [region_key()]
            assert await one.registry_version() == await two.registry_version() == 2
        finally:
            await one.close()
            await two.close()

    arun(scenario())


def test_a_store_opened_without_migrating_refuses_an_empty_database_and_leaves_it(
    backend: Backend, arun: Any
) -> None:
    """``trustgw serve`` never migrates (docs/operations.md, "Upgrading"): a database behind
    the code is SCHEMA_OUTDATED until ``trustgw db migrate``, and stays as it was."""
    status = arun(schema_status(backend.target))
    assert (status.backend, status.current, status.expected, status.outdated) == (
        backend.status_name, 0, backend.expected_version(), True,
    )  # fmt: skip
    with pytest.raises(SchemaOutdatedError) as caught:
        arun(open_store(backend.target, migrate=False))
    error = caught.value
    assert (error.reason, error.current, error.expected) == (
        "SCHEMA_OUTDATED", 0, backend.expected_version(),
    )  # fmt: skip
    assert "trustgw db migrate" in error.message
    assert rich_status(error).code is grpc.StatusCode.FAILED_PRECONDITION
    assert backend.schema_version() == 0


def test_a_migrated_database_opens_without_migrating(backend: Backend, arun: Any) -> None:
    async def scenario() -> None:
        store = await open_store(backend.target)
        try:
            await populate(store)
            before = await snapshot(store)
        finally:
            await store.close()
        status = await schema_status(backend.target)
        assert (status.current, status.outdated) == (backend.expected_version(), False)
        again = await open_store(backend.target, migrate=False)
        try:
            assert await snapshot(again) == before
        finally:
            await again.close()

    arun(scenario())
