"""The gateway's own keys over a store: create or join a deployment's keyring, open it (importing
an existing key directory once), reload it when another machine changed it, rotate and withdraw.

The database is the source of truth for the gateway's keys (docs/operations.md, "Where the keys
live"): every replica opens the same sealed rows with the passphrase of its own machine. A key
directory (``DATA_DIR/keys``, what earlier versions kept) is imported at the first open of a
database that has no keyring, and not read again afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import datetime, timedelta
from pathlib import Path

from keys.crypto import Algorithm
from keys.errors import ConcurrentChangeError, NoKeyringError
from keys.keyring import (
    GatewayKeyring,
    KeyringRecord,
    KeyringSeal,
    generate_entries,
    plan_rotation,
    plan_withdrawal,
    seal_new_keyring,
    unseal,
)
from keys.keystore import (
    MANIFEST,
    PSEUDONYM_SECRET_BYTES,
    GatewayKeyInfo,
    KeyDirectory,
    KeyRole,
)
from keys.store.protocols import GatewayKeyStore
from keys.timeutil import ensure_utc

log = logging.getLogger("trustgw.keys")

IMPORT_ACTOR = "gateway:import"  # the audit actor of a key directory's import
_RETRIES = 5  # a change planned on a keyring another machine changed meanwhile is re-planned


async def create_or_join(
    store: GatewayKeyStore,
    *,
    dev: bool,
    passphrase: bytes | None,
    now: datetime,
    validity: timedelta = timedelta(days=365),
    algorithm: Algorithm = Algorithm.EDDSA,
    actor: str = "operator:cli",
) -> tuple[GatewayKeyring, bool]:
    """The deployment's keyring: created (one key per role, valid from ``now``) when the
    database has none, else joined (opened with ``passphrase``, nothing created). Returns the
    keyring and True when this call created it.

    Raises :class:`keys.errors.PassphraseError` (none outside dev mode, or a wrong one for an
    existing keyring), ``ValueError`` (bad validity or algorithm).
    """
    record = await store.read_keyring()
    if record is None:
        if validity <= timedelta(0):
            raise ValueError("validity must be positive")
        seal = KeyringSeal.development() if dev else KeyringSeal.new(passphrase or b"")
        start = ensure_utc(now).replace(microsecond=0)
        entries = generate_entries(tuple(KeyRole), start, validity, algorithm)
        record = seal_new_keyring(seal, entries, secrets.token_bytes(PSEUDONYM_SECRET_BYTES))
        if await store.create_keyring(record, actor=actor):
            log.info(
                "gateway keyring created in the database: %s",
                ", ".join(f"{e.info.role} {e.info.kid}" for e in entries),
            )
            return unseal(record, passphrase, seal), True
        record = await _read(store)  # another machine created it meanwhile: join that one
    keyring = await asyncio.to_thread(unseal, record, passphrase)
    log.info("joined the gateway keyring in the database (generation %d)", keyring.generation)
    return keyring, False


async def open_keyring(
    store: GatewayKeyStore,
    passphrase: bytes | None,
    *,
    import_from: Path | None = None,
    now: datetime | None = None,
) -> GatewayKeyring:
    """The keyring of the database, unsealed with ``passphrase``.

    When the database holds none and ``import_from`` is a key directory, its keys and pseudonym
    secret are imported (once: from then on the database is the source of truth and the
    directory is not read again). Raises :class:`NoKeyringError`,
    :class:`keys.errors.PassphraseError`, :class:`keys.errors.KeyDirectoryError`.
    """
    record = await store.read_keyring()
    if record is None:
        if import_from is None or not (Path(import_from) / MANIFEST).exists():
            raise NoKeyringError()
        directory = await asyncio.to_thread(
            KeyDirectory.open, Path(import_from), passphrase=passphrase, now=now
        )
        seal = KeyringSeal.development() if directory.dev else KeyringSeal.new(passphrase or b"")
        record = seal_new_keyring(seal, directory.entries(), directory.pseudonym_secret())
        if await store.create_keyring(record, actor=IMPORT_ACTOR):
            log.warning(
                "imported the key directory %s into the database's gateway keyring: the "
                "database is now the source of truth for the gateway's keys (the directory "
                "is no longer read; remove it once backed up)",
                import_from,
            )
            return unseal(record, passphrase, seal)
        record = await _read(store)
    return await asyncio.to_thread(unseal, record, passphrase)


async def reload_if_changed(
    store: GatewayKeyStore, current: GatewayKeyring, passphrase: bytes | None
) -> GatewayKeyring | None:
    """The keyring's newer generation, or None when it did not change (one cheap read)."""
    if await store.keyring_generation() == current.generation:
        return None
    record = await _read(store)
    # The seal is reused: no scrypt on a reload, only the AEAD.
    return unseal(record, passphrase, current.seal)


async def rotate(
    store: GatewayKeyStore,
    passphrase: bytes | None,
    role: KeyRole,
    now: datetime,
    *,
    activate_at: datetime | None = None,
    validity: timedelta = timedelta(days=365),
    algorithm: Algorithm | None = None,
    actor: str = "operator:cli",
) -> GatewayKeyInfo:
    """Add a new ``role`` key to the database's keyring (:func:`keys.keyring.plan_rotation`);
    in force on every replica at their next reload. Re-planned if another machine changed the
    keyring meanwhile."""
    keyring = await open_keyring(store, passphrase)
    for _ in range(_RETRIES):
        change, info = plan_rotation(
            keyring,
            role,
            now,
            activate_at=activate_at,
            validity=validity,
            algorithm=algorithm,
            actor=actor,
        )
        try:
            await store.change_keyring(change)
        except ConcurrentChangeError:
            keyring = unseal(await _read(store), passphrase, keyring.seal)
            continue
        log.info("gateway %s key %s added, signing from %s", role, info.kid, info.not_before)
        return info
    raise ConcurrentChangeError("the gateway keyring keeps changing: retry")


async def withdraw(
    store: GatewayKeyStore,
    passphrase: bytes | None,
    role: KeyRole,
    kid: str,
    compromised_at: datetime,
    now: datetime,
    *,
    actor: str = "operator:cli",
) -> tuple[GatewayKeyInfo, GatewayKeyInfo | None]:
    """Withdraw a gateway key from ``compromised_at`` on (:func:`keys.keyring.plan_withdrawal`:
    a rotation at once when it is the key that signs). Returns the withdrawn key and its
    replacement (None when another key already signs)."""
    keyring = await open_keyring(store, passphrase)
    for _ in range(_RETRIES):
        change, withdrawn, replacement = plan_withdrawal(
            keyring, role, kid, compromised_at, now, actor=actor
        )
        try:
            await store.change_keyring(change)
        except ConcurrentChangeError:
            keyring = unseal(await _read(store), passphrase, keyring.seal)
            continue
        log.warning(
            "gateway %s key %s WITHDRAWN from %s%s",
            role,
            kid,
            withdrawn.revoked_at,
            f"; replaced by {replacement.kid}" if replacement else "",
        )
        return withdrawn, replacement
    raise ConcurrentChangeError("the gateway keyring keeps changing: retry")


async def _read(store: GatewayKeyStore) -> KeyringRecord:
    record = await store.read_keyring()
    if record is None:
        raise NoKeyringError()
    return record
