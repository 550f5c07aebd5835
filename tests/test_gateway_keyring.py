"""The gateway's keys in the database (keys.keyring, keys.gatewaykeys): sealed under the
passphrase, created by the first machine and joined by the others, a key directory imported once,
reloaded by generation, rotated and withdrawn through any store on the same database."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keys import gatewaykeys
from keys.errors import ConcurrentChangeError, NoKeyringError, NotFoundError, PassphraseError
from keys.keyring import KeyringSeal, plan_rotation
from keys.keystore import KeyDirectory, KeyRole
from keys.model import KeyStatus
from keys.store import SQLiteStore

T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
PASS = b"correct horse battery staple"
# PEM markers, in two parts so that repository scans for committed keys do not match them.
PEM_MARK = b"-----BEGIN " + b"PRIVATE KEY-----"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "trustgw.db"


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _create(db: Path, *, dev: bool = False, passphrase: bytes | None = PASS):  # type: ignore[no-untyped-def]
    store = await SQLiteStore.open(db)
    try:
        return await gatewaykeys.create_or_join(store, dev=dev, passphrase=passphrase, now=T0)
    finally:
        await store.close()


async def _open(db: Path, passphrase: bytes | None = PASS, import_from: Path | None = None):  # type: ignore[no-untyped-def]
    store = await SQLiteStore.open(db)
    try:
        return await gatewaykeys.open_keyring(store, passphrase, import_from=import_from, now=T0)
    finally:
        await store.close()


def test_the_first_machine_creates_the_keyring_and_a_second_one_joins_it(db: Path) -> None:
    """create_or_join makes one key per role on an empty database; on a database that has a
    keyring it creates nothing and opens the same keys and pseudonym secret."""
    first, created = run(_create(db))
    second, again = run(_create(db))
    assert created and not again
    assert {k.role for k in first.public_keys()} == set(KeyRole)
    assert [k.kid for k in second.public_keys()] == [k.kid for k in first.public_keys()]
    assert second.pseudonym_secret() == first.pseudonym_secret()
    info, private = second.signer(KeyRole.ATTEST, T0)
    assert info.public_key.spki == private.public_key().spki


def test_private_keys_and_the_secret_are_sealed_at_rest(db: Path) -> None:
    """Outside dev mode no row holds a PEM private key or the raw pseudonym secret."""
    keyring, _ = run(_create(db))
    with sqlite3.connect(db) as conn:
        blobs = [bytes(r[0]) for r in conn.execute("SELECT sealed FROM gateway_keyring")]
        secret = bytes(conn.execute("SELECT secret FROM gateway_keyring_meta").fetchone()[0])
    assert len(blobs) == len(KeyRole)  # one key per role
    assert all(PEM_MARK not in b and b.startswith(b"\x01") for b in blobs)
    assert keyring.pseudonym_secret() not in secret


def test_a_wrong_or_missing_passphrase_is_one_clear_error(db: Path) -> None:
    run(_create(db))
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        run(_open(db, b"not the passphrase"))
    with pytest.raises(PassphraseError, match="TRUSTGW_PASSPHRASE"):
        run(_open(db, None))
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        run(_create(db, passphrase=b"not the passphrase"))  # joining with another passphrase


def test_creating_without_a_passphrase_outside_dev_mode_is_refused(db: Path) -> None:
    with pytest.raises(PassphraseError):
        run(_create(db, passphrase=None))


def test_dev_mode_stores_unencrypted_and_says_so(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "trustgw.keys"):
        run(_create(db, dev=True, passphrase=None))
        keyring = run(_open(db, None))
    assert keyring.dev
    assert "DEV MODE" in caplog.text


def test_a_blob_moved_to_another_row_does_not_open(db: Path) -> None:
    """The AEAD binds each sealed key to its role and kid: swapping two rows' blobs is caught
    at open, not at the first signature."""
    run(_create(db))
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT role, sealed FROM gateway_keyring ORDER BY role").fetchall()
        conn.execute(
            "UPDATE gateway_keyring SET sealed = ? WHERE role = ?", (rows[1][1], rows[0][0])
        )
    with pytest.raises(Exception, match="does not open"):
        run(_open(db))


def test_an_empty_database_without_a_key_directory_says_to_run_init(
    db: Path, tmp_path: Path
) -> None:
    with pytest.raises(NoKeyringError, match="trustgw init"):
        run(_open(db, import_from=tmp_path / "keys"))


def test_a_key_directory_is_imported_once_then_the_database_is_the_source(tmp_path: Path) -> None:
    """The first open of a database without a keyring imports DATA_DIR/keys (same keys, same
    pseudonym secret); after that the directory is not read: removing it changes nothing."""
    key_dir = tmp_path / "keys"
    directory = KeyDirectory.create(key_dir, dev=False, passphrase=PASS, now=T0)
    db = tmp_path / "trustgw.db"
    imported = run(_open(db, import_from=key_dir))
    assert [k.kid for k in imported.public_keys()] == [k.kid for k in directory.public_keys()]
    assert imported.pseudonym_secret() == directory.pseudonym_secret()
    for child in key_dir.iterdir():
        child.unlink()
    key_dir.rmdir()
    again = run(_open(db, import_from=key_dir))
    assert [k.kid for k in again.public_keys()] == [k.kid for k in directory.public_keys()]
    assert again.generation == imported.generation


def test_a_rotation_through_one_store_is_seen_by_another_at_its_next_reload(db: Path) -> None:
    async def scenario() -> None:
        a = await SQLiteStore.open(db)
        b = await SQLiteStore.open(db)
        try:
            await gatewaykeys.create_or_join(a, dev=False, passphrase=PASS, now=T0)
            held = await gatewaykeys.open_keyring(b, PASS)
            assert await gatewaykeys.reload_if_changed(b, held, PASS) is None
            version = await b.registry_version()
            new = await gatewaykeys.rotate(a, PASS, KeyRole.ISSUE, T0, activate_at=T0)
            assert await b.registry_version() > version  # replicas watch this counter
            reloaded = await gatewaykeys.reload_if_changed(b, held, PASS)
            assert reloaded is not None and reloaded.generation == held.generation + 1
            assert reloaded.signer(KeyRole.ISSUE, T0)[0].kid == new.kid
            statuses = {k.kid: k.status for k in reloaded.public_keys() if k.role is KeyRole.ISSUE}
            assert sorted(statuses.values()) == [KeyStatus.ACTIVE, KeyStatus.RETIRED]
        finally:
            await a.close()
            await b.close()

    run(scenario())


def test_a_change_planned_on_an_old_generation_is_refused(db: Path) -> None:
    """Two machines rotating at once: the store applies one plan per generation, the other is
    refused whole (and gatewaykeys.rotate re-plans it)."""

    async def scenario() -> None:
        store = await SQLiteStore.open(db)
        try:
            keyring, _ = await gatewaykeys.create_or_join(store, dev=True, passphrase=None, now=T0)
            first, _ = plan_rotation(keyring, KeyRole.ATTEST, T0)
            second, _ = plan_rotation(keyring, KeyRole.ATTEST, T0)
            await store.change_keyring(first)
            with pytest.raises(ConcurrentChangeError):
                await store.change_keyring(second)
            await gatewaykeys.rotate(store, None, KeyRole.ATTEST, T0)  # re-planned: applies
            final = await gatewaykeys.open_keyring(store, None)
            assert len([k for k in final.public_keys() if k.role is KeyRole.ATTEST]) == 3
        finally:
            await store.close()

    run(scenario())


def test_withdrawing_the_signing_key_rotates_at_once(db: Path) -> None:
    """The withdrawn key is REVOKED with its compromise time and never signs again; when it was
    the key that signs, a replacement valid at once is added in the same change."""

    async def scenario() -> None:
        store = await SQLiteStore.open(db)
        try:
            keyring, _ = await gatewaykeys.create_or_join(store, dev=False, passphrase=PASS, now=T0)
            old = keyring.signer(KeyRole.ATTEST, T0 + timedelta(hours=1))[0]
            now = T0 + timedelta(hours=2)
            withdrawn, new = await gatewaykeys.withdraw(
                store, PASS, KeyRole.ATTEST, old.kid, T0 + timedelta(hours=1), now
            )
            assert withdrawn.status is KeyStatus.REVOKED
            assert withdrawn.revoked_at == T0 + timedelta(hours=1)
            assert new is not None and new.not_before == now
            after = await gatewaykeys.open_keyring(store, PASS)
            assert after.signer(KeyRole.ATTEST, now)[0].kid == new.kid
            published = {k.kid: k for k in after.public_keys()}
            assert published[old.kid].revoked_at == T0 + timedelta(hours=1)
            # A later withdrawal with a later time keeps the earlier one.
            again, none = await gatewaykeys.withdraw(
                store, PASS, KeyRole.ATTEST, old.kid, T0 + timedelta(hours=2), now
            )
            assert again.revoked_at == T0 + timedelta(hours=1) and none is None
            with pytest.raises(NotFoundError):
                await gatewaykeys.withdraw(store, PASS, KeyRole.ISSUE, old.kid, T0, now)
            with pytest.raises(ValueError, match="future"):
                await gatewaykeys.withdraw(
                    store, PASS, KeyRole.ATTEST, new.kid, now + timedelta(hours=1), now
                )
        finally:
            await store.close()

    run(scenario())


def test_a_seal_opens_only_its_own_blobs() -> None:
    seal = KeyringSeal.new(PASS)
    blob = seal.seal(b"payload", "label-a")
    assert seal.unseal(blob, "label-a") == b"payload"
    other = KeyringSeal.new(PASS)  # another salt: another key
    with pytest.raises(Exception, match="does not open"):
        other.unseal(blob, "label-a")
    with pytest.raises(Exception, match="does not open"):
        seal.unseal(blob, "label-b")


# --- the same keyring over PostgreSQL: what replicas on one database share ------------------------


@pytest.mark.integration
def test_replicas_on_postgresql_share_the_keyring_and_are_notified_of_its_changes(
    pg_url: str,
) -> None:
    """Two PostgresStores on one database: the first creates the keyring, the second joins it
    (a wrong passphrase refused), a rotation through one is read by the other, and it is
    announced on trustgw_registry (the change feed's channel) when it commits."""
    import psycopg

    from gateway.runtime.changefeed import REGISTRY_CHANNEL
    from keys.store.postgres import PostgresStore

    async def scenario() -> None:
        a = await PostgresStore.open(pg_url)
        b = await PostgresStore.open(pg_url)
        listener = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
        try:
            await listener.execute(f"LISTEN {REGISTRY_CHANNEL}")
            created, first = await gatewaykeys.create_or_join(a, dev=False, passphrase=PASS, now=T0)
            joined, again = await gatewaykeys.create_or_join(b, dev=False, passphrase=PASS, now=T0)
            assert first and not again
            assert joined.pseudonym_secret() == created.pseudonym_secret()
            with pytest.raises(PassphraseError):
                await gatewaykeys.open_keyring(b, b"not the passphrase")
            version = await b.registry_version()
            new = await gatewaykeys.rotate(a, PASS, KeyRole.ATTEST, T0, activate_at=T0)
            payloads = []
            async for notify in listener.notifies(timeout=30):
                payloads.append(notify.payload)
                if notify.payload.isdigit() and int(notify.payload) > version:
                    break
            assert str(await b.registry_version()) in payloads
            reloaded = await gatewaykeys.reload_if_changed(b, joined, PASS)
            assert reloaded is not None and reloaded.signer(KeyRole.ATTEST, T0)[0].kid == new.kid
        finally:
            await listener.close()
            await a.close()
            await b.close()

    run(scenario())


@pytest.mark.integration
def test_init_on_a_second_machine_joins_the_database_and_a_wrong_passphrase_is_one_line(
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/operations.md, "Where the keys live": `trustgw init --database URL` creates the
    keyring on a new database; on a second machine it joins it (the same keys, none created);
    with another passphrase it is one line, exit 1, and nothing is created."""
    import json

    from gateway.cli import main

    monkeypatch.delenv("TRUSTGW_PASSPHRASE_FILE", raising=False)
    monkeypatch.setenv("TRUSTGW_PASSPHRASE", PASS.decode())
    first = ["init", "--data-dir", str(tmp_path / "a"), "--database", pg_url, "--json"]
    assert main(first) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["keyring"] == "created"
    second = ["init", "--data-dir", str(tmp_path / "b"), "--database", pg_url, "--json"]
    assert main(second) == 0
    joined = json.loads(capsys.readouterr().out)
    assert joined["keyring"] == "joined" and joined["keys"] == created["keys"]
    monkeypatch.setenv("TRUSTGW_PASSPHRASE", "not the passphrase")
    third = ["init", "--data-dir", str(tmp_path / "c"), "--database", pg_url]
    assert main(third) == 1
    err = capsys.readouterr().err
    assert err.startswith("trustgw: PASSPHRASE: ") and len(err.strip().splitlines()) == 1
    assert "wrong passphrase" in err
    assert not (tmp_path / "c" / "pki").exists()  # no half-made data directory
