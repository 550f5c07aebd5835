"""A fresh data directory and an in-process recogniser at explicit times, for the tests of what
the gateway signs (tests/test_signed_outputs.py, tests/test_signed_properties.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from adapters.simulator import PartnerSimulator
from gateway import tokens
from gateway.engine import Conversions, Recogniser
from keys.keystore import KeyDirectory
from keys.model import Region
from keys.pseudonym import Pseudonymiser
from keys.registry import KeyRegistry
from keys.store import SQLiteStore


async def fresh_data_dir(data_dir: Path, simulator: PartnerSimulator, init_at: datetime) -> Path:
    """A data directory as ``trustgw init`` leaves it at ``init_at`` (the gateway's keys valid
    from exactly then), with the simulated partners' keys valid from 30 days before."""
    data_dir.mkdir(parents=True, exist_ok=True)
    KeyDirectory.create(data_dir / "keys", dev=True, passphrase=None, now=init_at)
    store = await SQLiteStore.open(data_dir / "trustgw.db")
    try:
        registry = KeyRegistry(store)
        for issuer in simulator.issuers():
            spec = issuer.spec
            await registry.add_region(Region(spec.code, spec.name, spec.mode, spec.max_age))
            await registry.add_key(
                issuer.region_key(init_at - timedelta(days=30), init_at + timedelta(days=365))
            )
    finally:
        await store.close()
    return data_dir


@dataclass
class Engine:
    """A recogniser over a data directory (the key directory re-read on each :meth:`open`)."""

    store: SQLiteStore
    registry: KeyRegistry
    keys: KeyDirectory
    conversions: Conversions
    recogniser: Recogniser

    def trust(self) -> tokens.GatewayTrust:
        """What ``trustgw keys export`` writes, now."""
        return tokens.GatewayTrust.from_key_infos(self.keys.public_keys())


@asynccontextmanager
async def engine(data_dir: Path) -> AsyncIterator[Engine]:
    store = await SQLiteStore.open(data_dir / "trustgw.db")
    registry = KeyRegistry(store)
    await registry.load()
    keys = KeyDirectory.open(data_dir / "keys", passphrase=None)
    conversions = Conversions(store)
    conversions.start()
    recogniser = Recogniser(
        lambda: registry.snapshot, keys, Pseudonymiser(keys.pseudonym_secret()), conversions
    )
    try:
        yield Engine(store, registry, keys, conversions, recogniser)
    finally:
        await conversions.stop()
        await store.close()
