"""The state of a running gateway: store, registry snapshot, the gateway's keys, the
recogniser, the trust list and the background work that keeps them current.

``Gateway.open`` starts it and ``close`` stops it; the wire (``gateway.grpc``) only calls
into it. Nothing here imports gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime

from adapters.regions import REGION_ALGORITHMS
from gateway.codestatus import CodeStatus
from gateway.engine import Conversions, Recogniser
from gateway.observability import Metrics
from gateway.online.client import OnlineStatus
from gateway.places.book import PlaceBook
from gateway.places.tracing import Tracing
from gateway.places.visits import VisitLog
from gateway.runtime.changefeed import ChangeFeed, change_feed
from gateway.runtime.config import GatewayConfig
from gateway.runtime.reclog import RecognitionLog
from gateway.runtime.retention import PeriodicPurge
from gateway.runtime.tasks import Background
from gateway.runtime.trustfeed import DEFAULT_PUSH_TIMEOUT as TRUSTLIST_PUSH_TIMEOUT
from gateway.runtime.trustfeed import DEFAULT_RESEND as TRUSTLIST_RESEND
from gateway.runtime.trustfeed import TrustListFeed
from keys.crypto import PrivateKey
from keys.errors import GatewayError, StoreUnavailableError
from keys.gatewaykeys import open_keyring, reload_if_changed
from keys.keyring import GatewayKeyring
from keys.keystore import MANIFEST, GatewayKeyInfo, KeyDirectory, KeyRole
from keys.model import KeyStatus
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
        key_dir: GatewayKeyring,
        config: GatewayConfig,
    ) -> None:
        self.store = store
        self.registry = registry
        self.key_dir = key_dir
        self.conversions = Conversions(store)
        pseudonymiser = Pseudonymiser(key_dir.pseudonym_secret())
        self.pseudonymiser = pseudonymiser  # holders are named only by it (declarations)
        self.reclog = (
            RecognitionLog(store, pseudonymiser.code_key)
            if config.retention.recognition_log
            else None
        )
        self.pseudonymiser = pseudonymiser  # also what a tracing query names a person with
        self.places = PlaceBook(store, lambda: self.key_dir)  # venues, checked in memory
        self.visits = VisitLog(store)  # visits, batched like the recognition log
        self.tracing = Tracing(
            store, pseudonymiser, lambda: self.registry.snapshot.regions, config.tracing
        )
        self.purger = PeriodicPurge(store, config.retention)
        self.metrics = Metrics()
        # Online partners: one client each (own pool, limit, breaker, cache; docs/partners.md §9).
        self.online = OnlineStatus.build(
            config.online, lambda: self.registry.snapshot, self.metrics
        )
        self.recogniser = Recogniser(
            lambda: self.registry.snapshot,
            self,
            pseudonymiser,
            self.conversions,
            online=self.online,
        )
        # GetCodeStatus: partners ask about home codes, answered from the store at every call.
        self.code_status = CodeStatus(store, self, self.published_keys, pseudonymiser)
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
        self._refresher = Background("refresh")
        self.changes: ChangeFeed = change_feed(
            config.database, store.registry_version, config.refresh_interval
        )
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
        """Open the store, unseal the gateway's keys from it (importing ``DATA_DIR/keys`` at the
        first open of a database without a keyring), load the registry and start the
        background work.

        Raises :class:`keys.errors.ConfigurationError` (no keys, wrong passphrase, schema),
        :class:`keys.errors.StoreUnavailableError`.
        """
        # Only an old database (schema 3 or older) needs the pseudonym secret to upgrade, and
        # only a data directory from before the keyring has it in files.
        code_keys = _DirectoryCodeKeys(config) if (config.key_dir / MANIFEST).exists() else None
        store = await open_store(config.database, code_keys=code_keys, migrate=config.migrate)
        try:
            key_dir = await open_keyring(store, config.passphrase, import_from=config.key_dir)
            registry = KeyRegistry(store)
            await registry.load()
            gateway = cls(store, registry, key_dir, config)  # ConfigurationError: online TLS
            await gateway.places.load()
        except BaseException:
            await store.close()
            raise
        await gateway.check_health()
        gateway.update_key_metrics()
        await gateway.publish_trustlist()
        gateway.conversions.start()
        if gateway.reclog is not None:
            gateway.reclog.start()
        gateway.visits.start()
        gateway.purger.start()
        gateway._refresher.start(gateway._refresh_loop)
        return gateway

    async def close(self) -> None:
        await self._refresher.stop()
        await self.trustlist.close()
        await self.purger.stop()
        if self.reclog is not None:
            await self.reclog.stop()
        await self.visits.stop()
        await self.conversions.stop()
        await self.online.close()
        await self.store.close()

    async def _refresh_loop(self) -> None:
        """Pick up changes made by the CLI, partners or other replicas, without a restart: a
        reload whenever the change feed says so (pushed over PostgreSQL), and the health check
        every ``refresh_interval`` between."""
        changes = self.changes.watch_changes()
        pending: asyncio.Task[int] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(changes))
                done, _ = await asyncio.wait({pending}, timeout=self._config.refresh_interval)
                if pending in done:
                    version = pending.result()
                    pending = None
                    log.debug("change feed: registry version %s", version)
                    await self.refresh()
                else:
                    await self.check_health()
                    if time.monotonic() - self._metrics_updated > 30:
                        self.update_key_metrics()
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            await changes.aclose()

    async def refresh(self) -> None:
        """Reload the registry snapshot and the key directory when they changed.

        A failed reload keeps serving with what was loaded before and says so in the log.
        """
        try:
            if await self.registry.refresh_if_changed():
                log.info("registry reloaded, version %s", self.registry.snapshot.version)
        except StoreUnavailableError as exc:
            log.warning("registry refresh failed: %s", exc)
        try:
            await self.places.refresh_if_changed()
        except StoreUnavailableError as exc:
            log.warning("venue refresh failed: %s", exc)
        try:
            key_dir = await reload_if_changed(self.store, self.key_dir, self._config.passphrase)
        except GatewayError as exc:
            log.warning("gateway keyring reload failed, keeping the loaded keys: %s", exc)
            key_dir = None
        if key_dir is not None:
            withdrawn = _newly_withdrawn(self.key_dir, key_dir)
            if withdrawn:
                # A withdrawn key must not sign one more thing: its replacement signs at once,
                # even before every watcher has the list that carries it (docs/operations.md,
                # "Withdrawing a compromised gateway key").
                self.key_dir = key_dir
                log.warning("gateway key(s) withdrawn, no longer signing: %s", withdrawn)
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
            log.info(
                "gateway keys reloaded (keyring generation %d): %s",
                key_dir.generation,
                [k.kid for k in key_dir.public_keys()],
            )
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


def _newly_withdrawn(before: GatewayKeyring, after: GatewayKeyring) -> list[str]:
    """The kids REVOKED in ``after`` that were not in ``before``."""
    was = {k.kid for k in before.public_keys() if k.status is KeyStatus.REVOKED}
    return [
        k.kid for k in after.public_keys() if k.status is KeyStatus.REVOKED and k.kid not in was
    ]


class _DirectoryCodeKeys:
    """The code keys of the key directory's pseudonym secret, read only when a migration of an
    old database asks for them (the keyring lives in the database being migrated)."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._pseudonymiser: Pseudonymiser | None = None

    def _get(self) -> Pseudonymiser:
        if self._pseudonymiser is None:
            directory = KeyDirectory.open(self._config.key_dir, passphrase=self._config.passphrase)
            self._pseudonymiser = Pseudonymiser(directory.pseudonym_secret())
        return self._pseudonymiser

    def code_key(self, region: str, code_id: str) -> str:
        """The keyed form of a partner code id."""
        return self._get().code_key(region, code_id)

    def from_code_hash(self, hashed: str) -> str:
        """The code key of a partner-supplied code hash."""
        return self._get().from_code_hash(hashed)
