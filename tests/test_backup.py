"""``trustgw backup`` / ``restore`` and the trust list's version floor (docs/operations.md,
"Backups and restore")."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import pytest
from cli_support import Ran, trustgw

from keys.crypto import Algorithm, PrivateKey


def _add_partner_key(capsys: Any, data: Path, tmp_path: Path, kid: str) -> None:
    jwk = tmp_path / f"{kid}.jwk"
    jwk.write_text(json.dumps(PrivateKey.generate(Algorithm.EDDSA).public_key().to_jwk()))
    ran = trustgw(capsys, "keys", "add", "--data-dir", str(data), "--region", "110000",
                  "--public-key", str(jwk), "--kid", kid)  # fmt: skip
    assert ran.status == 0, ran.err


def _publish(capsys: Any, data: Path, out: Path) -> int:
    ran = trustgw(capsys, "trustlist", "export", "--data-dir", str(data), "--out", str(out),
                  "--json")  # fmt: skip
    assert ran.status == 0, ran.err
    return int(ran.json()["version"])


def _verify(capsys: Any, pinned: Path, last: int, listed: Path) -> Ran:
    return trustgw(capsys, "trustlist", "verify", "--pinned", str(pinned), "--last-version",
                   str(last), str(listed))  # fmt: skip


def test_a_restored_gateway_publishes_a_list_that_a_verifier_of_a_newer_one_accepts(
    own_data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    data = own_data_dir
    pinned = tmp_path / "trustgw-keys.json"
    assert (
        trustgw(capsys, "keys", "export", "--data-dir", str(data), "--out", str(pinned)).status == 0
    )
    v_backup = _publish(capsys, data, tmp_path / "at-backup.json")
    backup = tmp_path / "gw.tar.gz"
    ran = trustgw(capsys, "backup", "--data-dir", str(data), "--out", str(backup), "--json")
    assert ran.status == 0, ran.err
    assert ran.json()["trustlist_version"] == v_backup
    assert backup.stat().st_mode & 0o077 == 0
    # After the backup the gateway goes on: two more versions, which a verifier takes.
    _add_partner_key(capsys, data, tmp_path, "after-1")
    _add_partner_key(capsys, data, tmp_path, "after-2")
    newest = tmp_path / "newest.json"
    v_newest = _publish(capsys, data, newest)
    assert v_newest > v_backup
    assert _verify(capsys, pinned, v_backup, newest).status == 0

    restored = tmp_path / "restored"
    ran = trustgw(capsys, "restore", str(backup), "--data-dir", str(restored), "--json")
    assert ran.status == 0, ran.err
    assert ran.json()["trustlist_floor"] > v_backup
    after = tmp_path / "after-restore.json"
    v_after = _publish(capsys, restored, after)
    assert v_after > v_newest  # above what was published after the backup, too
    accepted = _verify(capsys, pinned, v_newest, after)
    assert accepted.status == 0, accepted.err
    # Without the floor, the restored database would publish an old number again.
    with sqlite3.connect(restored / "trustgw.db") as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM trustlist_versions")]
    assert v_backup in versions and not set(range(v_backup + 1, v_newest + 1)) & set(versions)
    # The restored gateway's keys and registry are the backup's: the old key was added after.
    listed = trustgw(capsys, "keys", "list", "--data-dir", str(restored), "--json").json()
    assert not {"after-1", "after-2"} & {row["kid"] for row in listed}


def test_restore_takes_a_verifiers_last_seen_version_as_the_floor(
    own_data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    backup = tmp_path / "gw.tar.gz"
    assert (
        trustgw(capsys, "backup", "--data-dir", str(own_data_dir), "--out", str(backup)).status == 0
    )
    restored = tmp_path / "restored"
    ran = trustgw(capsys, "restore", str(backup), "--data-dir", str(restored), "--json",
                  "--trustlist-floor", "500000", "--margin", "10")  # fmt: skip
    assert ran.status == 0, ran.err
    assert ran.json()["trustlist_floor"] == 500010
    assert _publish(capsys, restored, tmp_path / "l.json") > 500010


def test_trustlist_floor_raises_the_next_version_and_never_lowers_it(
    own_data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    data = str(own_data_dir)
    first = _publish(capsys, own_data_dir, tmp_path / "a.json")
    ran = trustgw(capsys, "trustlist", "floor", "--data-dir", data, str(first + 40), "--json")
    assert ran.status == 0, ran.err
    assert ran.json()["latest_version"] == first + 41
    assert _publish(capsys, own_data_dir, tmp_path / "b.json") == first + 41  # same content
    _add_partner_key(capsys, own_data_dir, tmp_path, "later")
    assert _publish(capsys, own_data_dir, tmp_path / "c.json") == first + 42
    lower = trustgw(capsys, "trustlist", "floor", "--data-dir", data, "3", "--json")
    assert lower.status == 0 and lower.json()["latest_version"] == first + 42


def _tamper(backup: Path, out: Path, change: Any) -> None:
    with tarfile.open(backup, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(out, "w:gz") as tar:
        for info, data in change(members):
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _flip_db_byte(members: list[Any]) -> list[Any]:
    return [(m, d[:-1] + bytes([d[-1] ^ 1]) if m.name == "trustgw.db" else d) for m, d in members]


def _escape(members: list[Any]) -> list[Any]:
    (manifest, data), *rest = members
    evil = tarfile.TarInfo("../evil")
    return [(manifest, data), *rest, (evil, b"x")]


def _no_manifest(members: list[Any]) -> list[Any]:
    return members[1:]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(_flip_db_byte, id="checksum-mismatch"),
        pytest.param(_escape, id="path-outside-the-data-directory"),
        pytest.param(_no_manifest, id="no-manifest"),
    ],
)
def test_a_tampered_backup_restores_nothing(
    own_data_dir: Path, tmp_path: Path, capsys: Any, change: Any
) -> None:
    backup = tmp_path / "gw.tar.gz"
    assert (
        trustgw(capsys, "backup", "--data-dir", str(own_data_dir), "--out", str(backup)).status == 0
    )
    bad = tmp_path / "bad.tar.gz"
    _tamper(backup, bad, change)
    restored = tmp_path / "restored"
    ran = trustgw(capsys, "restore", str(bad), "--data-dir", str(restored))
    assert (ran.status, ran.reason) == (1, "MALFORMED"), ran.err
    assert not restored.exists() and not (tmp_path / "evil").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".trustgw")] == []


def test_a_backup_whose_audit_chain_is_broken_is_not_restored(
    own_data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    with sqlite3.connect(own_data_dir / "trustgw.db") as conn:
        changed = conn.execute("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 1")
        assert changed.rowcount == 1
    backup = tmp_path / "gw.tar.gz"
    assert (
        trustgw(capsys, "backup", "--data-dir", str(own_data_dir), "--out", str(backup)).status == 0
    )
    restored = tmp_path / "restored"
    ran = trustgw(capsys, "restore", str(backup), "--data-dir", str(restored))
    assert (ran.status, ran.reason) == (1, "AUDIT_TAMPERED"), ran.err
    assert not restored.exists()


def test_restore_refuses_a_data_directory_in_use(
    own_data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    backup = tmp_path / "gw.tar.gz"
    assert (
        trustgw(capsys, "backup", "--data-dir", str(own_data_dir), "--out", str(backup)).status == 0
    )
    ran = trustgw(capsys, "restore", str(backup), "--data-dir", str(own_data_dir))
    assert (ran.status, ran.reason) == (2, "USAGE")


def test_a_backup_is_a_consistent_copy_taken_while_a_writer_is_busy(
    own_data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    database = own_data_dir / "trustgw.db"
    job = "INSERT INTO stock_jobs VALUES (?, 'f.csv', 0, '{}', 0, 0, NULL)"
    writer = sqlite3.connect(database, isolation_level=None)
    try:
        assert writer.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        writer.execute("PRAGMA wal_autocheckpoint = 0")  # the commit stays in the -wal file
        writer.execute(job, ("a" * 64,))  # committed, not yet in trustgw.db itself
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(job, ("b" * 64,))  # a writer in the middle of a transaction
        backup = tmp_path / "gw.tar.gz"
        ran = trustgw(capsys, "backup", "--data-dir", str(own_data_dir), "--out", str(backup))
        assert ran.status == 0, ran.err
        writer.execute("COMMIT")
    finally:
        writer.close()
    restored = tmp_path / "restored"
    assert trustgw(capsys, "restore", str(backup), "--data-dir", str(restored)).status == 0
    with sqlite3.connect(restored / "trustgw.db") as conn:
        jobs = {d[0] for (d,) in conn.execute("SELECT digest FROM stock_jobs")}
    assert jobs == {"a"}  # the committed row, not the one uncommitted at the time
