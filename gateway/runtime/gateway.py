"""The state of a running gateway: store, registry snapshot, the gateway's keys, the
recogniser, the trust list and the background work that keeps them current.

``Gateway.open`` starts it and ``close`` stops it; the wire (``gateway.grpc``) only calls
into it. Nothing here imports gRPC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from pathlib import Path

from adapters.regions import REGION_ALGORITHMS
from gateway.engine import Conversions, Recogniser
from gateway.observability import Metrics
from gateway.runtime.config import GatewayConfig
from gateway.runtime.reclog import RecognitionLog
from gateway.runtime.retention import PeriodicPurge
from gateway.runtime.tasks import Background
from gateway.runtime.trustfeed import DEFAULT_PUSH_TIMEOUT as TRUSTLIST_PUSH_TIMEOUT
from gateway.runtime.trustfeed import DEFAULT_RESEND as TRUSTLIST_RESEND
from gateway.runtime.trustfeed import TrustListFeed
from keys.crypto import PrivateKey
from keys.errors import GatewayError, StoreUnavailableError
from keys.keystore import MANIFEST, GatewayKeyInfo, KeyDirectory, KeyRole
from keys.pseudonym import Pseudonymiser
from keys.registry import KeyRegistry
from keys.store import Store
from keys.store.factory import open_store
from keys.timeutil import utcnow
from keys.trustpublisher import TrustListPublisher
from keys.trustregistry import TrustRegistry

log = logging.getLogger("trustgw.server")


class Gateway:
    """A running gateway's state. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(
        self,
        store: Store,
        registry: KeyRegistry,
        key_dir: KeyDirectory,
        config: GatewayConfig,
    ) -> None:
        self.store = store
        self.registry = registry
        self.key_dir = key_dir
        self.conversions = Conversions(store)
        pseudonymiser = Pseudonymiser(key_dir.pseudonym_secret())
        self.reclog = (
            RecognitionLog(store, pseudonymiser.code_key)
            if config.retention.recognition_log
            else None
        )
        self.purger = PeriodicPurge(store, config.retention)
        self.recogniser = Recogniser(
            lambda: self.registry.snapshot, self, pseudonymiser, self.conversions
        )
        # Partner writes refresh ``registry`` at once, so this process recognises with them.
        self.trust = TrustRegistry(store, pseudonymiser, registry, REGION_ALGORITHMS)
        self._trustlist_keys = key_dir  # the keys the trust list publishes (ahead of key_dir)
        self._push_timeout = TRUSTLIST_PUSH_TIMEOUT
        self._trustlist_seen = -1  # the registry version the trust list was last recorded for
        self.trustlist = TrustListFeed(
            TrustListPublisher(
                store,
                lambda: self.registry.snapshot,
                lambda: self._trustlist_keys,
                ttl=config.trustlist_ttl,
            ),
            # Idle watchers get the list again well before the one they hold expires.
            resend=min(TRUSTLIST_RESEND, config.trustlist_ttl / 4),
        )
        self._config = config
        self._key_dir_stamp = _stamp(config.key_dir)
        self._refresher = Background("refresh")
        self.metrics = Metrics()
        self.healthy = True
        self._metrics_updated = 0.0

    def signer(self, role: KeyRole, now: datetime) -> tuple[GatewayKeyInfo, PrivateKey]:
        """The gateway's current signing key for ``role`` (follows rotations without restart)."""
        return self.key_dir.signer(role, now)

    def published_keys(self) -> list[GatewayKeyInfo]:
        """The gateway keys published now (trust list, ``GetGatewayKeys``): during a reload a
        new key is published before it may sign."""
        return self._trustlist_keys.public_keys()

    @classmethod
    async def open(cls, config: GatewayConfig) -> Gateway:
        key_dir = KeyDirectory.open(config.key_dir, passphrase=config.passphrase)
        # With the secret: an older database's code ids are keyed when its schema is upgraded.
        store = await open_store(
            config.database,
            code_keys=Pseudonymiser(key_dir.pseudonym_secret()),
            migrate=config.migrate,
        )
        registry = KeyRegistry(store)
        await registry.load()
        gateway = cls(store, registry, key_dir, config)
        await gateway.check_health()
        gateway.update_key_metrics()
        await gateway.publish_trustlist()
        gateway.conversions.start()
        if gateway.reclog is not None:
            gateway.reclog.start()
        gateway.purger.start()
        gateway._refresher.start(gateway._refresh_loop)
        return gateway

    async def close(self) -> None:
        await self._refresher.stop()
        await self.trustlist.close()
        await self.purger.stop()
        if self.reclog is not None:
            await self.reclog.stop()
        await self.conversions.stop()
        await self.store.close()

    async def _refresh_loop(self) -> None:
        """Pick up changes made by the CLI, partners or other replicas, without a restart."""
        while True:
            await asyncio.sleep(self._config.refresh_interval)
            await self.refresh()

    async def refresh(self) -> None:
        """Reload the registry snapshot and the key directory when they changed.

        A failed reload keeps serving with what was loaded before and says so in the log.
        """
        try:
            if await self.registry.refresh_if_changed():
                log.info("registry reloaded, version %s", self.registry.snapshot.version)
        except StoreUnavailableError as exc:
            log.warning("registry refresh failed: %s", exc)
        stamp = _stamp(self._config.key_dir)
        if stamp != self._key_dir_stamp:
            try:
                # Decrypting keys is slow (scrypt): keep it off the event loop.
                key_dir = await asyncio.to_thread(
                    KeyDirectory.open, self._config.key_dir, passphrase=self._config.passphrase
                )
            except GatewayError as exc:
                log.warning("key directory reload failed, keeping the loaded keys: %s", exc)
                return
            # A new key signs only once the trust list carrying it is recorded and every
            # watcher of this process has been sent it (docs/verifying.md, "Keys and rotation").
            self._trustlist_keys = key_dir
            if not await self.publish_trustlist():
                self._trustlist_keys = self.key_dir
                return
            behind = await self.trustlist.pushed(self.trustlist.version, self._push_timeout)
            if behind:
                log.warning(
                    "%d trust-list watcher(s) did not take version %d within %s; "
                    "signing with the reloaded keys anyway",
                    behind,
                    self.trustlist.version,
                    self._push_timeout,
                )
            self.key_dir = key_dir
            self._key_dir_stamp = stamp
            log.info("gateway keys reloaded: %s", [k.kid for k in key_dir.public_keys()])
            self._metrics_updated = 0.0
        elif self.registry.snapshot.version != self._trustlist_seen:
            await self.publish_trustlist()
        await self.check_health()
        if time.monotonic() - self._metrics_updated > 30:
            self.update_key_metrics()

    async def publish_trustlist(self) -> bool:
        """Record the trust-list version of the current registry and keys; wake its watchers.

        False (and a log line) when the store cannot be reached: the next refresh retries.
        """
        seen = self.registry.snapshot.version
        try:
            version = await self.trustlist.update(utcnow())
        except GatewayError as exc:
            log.warning("trust list not updated: %s", exc)
            return False
        self._trustlist_seen = seen
        self.metrics.trustlist_version.set(version)
        return True

    async def check_health(self) -> None:
        """SERVING needs a reachable store and signing keys valid now."""
        now = utcnow()
        reason = ""
        try:
            await self.store.ping()
        except StoreUnavailableError as exc:
            reason = f"store unreachable: {exc}"
        if not reason:
            for role in (KeyRole.ATTEST, KeyRole.ISSUE):
                try:
                    self.key_dir.signer(role, now)
                except GatewayError as exc:
                    reason = f"no valid {role.value} key: {exc}"
                    break
        if bool(reason) == self.healthy:  # a change: say it once
            if reason:
                log.error("gateway NOT SERVING: %s", reason)
            else:
                log.warning("gateway serving again")
        self.healthy = not reason

    def update_key_metrics(self) -> None:
        now = utcnow()
        rows = [("gateway", i.role.value, i.kid, i.not_after) for i in self.key_dir.public_keys()]
        snapshot = self.registry.snapshot
        rows += [(k.region, "code-signing", k.kid, k.not_after) for k in snapshot.keys()]
        self.metrics.set_key_expiry(rows, now)
        self.metrics.registry_version.set(snapshot.version)
        self._metrics_updated = time.monotonic()


def _stamp(key_dir: Path) -> tuple[int, int]:
    """Changes whenever the key directory's manifest is replaced."""
    try:
        st = (key_dir / MANIFEST).stat()
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_ino)
