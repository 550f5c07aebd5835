"""The gateway's own keys as the operator commands open them: from the store's keyring, with this
machine's passphrase (``TRUSTGW_PASSPHRASE`` / ``TRUSTGW_PASSPHRASE_FILE``); a data directory's
``keys/`` from before the keyring is imported at the first open (keys.gatewaykeys)."""

from __future__ import annotations

from pathlib import Path

from gateway.runtime.datadir import DataDir
from keys.gatewaykeys import open_keyring
from keys.keyring import GatewayKeyring
from keys.keystore import passphrase_from_env
from keys.store import GatewayKeyStore


async def gateway_keys(store: GatewayKeyStore, data_dir: Path) -> GatewayKeyring:
    """The keyring of ``store``, unsealed. Raises :class:`keys.errors.NoKeyringError`,
    :class:`keys.errors.PassphraseError`."""
    return await open_keyring(store, passphrase_from_env(), import_from=DataDir(data_dir).keys)
