"""The gateway keyring's SQL: the gateway's own keys, sealed, beside the registry.

Portable SQL (``?`` placeholders, no SQLite-only syntax) as plain functions of a DB-API
connection, run in the caller's transaction, so that the SQLite and PostgreSQL stores share it.
Every change increases the keyring's generation and the registry version (so that every replica,
which watches the registry version, reloads its keys) and is audited under region ``370000``.
Private keys appear here only sealed (:mod:`keys.keyring`).
"""

from __future__ import annotations

from typing import Any

from keys.audit import AuditEvent
from keys.crypto import Algorithm, PublicKey
from keys.errors import AlreadyExistsError, ConcurrentChangeError, ConfigurationError
from keys.keyring import KeyringChange, KeyringRecord, SealedKey, info_json
from keys.keystore import GatewayKeyInfo, KeyRole
from keys.model import KeyStatus
from keys.store import audit, regions
from keys.store.dbapi import Connection
from keys.store.rows import ts
from keys.timeutil import from_unix, utcnow

HOME_REGION = "370000"  # the audit trail's region of the gateway's own keys
_KEY_COLUMNS = "role, kid, alg, spki, not_before, not_after, status, revoked_at, sealed"


def generation(conn: Connection) -> int:
    """The keyring's generation (0: no keyring in this database yet)."""
    row = conn.execute("SELECT generation FROM gateway_keyring_meta WHERE id = 1").fetchone()
    return 0 if row is None else int(row[0])


def read(conn: Connection) -> KeyringRecord | None:
    """The whole keyring, or None when the database holds none yet."""
    meta = conn.execute(
        "SELECT generation, kdf, check_blob, secret FROM gateway_keyring_meta WHERE id = 1"
    ).fetchone()
    if meta is None:
        return None
    rows = conn.execute(
        f"SELECT {_KEY_COLUMNS} FROM gateway_keyring ORDER BY role, not_before, kid"  # noqa: S608
    ).fetchall()
    try:
        keys = tuple(_from_row(r) for r in rows)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"the gateway keyring has a damaged row: {exc}") from None
    return KeyringRecord(
        generation=int(meta[0]),
        kdf=str(meta[1]),
        check=bytes(meta[2]),
        secret=bytes(meta[3]),
        keys=keys,
    )


def create(conn: Connection, record: KeyringRecord, actor: str) -> bool:
    """Store a new keyring; False (nothing written) when the database holds one already: the
    first ``trustgw init`` of a deployment creates it, every later one joins it."""
    if conn.execute("SELECT 1 FROM gateway_keyring_meta WHERE id = 1").fetchone() is not None:
        return False
    conn.execute(
        "INSERT INTO gateway_keyring_meta (id, generation, kdf, check_blob, secret)"
        " VALUES (1, ?, ?, ?, ?)",
        (record.generation, record.kdf, record.check, record.secret),
    )
    for key in record.keys:
        _insert(conn, key)
    regions.bump_version(conn)
    now = utcnow()
    audit.append(
        conn,
        AuditEvent(
            actor,
            "gateway_keyring.create",
            now,
            HOME_REGION,
            None,
            {"keys": [info_json(k.info) for k in record.keys]},
        ),
    )
    return True


def apply(conn: Connection, change: KeyringChange) -> int:
    """Apply ``change`` whole; returns the new generation.

    Raises :class:`ConcurrentChangeError` (nothing written) unless the keyring is still at
    ``change.expected_generation``, :class:`AlreadyExistsError` for a key id already stored.
    """
    current = generation(conn)
    if current == 0 or current != change.expected_generation:
        raise ConcurrentChangeError(
            f"the gateway keyring changed meanwhile (generation {current}, expected "
            f"{change.expected_generation}): retry"
        )
    for key in change.add:
        exists = conn.execute(
            "SELECT 1 FROM gateway_keyring WHERE role = ? AND kid = ?", (key.role.value, key.kid)
        ).fetchone()
        if exists is not None:
            raise AlreadyExistsError(f"gateway {key.role} key {key.kid} is already stored")
        _insert(conn, key)
    for info in change.update:
        conn.execute(
            "UPDATE gateway_keyring SET not_before = ?, not_after = ?, status = ?, revoked_at = ?"
            " WHERE role = ? AND kid = ?",
            (
                ts(info.not_before),
                ts(info.not_after),
                info.status.value,
                None if info.revoked_at is None else ts(info.revoked_at),
                info.role.value,
                info.kid,
            ),
        )
    for role, kid in change.drop:
        conn.execute("DELETE FROM gateway_keyring WHERE role = ? AND kid = ?", (role.value, kid))
    conn.execute("UPDATE gateway_keyring_meta SET generation = generation + 1 WHERE id = 1")
    regions.bump_version(conn)
    audit.append(
        conn,
        AuditEvent(
            change.actor,
            change.action,
            change.at or utcnow(),
            HOME_REGION,
            {"drop": [f"{role.value}/{kid}" for role, kid in change.drop]} if change.drop else None,
            {
                "add": [info_json(k.info) for k in change.add],
                "update": [info_json(i) for i in change.update],
            },
        ),
    )
    return current + 1


def _insert(conn: Connection, key: SealedKey) -> None:
    info = key.info
    conn.execute(
        f"INSERT INTO gateway_keyring ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        (
            info.role.value,
            info.kid,
            info.public_key.alg.value,
            info.public_key.spki,
            ts(info.not_before),
            ts(info.not_after),
            info.status.value,
            None if info.revoked_at is None else ts(info.revoked_at),
            key.sealed,
        ),
    )


def _from_row(row: Any) -> SealedKey:
    role, kid, alg, spki, not_before, not_after, status, revoked_at, sealed = row
    info = GatewayKeyInfo(
        KeyRole(role),
        str(kid),
        PublicKey.from_spki(bytes(spki), Algorithm(alg)),
        from_unix(not_before),
        from_unix(not_after),
        KeyStatus(status),
        None if revoked_at is None else from_unix(revoked_at),
    )
    return SealedKey(info, bytes(sealed))
