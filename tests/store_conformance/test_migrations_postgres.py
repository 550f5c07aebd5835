"""PostgreSQL upgrades from every earlier version of its own migration list to the current one.

Each old schema is built by applying the migrations of :mod:`keys.store.pgschema` up to
version k (every released version but the last), rows of every role are written through the
store at that version, and the current code then migrates the database: every row is still
there and reads back the same through the protocols. (PostgreSQL's schema stored code keys from
its first version: nothing is re-keyed, unlike SQLite's schema 4.)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from keys.audit import verify_store
from keys.personal import StockJob
from keys.store import Store, declarations, pgschema
from store_conformance.backends import PostgresBackend
from store_conformance.data import (
    T0,
    ZHEJIANG,
    anchors,
    conversion,
    digest,
    keyset,
    populate,
    region_key,
    revocation_batch,
    snapshot,
    stock_seed,
)

pytestmark = pytest.mark.integration
JOB = digest("stock file")
STOCK_JOB = StockJob(JOB, "city.csv", 2, {"converted": 2, "green": 2, "read": 2}, T0, T0)


async def _every_role(store: Store) -> dict[str, Any]:
    """Rows of every role, then what the protocols read of them."""
    await populate(store)
    await store.install_partner(ZHEJIANG, anchors(60), replace=False, actor="operator:c", now=T0)
    await store.apply_keyset(keyset("110000", 1, (region_key(seed=3),), expected_version=0))
    await store.apply_revocation_batch(
        revocation_batch("330000", "b-1", codes=("a",), holders=("h1-b",))
    )
    state = await snapshot(store)
    state["conversions"] = await store.claim_conversions([conversion("a"), conversion("b")])
    state["trust"] = await store.region_trust("110000")
    return state


def _seed_stock(url: str) -> None:
    """A stock job as plain rows (the current store's commit may write later tables too)."""
    import psycopg

    with psycopg.connect(url) as conn:
        for statement, params in stock_seed(JOB):
            conn.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [m.version for m in pgschema.MIGRATIONS][:-1])
def test_a_database_of_an_earlier_schema_upgrades_with_every_row_readable(
    pg_url: str, arun: Any, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    backend = PostgresBackend(pg_url)
    with monkeypatch.context() as patch:
        earlier = tuple(m for m in pgschema.MIGRATIONS if m.version <= version)
        patch.setattr(pgschema, "MIGRATIONS", earlier)
        patch.setattr(pgschema, "SCHEMA_VERSION", version)
        # A gateway of that schema had no declarations to revoke with a batch or to purge.
        patch.setattr(declarations, "revoke_for_batch", lambda conn, change: 0)
        patch.setattr(declarations, "purge", lambda conn, before, dry_run: 0)

        async def create() -> dict[str, Any]:
            store = await backend.open()
            try:
                return await _every_role(store)
            finally:
                await store.close()

        before = arun(create())
        assert backend.schema_version() == version
    _seed_stock(pg_url)
    before["counts"] = replace(before["counts"], stock_conversions=2)
    before["stock"] = STOCK_JOB

    async def upgrade() -> dict[str, Any]:
        store = await backend.open()
        try:
            state = await snapshot(store)
            state["conversions"] = await store.claim_conversions([conversion("a"), conversion("b")])
            state["stock"] = await store.open_stock_job(JOB, "city.csv", T0)
            state["trust"] = await store.region_trust("110000")
            assert (await verify_store(store)).count == before["audit"][0].count
            return state
        finally:
            await store.close()

    assert arun(upgrade()) == before
    assert backend.schema_version() == pgschema.SCHEMA_VERSION
