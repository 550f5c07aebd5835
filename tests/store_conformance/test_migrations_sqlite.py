"""SQLite upgrades from every earlier schema version, with data in it, to the current one.

Each old schema is built by applying the migrations up to version k (every released version
but the last); rows are
written the way a gateway of that version wrote them (through the store where the table's shape
has not changed since, as plain SQL where it has); the current code then migrates the file, and
every row is still there and readable through the role protocols. Schema 4 keys stored code ids,
so the upgrade is given the gateway's secret (refusal without it: tests/test_store_migration.py).
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import keys.store.schema as schema_module
from keys.audit import verify_store
from keys.model import KeyStatus
from keys.personal import RecognitionEntry
from keys.pseudonym import Pseudonymiser, code_hash
from keys.records import CodeRevocation, HolderRevocation
from keys.store import SQLiteStore, declarations
from store_conformance.data import (
    ACTOR,
    BEIJING,
    FAR_FUTURE,
    T0,
    ZHEJIANG,
    anchors,
    conversion,
    digest,
    keyset,
    region_key,
    revocation_batch,
    stock_seed,
)

SECRET = b"c" * 32
KEYER = Pseudonymiser(SECRET)
RAW = "33010219900307123X"  # a partner code id that is a holder's ID number
REVOKED = "33010219851224567X"
JOB = digest("stock file")
t = int(T0.timestamp())
VERSIONS = [version for version, _ in schema_module.MIGRATIONS]  # every released schema


def _seed_v1(conn: sqlite3.Connection) -> None:
    """Schema 1 had no audit trail: regions and keys as the first gateway wrote them."""
    key = region_key("110000", 1)
    revoked = region_key("330000", 2)
    conn.executemany(
        "INSERT INTO regions (code, name, mode, max_age_seconds, enabled) VALUES (?, ?, ?, ?, ?)",
        [
            (r.code, r.name, r.mode.value, int(r.max_age.total_seconds()), 1)
            for r in (BEIJING, ZHEJIANG)
        ],
    )
    conn.executemany(
        "INSERT INTO region_keys (region, kid, alg, spki, not_before, not_after, status,"
        " revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (k.region, k.kid, k.alg.value, k.public_key.spki, int(k.not_before.timestamp()),
             int(k.not_after.timestamp()), status, at)
            for k, status, at in ((key, "active", None), (revoked, "revoked", t))
        ],
    )  # fmt: skip
    conn.execute("UPDATE registry_version SET version = 4")


def _seed_conversion(conn: sqlite3.Connection, version: int) -> None:
    """A partner conversion keyed by the raw source code id (before schema 4)."""
    columns = "region, source_code_id, holder, converted_code_id, converted_code, issued_at," \
        " expires_at, created_at, revoked_at"  # fmt: skip
    values: tuple[Any, ...] = ("330000", RAW, "h1-old", "SD-old", "SD1:old", t, t + 86400, t, None)
    if version >= 2:
        columns += ", source_hash"
        values += (code_hash("330000", RAW),)
    marks = ", ".join("?" * len(values))
    conn.execute(f"INSERT INTO conversions ({columns}) VALUES ({marks})", values)  # noqa: S608


def _seed_v2_revocations(conn: sqlite3.Connection) -> None:
    """Revocations as schema 2 and 3 kept them: the partner's unkeyed code hashes."""
    conn.execute(
        "INSERT INTO code_revocations (region, code_hash, effective_at, batch_id)"
        " VALUES ('330000', ?, ?, 'b-1')",
        (code_hash("330000", REVOKED), t),
    )
    conn.execute(
        "INSERT INTO holder_revocations (region, holder, effective_at, batch_id)"
        " VALUES ('330000', 'h1-revoked', ?, 'b-1')",
        (t,),
    )


def _seed_v3_recognitions(conn: sqlite3.Connection) -> None:
    """The recognition log as schema 3 kept it: sha256("region|id") of each decided code."""
    conn.execute(
        "INSERT INTO recognitions (at, region, mode, decision, reason, holder, code_hash, kid,"
        " request_id) VALUES (?, '330000', 'convert', 'recognised', 'RECOGNISED', 'h1-old', ?,"
        " 'k1', 'r1'), (?, '330000', '', 'refused', 'MALFORMED', '', '', '', 'r2')",
        (t, code_hash("330000", RAW), t),
    )


async def _write_through_the_store(store: SQLiteStore, version: int) -> None:
    """What a gateway of schema 2 or later wrote through tables unchanged since."""
    await store.install_partner(BEIJING, anchors(50), replace=False, actor=ACTOR, now=T0)
    await store.install_partner(ZHEJIANG, anchors(60), replace=False, actor=ACTOR, now=T0)
    await store.add_key(region_key("330000", 2), actor=ACTOR, now=T0)
    await store.revoke_key("330000", region_key("330000", 2).kid, T0, actor=ACTOR, now=T0)
    await store.apply_keyset(keyset("110000", 1, (region_key("110000", 1),), expected_version=0))
    await store.record_trustlist(digest("list 1"), b'{"v":1}', expected_latest=0, now=T0)
    if version >= 4:  # code ids keyed: the same rows as the SQL seeds of older versions
        await store.claim_conversions(
            [
                conversion(
                    KEYER.code_key("330000", RAW), holder="h1-old", converted_code_id="SD-old",
                    converted_code="SD1:old",
                )
            ]
        )  # fmt: skip
        await store.apply_revocation_batch(
            revocation_batch(
                "330000", "b-1", codes=(KEYER.code_key("330000", REVOKED),), holders=("h1-revoked",)
            )
        )
        await store.append_recognitions(
            [
                RecognitionEntry(T0, "330000", "convert", "recognised", "RECOGNISED", "h1-old",
                                 KEYER.code_key("330000", RAW), "k1", "r1"),
                RecognitionEntry(T0, "330000", "", "refused", "MALFORMED", request_id="r2"),
            ]
        )  # fmt: skip


async def _readable(store: SQLiteStore, version: int) -> dict[str, Any]:
    """What the protocols read of the tables whose shape is the same at ``version`` and now."""
    state: dict[str, Any] = {
        "version": await store.registry_version(),
        "regions": await store.list_regions(),
        "keys": await store.list_keys(),
    }
    if version >= 2:
        state["anchors"] = await store.all_anchors()
        state["trust"] = await store.region_trust("110000")
        state["audit"] = await store.read_audit(0, 1000)
        state["trustlist"] = await store.latest_trustlist()
        state["submission"] = await store.find_submission(
            keyset("110000", 1, (region_key("110000", 1),), expected_version=0).digest
        )
    return state


def _build(path: Path, version: int, arun: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A database at schema ``version`` with rows in every table that version has."""
    with monkeypatch.context() as patch:
        earlier = tuple(m for m in schema_module.MIGRATIONS if m[0] <= version)
        patch.setattr(schema_module, "MIGRATIONS", earlier)
        patch.setattr(schema_module, "SCHEMA_VERSION", version)
        # A gateway of that schema had no declarations to revoke with a batch or to purge.
        patch.setattr(declarations, "revoke_for_batch", lambda conn, change: 0)
        patch.setattr(declarations, "purge", lambda conn, before, dry_run: 0)

        async def create() -> Any:
            store = await SQLiteStore.open(path)
            try:
                if version >= 2:
                    await _write_through_the_store(store, version)
                    return await _readable(store, version)
                return None
            finally:
                await store.close()

        state = arun(create())
    with sqlite3.connect(path) as conn:
        if version == 1:
            _seed_v1(conn)
        if version < 4:  # from schema 4 on, the store writes these (_write_through_the_store)
            _seed_conversion(conn, version)
            if version >= 2:
                _seed_v2_revocations(conn)
            if version >= 3:
                _seed_v3_recognitions(conn)
        if version >= 3:
            for statement, params in stock_seed(JOB):
                conn.execute(statement, params)
        found = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
    conn.close()
    assert found == version
    return state


@pytest.mark.parametrize("version", VERSIONS[:-1])
def test_a_database_of_an_earlier_schema_upgrades_with_every_row_readable(
    tmp_path: Path, arun: Any, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    path = tmp_path / "old.db"
    before = _build(path, version, arun, monkeypatch)

    async def upgrade() -> None:
        store = await SQLiteStore.open(path, code_keys=KEYER)
        try:
            if before is not None:
                assert await _readable(store, version) == before
            else:  # schema 1: what was written by hand
                assert await store.registry_version() == 4
                assert await store.list_regions() == [BEIJING, ZHEJIANG]
                keys = await store.list_keys()
                assert [k.kid for k in keys] == [region_key("110000", 1).kid,
                                                 region_key("330000", 2).kid]  # fmt: skip
                assert (keys[1].status, keys[1].revoked_at) == (KeyStatus.REVOKED, T0)
            head = await verify_store(store)  # the chain (empty from schema 1) still verifies
            assert head.count == (0 if version == 1 else 5 if version < 4 else 6)
            # The conversion, found by its code key now: the same home code as before.
            [stored] = await store.claim_conversions(
                [conversion(KEYER.code_key("330000", RAW), converted_code_id="SD-new")]
            )
            assert (stored.converted_code_id, stored.converted_code, stored.holder) == (
                "SD-old", "SD1:old", "h1-old",
            )  # fmt: skip
            assert stored.expires_at == T0 + timedelta(days=1)
            codes, holders = await store.list_revocations("330000")
            if version >= 2:
                assert codes == [CodeRevocation("330000", KEYER.code_key("330000", REVOKED), T0)]
                assert holders == [HolderRevocation("330000", "h1-revoked", T0)]
            else:
                assert (codes, holders) == ([], [])
            counted = await store.purge(
                recognitions_before=FAR_FUTURE, conversions_before=FAR_FUTURE, dry_run=True
            )
            assert (counted.recognitions, counted.conversions, counted.stock_conversions) == (
                2 if version >= 3 else 0, 1, 2 if version >= 3 else 0,
            )  # fmt: skip
            if version >= 3:
                job = await store.open_stock_job(JOB, "city.csv", T0)
                assert job.committed_rows == 2 and job.counts["converted"] == 2
        finally:
            await store.close()

    arun(upgrade())
    with sqlite3.connect(path) as conn:
        applied = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    conn.close()
    assert applied == VERSIONS
