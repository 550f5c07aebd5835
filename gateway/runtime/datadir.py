"""The data directory of a gateway: the one place that names the files in it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from gateway.pki import TlsFiles


@dataclass(frozen=True)
class DataDir:
    """The layout of a gateway's data directory (docs/operations.md, "What lives where"):
    ``trustgw.db`` the store, ``keys/`` the gateway's own keys, ``pki/`` the development CA and
    the server's TLS files. Only names paths: nothing is read or created here."""

    root: Path

    DATABASE: ClassVar[str] = "trustgw.db"
    KEYS: ClassVar[str] = "keys"
    PKI: ClassVar[str] = "pki"

    @property
    def database(self) -> Path:
        """The SQLite store (with its ``-wal`` and ``-shm`` files beside it)."""
        return self.root / self.DATABASE

    @property
    def keys(self) -> Path:
        """Where earlier versions kept the gateway's keys (:class:`keys.keystore.KeyDirectory`):
        imported into the database's keyring at its first open, not read afterwards."""
        return self.root / self.KEYS

    @property
    def pki(self) -> Path:
        """The development CA's directory (:class:`gateway.pki.DevCA`)."""
        return self.root / self.PKI

    def server_tls(self) -> TlsFiles:
        """The server's certificate, key and client CA as ``trustgw init`` writes them."""
        return TlsFiles(
            cert=self.pki / "server.pem", key=self.pki / "server.key", ca=self.pki / "ca.pem"
        )

    def is_initialised(self) -> bool:
        """True when ``trustgw init`` has run here: the SQLite store is here or, for a gateway
        whose store is elsewhere (``--database``: the keys are in that database), the ``pki/``
        ``init`` made (or a key directory from before the keyring)."""
        return self.database.is_file() or self.keys.is_dir() or self.pki.is_dir()
