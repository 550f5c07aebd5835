"""The audit trail: every registry change is chained; tampering with the SQLite file is found."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from trust_support import DAY, T0, Harness, harness, key, scenario

from keys import audit
from keys.audit import AuditEntry, AuditHead
from keys.errors import AuditIntegrityError
from keys.partner import PartnerSigner
from keys.store import SQLiteStore

X = PartnerSigner.generate("110000")
HOLDER = "110101199003070011"


async def changes(h: Harness) -> None:
    """One of each kind of registry change."""
    await h.onboard(X)
    await h.publish(X, X.keyset(1, (key("k1"),), expires=T0 + DAY))
    await h.publish(X, X.keyset(2, (key("k2"),), expires=T0 + DAY))
    await h.trust.revoke_key(X.key_revocation("k2", T0), caller_region="110000", now=T0)
    await h.trust.publish_revocations(
        X.revocations("b1", T0, code_ids=["c1"], holder_ids=[HOLDER]),
        caller_region="110000",
        now=T0,
    )
    await h.registry.set_region_enabled("110000", False, actor="operator:cli", now=T0)


def prepared(tmp_path: Path) -> Path:
    db = tmp_path / "r.db"
    scenario(db, changes)
    return db


def verify(db: Path, expected: AuditHead | None = None) -> AuditHead:
    async def main() -> AuditHead:
        store = await SQLiteStore.open(db)
        try:
            return await audit.verify_store(store, expected)
        finally:
            await store.close()

    return asyncio.run(main())


def rows(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT * FROM audit_log ORDER BY seq").fetchall()


@pytest.mark.doc("trust-registry.md §10")
def test_every_change_is_recorded_with_who_what_when_before_and_after(tmp_path: Path) -> None:
    db = prepared(tmp_path)

    async def read(h: Harness) -> list[AuditEntry]:
        return (await h.store.read_audit(0, 100))[1]

    entries = scenario(db, read)
    assert [(e.actor, e.action) for e in entries] == [
        ("operator:test", "partner.install"),
        ("partner:110000", "keyset.apply"),
        ("partner:110000", "keyset.apply"),
        ("partner:110000", "key.revoke"),
        ("partner:110000", "revocations.apply"),
        ("operator:cli", "region.disable"),
    ]
    assert all(e.at == T0 and e.region == "110000" for e in entries)
    second = entries[2]
    assert second.before is not None and second.after is not None
    assert [k["kid"] for k in second.before["keys"]] == ["k1"]
    assert [k["kid"] for k in second.after["keys"]] == ["k2"]
    assert entries[4].after == {
        "batch_id": "b1",
        "codes": 1,
        "conversions_revoked": 0,
        "digest": entries[4].after["digest"],  # type: ignore[index]
        "effective_at": int(T0.timestamp()),
        "holders": 1,
    }
    assert verify(db) == AuditHead(6, entries[-1].hash)


@pytest.mark.doc("trust-registry.md §6", "trust-registry.md §10")
def test_the_audit_trail_holds_no_identifiers_of_people(tmp_path: Path) -> None:
    db = prepared(tmp_path)
    with sqlite3.connect(db) as conn:
        (pseudonym,) = conn.execute("SELECT holder FROM holder_revocations").fetchone()
    text = json.dumps(rows(db), default=str)
    from keys.pseudonym import holder_hash

    assert HOLDER not in text and holder_hash("110000", HOLDER) not in text
    assert pseudonym not in text


def _edit_actor(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE audit_log SET actor = 'partner:120000' WHERE seq = 2")


def _edit_and_rehash(conn: sqlite3.Connection) -> None:
    """The attacker also recomputes the edited entry's own hash: the next entry gives it away."""
    row = conn.execute("SELECT * FROM audit_log WHERE seq = 3").fetchone()
    entry = AuditEntry(
        row[0], T0, "operator:evil", row[3], row[4],
        json.loads(row[5]), json.loads(row[6]), row[7], "",
    )  # fmt: skip
    conn.execute(
        "UPDATE audit_log SET actor = ?, at = ?, hash = ? WHERE seq = 3",
        (entry.actor, row[1], entry.compute_hash()),
    )


def _edit_after_json(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE audit_log SET after = replace(after, '\"k2\"', '\"kX\"') WHERE seq = 3")


def _remove_middle(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM audit_log WHERE seq = 3")


def _remove_middle_and_renumber(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM audit_log WHERE seq = 3")
    conn.execute("UPDATE audit_log SET seq = seq - 1 WHERE seq > 3")


def _reorder(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE audit_log SET seq = -1 WHERE seq = 2")
    conn.execute("UPDATE audit_log SET seq = 2 WHERE seq = 3")
    conn.execute("UPDATE audit_log SET seq = 3 WHERE seq = -1")


def _truncate(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM audit_log WHERE seq > 4")


def _truncate_all(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM audit_log")


def _edit_head(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE audit_head SET count = count + 1")


def _unreadable_row(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE audit_log SET before = '{not json' WHERE seq = 3")


@pytest.mark.doc("trust-registry.md §10")
@pytest.mark.parametrize(
    ("tamper", "first_bad"),
    [
        pytest.param(_edit_actor, "2", id="edited-entry"),
        pytest.param(_edit_and_rehash, "4", id="edited-entry-with-its-hash-recomputed"),
        pytest.param(_edit_after_json, "3", id="edited-after-state"),
        pytest.param(_remove_middle, "3", id="removed-entry"),
        pytest.param(_remove_middle_and_renumber, "3", id="removed-entry-renumbered"),
        pytest.param(_reorder, "2", id="reordered-entries"),
        pytest.param(_truncate, "4", id="truncated-tail"),
        pytest.param(_truncate_all, "0", id="everything-deleted"),
        pytest.param(_edit_head, "6", id="edited-head"),
        pytest.param(_unreadable_row, None, id="unreadable-entry"),
    ],
)
def test_verify_detects_tampering_with_the_database_file(
    tmp_path: Path, tamper: Callable[[sqlite3.Connection], None], first_bad: str | None
) -> None:
    db = prepared(tmp_path)
    assert verify(db).count == 6
    with sqlite3.connect(db) as conn:
        tamper(conn)
    with pytest.raises(AuditIntegrityError) as caught:
        verify(db)
    assert caught.value.reason == "AUDIT_TAMPERED"
    if first_bad is not None:
        assert caught.value.metadata["seq"] == first_bad


@pytest.mark.doc("trust-registry.md §10")
def test_a_consistent_rewrite_is_caught_only_by_a_recorded_checkpoint(tmp_path: Path) -> None:
    """Truncating the tail *and* fixing the head leaves a valid chain: an externally recorded
    head (what ``trustgw audit verify`` prints) still exposes it."""
    db = prepared(tmp_path)
    checkpoint = verify(db)
    with sqlite3.connect(db) as conn:
        (hash4,) = conn.execute("SELECT hash FROM audit_log WHERE seq = 4").fetchone()
        conn.execute("DELETE FROM audit_log WHERE seq > 4")
        conn.execute("UPDATE audit_head SET count = 4, hash = ?", (hash4,))
    assert verify(db) == AuditHead(4, hash4)
    with pytest.raises(AuditIntegrityError, match="checkpoint"):
        verify(db, expected=checkpoint)


def test_an_older_checkpoint_verifies_against_a_longer_log(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    scenario(db, lambda h: h.onboard(X))
    early = verify(db)
    scenario(db, changes)  # the same partner file again is a no-op; the rest appends
    assert verify(db, expected=early).count == 6


def test_the_chain_survives_reopening_and_many_chunks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(audit, "VERIFY_CHUNK", 2)
    db = prepared(tmp_path)
    assert verify(db).count == 6


@pytest.mark.doc("trust-registry.md §10")
def test_verify_chain_on_records() -> None:
    event = audit.AuditEvent("operator:cli", "region.upsert", T0, "110000", None, {"a": 1})
    first = audit.chain(event, AuditHead(0, audit.GENESIS_HASH))
    second = audit.chain(event, AuditHead(1, first.hash))
    assert audit.verify_chain([first, second], AuditHead(2, second.hash)).count == 2
    with pytest.raises(AuditIntegrityError):
        audit.verify_chain([second, first], AuditHead(2, first.hash))
    with pytest.raises(ValueError):
        audit.AuditEvent("nobody", "x", T0)


@pytest.mark.doc("trust-registry.md §7", "trust-registry.md §10")
def test_a_store_write_and_its_audit_entry_are_one_transaction(tmp_path: Path) -> None:
    """If appending the audit entry fails, the change is rolled back with it."""
    db = tmp_path / "r.db"
    scenario(db, lambda h: h.onboard(X))
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE audit_head")  # the next append cannot read the head

    async def body(h: Harness) -> None:
        # A database missing a table is damaged, not down: not UNAVAILABLE (which clients
        # retry) but the database's own error, reported as INTERNAL; nothing is written.
        with pytest.raises(sqlite3.OperationalError, match="no such table: audit_head"):
            await h.publish(X, X.keyset(1, (key("k1"),), expires=T0 + DAY))
        assert await h.store.list_keys("110000") == []

    async def main() -> None:
        async with harness(db) as h:
            await body(h)

    asyncio.run(main())
