"""What a gateway process is given: its data directory and its configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from gateway.online.config import OnlineSettings
from gateway.pki import TlsFiles
from gateway.runtime.datadir import DataDir
from gateway.runtime.retention import RetentionPolicy
from keys.trustlist import DEFAULT_TTL as TRUSTLIST_TTL


@dataclass(frozen=True)
class GatewayConfig:
    """Everything :meth:`gateway.runtime.gateway.Gateway.open` and the server need; built from
    the settings by :meth:`gateway.runtime.settings.Settings.gateway_config`."""

    data_dir: Path
    # The store: a PostgreSQL URL or a SQLite file; None: DATA_DIR/trustgw.db.
    database_target: str | Path | None = field(default=None, repr=False)
    # Bring the database's schema up to date on open (``trustgw serve`` does not: it refuses an
    # outdated one and ``trustgw db migrate`` migrates).
    migrate: bool = True
    listen: str = "127.0.0.1:50051"
    passphrase: bytes | None = None
    refresh_interval: float = 0.5  # seconds between registry change checks
    grace: float = 5.0  # seconds to drain in-flight calls on shutdown
    tls: TlsFiles | None = None  # None: plaintext, for local development only
    metrics_listen: str | None = None  # HOST:PORT of the Prometheus endpoint, None: off
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)  # docs/retention.md
    trustlist_ttl: timedelta = TRUSTLIST_TTL  # how long a signed trust list stays valid
    online: OnlineSettings = field(default_factory=OnlineSettings)  # online partners (§9)

    @property
    def paths(self) -> DataDir:
        return DataDir(self.data_dir)

    @property
    def database(self) -> str | Path:
        """What :func:`keys.store.factory.open_store` opens (a URL or a SQLite file)."""
        return self.database_target if self.database_target is not None else self.paths.database

    @property
    def key_dir(self) -> Path:
        return self.paths.keys
