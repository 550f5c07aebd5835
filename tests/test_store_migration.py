"""Schema 4 keys the code ids a schema-3 database holds (issue 8 item 15).

Before schema 4 a partner's code id was stored raw in ``conversions.source_code_id`` with
``sha256("region|id")`` beside it, revocations kept the partner's unkeyed code hashes, and the
recognition log kept ``sha256("region|id")``. The upgrade rewrites every such row into code
keys (HMAC under the gateway's secret); afterwards neither the raw id nor its unkeyed hash is in
any table, nor anywhere in the database's files. Without the secret the upgrade is refused and
the database is left as it was.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.aio import run

import keys.store.schema as schema_module
from keys.errors import ConfigurationError
from keys.model import Mode, Region
from keys.pseudonym import Pseudonymiser, code_hash
from keys.store import SQLiteStore

T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
REGION = "230000"
RAW = "37010219900307123X"  # a partner that uses the holder's ID number as its code id
OTHER = "37010219851224567X"
SECRET = b"m" * 32


def _schema3_database(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database as a schema-3 gateway left it: raw code ids and unkeyed hashes."""
    with monkeypatch.context() as patch:
        patch.setattr(schema_module, "MIGRATIONS", schema_module.MIGRATIONS[:3])
        patch.setattr(schema_module, "SCHEMA_VERSION", 3)

        async def create() -> None:
            store = await SQLiteStore.open(path)
            try:
                await store.upsert_region(
                    Region(REGION, "Heilongjiang", Mode.CONVERT, timedelta(hours=24)), now=T0
                )
            finally:
                await store.close()

        run(create())
    t = int(T0.timestamp())
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO conversions (region, source_code_id, holder, converted_code_id,"
            " converted_code, issued_at, expires_at, created_at, revoked_at, source_hash)"
            " VALUES (?, ?, 'h1-x', 'SD01', 'SD1:e30.c2ln', ?, ?, ?, NULL, ?)",
            (REGION, RAW, t, t + 3600, t, code_hash(REGION, RAW)),
        )
        conn.execute(
            "INSERT INTO code_revocations (region, code_hash, effective_at, batch_id)"
            " VALUES (?, ?, ?, 'b1')",
            (REGION, code_hash(REGION, OTHER), t),
        )
        conn.execute(
            "INSERT INTO recognitions (at, region, mode, decision, reason, holder, code_hash,"
            " kid, request_id) VALUES (?, ?, 'convert', 'recognised', 'RECOGNISED', 'h1-x',"
            " ?, 'k1', 'r1'), (?, ?, '', 'refused', 'MALFORMED', '', '', '', 'r2')",
            (t, REGION, code_hash(REGION, RAW), t, REGION),
        )


def _files(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def _schema(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0])


def test_the_upgrade_keys_every_stored_code_id(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "trustgw.db"
    _schema3_database(path, monkeypatch)
    assert RAW.encode() in _files(path)  # what the upgrade must remove
    keyer = Pseudonymiser(SECRET)

    async def upgrade() -> tuple[object, object, object]:
        store = await SQLiteStore.open(path, code_keys=keyer)
        try:
            conversion = await store.get_conversion(REGION, keyer.code_key(REGION, RAW))
            codes, _ = await store.list_revocations(REGION)
            log = await store.list_recognitions()
            return conversion, codes, log
        finally:
            await store.close()

    conversion, codes, log = run(upgrade())
    assert conversion is not None and conversion.converted_code_id == "SD01"  # kept, re-keyed
    assert [c.code_key for c in codes] == [keyer.code_key(REGION, OTHER)]  # type: ignore[attr-defined]
    assert [e.code_id for e in log] == [keyer.code_key(REGION, RAW), ""]  # type: ignore[attr-defined]
    assert _schema(path) == schema_module.SCHEMA_VERSION
    data = _files(path)
    for raw in (RAW, OTHER):
        assert raw.encode() not in data
        assert code_hash(REGION, raw).encode() not in data
    with sqlite3.connect(path) as conn:
        columns = {
            row[1]
            for table in ("conversions", "code_revocations", "recognitions")
            for row in conn.execute(f"PRAGMA table_info({table})")
        }
    assert {"source_code_id", "source_hash", "code_hash"}.isdisjoint(columns)


def test_the_upgrade_without_the_secret_is_refused_and_changes_nothing(
    tmp_path: Path, monkeypatch
) -> None:
    path = tmp_path / "trustgw.db"
    _schema3_database(path, monkeypatch)
    with pytest.raises(ConfigurationError, match="upgrade it with the gateway's key directory"):
        run(SQLiteStore.open(path))
    assert _schema(path) == 3
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT source_code_id FROM conversions").fetchall() == [(RAW,)]


def test_an_empty_schema3_database_upgrades_without_the_secret(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "trustgw.db"
    with monkeypatch.context() as patch:
        patch.setattr(schema_module, "MIGRATIONS", schema_module.MIGRATIONS[:3])
        patch.setattr(schema_module, "SCHEMA_VERSION", 3)
        run(run_close(path))
    run(run_close(path))
    assert _schema(path) == schema_module.SCHEMA_VERSION


async def run_close(path: Path) -> None:
    store = await SQLiteStore.open(path)
    await store.close()


def test_a_cli_command_on_a_database_that_needs_the_secret_says_so_in_one_line(
    own_data_dir: Path, monkeypatch, capsys
) -> None:
    """docs/operations.md, "Upgrading": commands that open only the database refuse, unchanged."""
    from gateway.cli import main

    path = own_data_dir / "trustgw.db"
    path.unlink()
    _schema3_database(path, monkeypatch)
    capsys.readouterr()
    status = main(["keys", "list", "--data-dir", str(own_data_dir)])
    err = capsys.readouterr().err
    assert status != 0 and err.count("\n") == 1
    assert err.startswith("trustgw: CONFIGURATION: registry database ")
    assert "holds code ids that schema version 4 stores keyed" in err
    assert _schema(path) == 3
