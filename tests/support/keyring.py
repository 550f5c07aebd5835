"""The gateway's keys of a data directory as the gateway reads them: from the database's keyring
(importing ``DATA_DIR/keys`` the first time, as ``trustgw serve`` and every command do)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from keys.gatewaykeys import open_keyring
from keys.keyring import GatewayKeyring
from keys.store import SQLiteStore


async def open_stored_keys(data_dir: Path, passphrase: bytes | None = None) -> GatewayKeyring:
    """The keyring of ``data_dir``'s database, unsealed (development keys by default)."""
    store = await SQLiteStore.open(Path(data_dir) / "trustgw.db")
    try:
        return await open_keyring(store, passphrase, import_from=Path(data_dir) / "keys")
    finally:
        await store.close()


def stored_keys(data_dir: Path, passphrase: bytes | None = None) -> GatewayKeyring:
    """:func:`open_stored_keys` from synchronous code (no event loop running)."""
    return asyncio.run(open_stored_keys(data_dir, passphrase))
