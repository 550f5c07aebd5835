"""Shared set-up for the trust-registry tests: a registry over a real SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from keys.partner import PartnerSigner, signing_key
from keys.pseudonym import Pseudonymiser
from keys.registry import KeyRegistry
from keys.statements import KeySetKey
from keys.store import SQLiteStore
from keys.trustregistry import TrustRegistry

T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECRET = b"trust-registry-tests-pseudonyms!"
T = TypeVar("T")


@dataclass
class Harness:
    store: SQLiteStore
    registry: KeyRegistry
    trust: TrustRegistry
    pseudonymiser: Pseudonymiser

    async def onboard(self, *partners: PartnerSigner, now: datetime = T0) -> None:
        for partner in partners:
            await self.trust.install_partner(partner.partner_file(), actor="operator:test", now=now)

    async def publish(self, partner: PartnerSigner, envelope: bytes, now: datetime = T0) -> Any:
        return await self.trust.publish_keyset(envelope, caller_region=partner.region.code, now=now)


@asynccontextmanager
async def harness(path: Path) -> AsyncIterator[Harness]:
    store = await SQLiteStore.open(path)
    try:
        registry = KeyRegistry(store)
        await registry.load()
        pseudonymiser = Pseudonymiser(SECRET)
        yield Harness(store, registry, TrustRegistry(store, pseudonymiser, registry), pseudonymiser)
    finally:
        await store.close()


def scenario(path: Path, body: Callable[[Harness], Awaitable[T]]) -> T:
    """Run ``body`` against a fresh registry at ``path`` (the suite has no asyncio plugin)."""

    async def main() -> T:
        async with harness(path) as h:
            return await body(h)

    return asyncio.run(main())


def key(kid: str, start: datetime = T0 - 30 * DAY, days: int = 365) -> KeySetKey:
    return signing_key(kid, start, start + days * DAY)[0]
