"""Replicas that agree (issue 10 point 3), at the store: several PostgreSQL stores on one
database, each with its own connections (what two ``trustgw serve`` replicas are to the
database), writing at the same time.

- the same source code converted through two replicas at once: one record, the same home code
  for every caller;
- trust-list versions: unique and contiguous, never two lists under one version;
- the audit trail: one linear hash chain that verifies, whoever wrote through which replica;
- conversions and the recognition log: a few statements per batch, never one per entry.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from keys.audit import verify_store
from keys.crypto import PrivateKey
from keys.errors import ConcurrentChangeError
from keys.model import ConversionRecord, Mode, Region, RegionKey
from keys.personal import RecognitionEntry
from keys.records import RevocationBatchChange
from keys.store import pgdb
from keys.store.postgres import PostgresStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
ACTOR = "operator:test"
ZHEJIANG = Region("330000", "Zhejiang", Mode.CONVERT, timedelta(hours=12))
REPLICAS = 3
REVOCATIONS = 24


def conversion(source: str, replica: int) -> ConversionRecord:
    """What replica ``replica`` would store for ``source``: its own home code for it."""
    return ConversionRecord(
        region=ZHEJIANG.code,
        source_key=source,
        holder="h-" + source,
        converted_code_id=f"c-{replica}-{source}",
        converted_code=f"HC1:{replica}:{source}",
        issued_at=T0,
        expires_at=T0 + timedelta(days=1),
        created_at=T0,
    )


async def replicas(url: str, n: int = REPLICAS) -> list[PostgresStore]:
    return list(await asyncio.gather(*(PostgresStore.open(url) for _ in range(n))))


async def close(stores: Iterable[PostgresStore]) -> None:
    await asyncio.gather(*(s.close() for s in stores))


def region_key(region: str) -> RegionKey:
    public = PrivateKey.from_ed25519_seed(b"\x01" * 32).public_key()
    return RegionKey(region, public.fingerprint(), public, T0 - timedelta(days=1),
                     T0 + timedelta(days=300))  # fmt: skip


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_same_codes_converted_through_replicas_at_once_give_one_record_each(
    pg_url: str,
) -> None:
    sources = [f"src-{i:03d}" for i in range(120)]

    async def scenario() -> tuple[list[list[ConversionRecord]], list[ConversionRecord]]:
        stores = await replicas(pg_url)
        try:
            await stores[0].upsert_region(ZHEJIANG, actor=ACTOR, now=T0)
            calls = []
            for replica, store in enumerate(stores):
                # Overlapping batches in different orders: every source is claimed by every
                # replica, several times, concurrently.
                order = sources[replica::1] + sources[:replica]
                for start in range(0, len(order), 15):
                    batch = [conversion(s, replica) for s in order[start : start + 30]]
                    calls.append(store.claim_conversions(batch))
            answers = list(await asyncio.gather(*calls))
            return answers, await stores[0].list_conversions(limit=1000)
        finally:
            await close(stores)

    answers, stored = asyncio.run(scenario())
    assert sorted(r.source_key for r in stored) == sources  # one record per source
    winner = {r.source_key: r for r in stored}
    for answer in answers:
        for record in answer:
            assert record == winner[record.source_key]  # every caller got the stored one
    assert len({r.converted_code for r in stored}) == len(sources)


def test_trust_list_versions_published_through_replicas_are_unique_and_contiguous(
    pg_url: str,
) -> None:
    rounds = 8

    async def publisher(store: PostgresStore, replica: int) -> list[int]:
        """Publish ``rounds`` lists of its own, as the trust-list publisher does: read the
        latest, record the next; a concurrent publication means reading again."""
        mine = []
        for n in range(rounds):
            content = f"list {replica}.{n}".encode()
            while True:
                latest = await store.latest_trustlist()
                try:
                    got = await store.record_trustlist(
                        digest(content.decode()),
                        content,
                        expected_latest=0 if latest is None else latest.version,
                        now=T0,
                    )
                except ConcurrentChangeError:
                    continue
                mine.append(got.version)
                break
        return mine

    async def scenario() -> tuple[list[list[int]], list[Any]]:
        stores = await replicas(pg_url)
        try:
            mine = await asyncio.gather(*(publisher(s, i) for i, s in enumerate(stores)))
            kept = [await stores[0].get_trustlist(v) for v in range(1, rounds * REPLICAS + 2)]
            return list(mine), kept
        finally:
            await close(stores)

    mine, kept = asyncio.run(scenario())
    versions = [v for own in mine for v in own]
    assert sorted(versions) == list(range(1, rounds * REPLICAS + 1))  # unique, no gap
    assert kept[-1] is None
    lists = [k for k in kept if k is not None]
    assert len({k.digest for k in lists}) == len(lists)  # one list per version
    for own in mine:
        assert own == sorted(own)  # monotonic as each publisher sees it


def test_one_version_raced_for_by_two_replicas_goes_to_one_list(pg_url: str) -> None:
    async def scenario() -> list[Any]:
        stores = await replicas(pg_url, 2)
        try:
            results = await asyncio.gather(
                *(
                    s.record_trustlist(digest(f"l{i}"), f"l{i}".encode(), expected_latest=0, now=T0)
                    for i, s in enumerate(stores)
                ),
                return_exceptions=True,
            )
            return [*results, await stores[1].latest_trustlist()]
        finally:
            await close(stores)

    first, second, latest = asyncio.run(scenario())
    outcomes = sorted([type(first).__name__, type(second).__name__])
    assert outcomes == ["ConcurrentChangeError", "TrustListVersion"]
    winner = first if not isinstance(first, Exception) else second
    assert latest == winner and latest.version == 1


def test_audit_writes_through_replicas_at_once_stay_one_chain_that_verifies(pg_url: str) -> None:
    regions = [Region(f"{11 + i:02d}0000", f"Region {i}", Mode.SHOW, timedelta(hours=1))
               for i in range(12)]  # fmt: skip

    async def scenario() -> tuple[Any, int]:
        stores = await replicas(pg_url)
        try:
            calls = []
            for i, region in enumerate(regions):
                store = stores[i % len(stores)]
                other = stores[(i + 1) % len(stores)]
                calls.append(store.upsert_region(region, actor=ACTOR, now=T0))
                calls.append(
                    other.upsert_region(
                        Region(region.code, region.name + " renamed", region.mode, region.max_age),
                        actor="partner:" + region.code,
                        now=T0,
                    )
                )
            await asyncio.gather(*calls)
            await asyncio.gather(
                *(
                    stores[i % len(stores)].set_region_enabled(r.code, False, actor=ACTOR, now=T0)
                    for i, r in enumerate(regions)
                )
            )
            # Revoking a revoked key again changes nothing but is audited: appends to the chain
            # that do not move the registry version (whose row would serialise them anyway).
            key = region_key(regions[0].code)
            await stores[0].add_key(key, actor=ACTOR, now=T0)
            await asyncio.gather(
                *(
                    stores[i % len(stores)].apply_key_revocation(
                        key.region, key.kid, T0, digest=digest(f"rev {i}"), actor=ACTOR, now=T0
                    )
                    for i in range(REVOCATIONS)
                )
            )
            head = await verify_store(stores[1])
            return head, await stores[2].registry_version()
        finally:
            await close(stores)

    head, version = asyncio.run(scenario())
    assert version == 3 * len(regions) + 2  # the key added, revoked once
    assert head.count == 3 * len(regions) + 1 + REVOCATIONS  # every change audited, one chain


class Statements:
    """Counts what the store sends: each ``execute`` one round trip, each ``executemany`` one
    pipelined batch."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter[str] = Counter()
        execute, executemany = pgdb.PgConnection.execute, pgdb.PgConnection.executemany

        def counted_execute(conn: pgdb.PgConnection, sql: str, params: Any = ()) -> Any:
            self.calls["execute"] += 1
            return execute(conn, sql, params)

        def counted_executemany(conn: pgdb.PgConnection, sql: str, params: Any) -> Any:
            self.calls["executemany"] += 1
            return executemany(conn, sql, params)

        monkeypatch.setattr(pgdb.PgConnection, "execute", counted_execute)
        monkeypatch.setattr(pgdb.PgConnection, "executemany", counted_executemany)

    def total(self) -> int:
        total = sum(self.calls.values())
        self.calls.clear()
        return total


@pytest.mark.parametrize("n", [1, 20, 499])
def test_conversions_and_the_log_are_written_in_a_few_statements_per_batch(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    async def scenario() -> tuple[int, int, int, int]:
        store = await PostgresStore.open(pg_url)
        try:
            await store.upsert_region(ZHEJIANG, actor=ACTOR, now=T0)
            statements = Statements(monkeypatch)
            claimed = await store.claim_conversions([conversion(f"s{i}", 0) for i in range(n)])
            claim = statements.total()
            entries = [
                RecognitionEntry(T0, "330000", "convert", "recognised", "OK", f"h{i}", f"k{i}")
                for i in range(n)
            ]
            await store.append_recognitions(entries)
            log = statements.total()
            return len(claimed), claim, len(await store.list_recognitions(limit=1000)), log
        finally:
            await store.close()

    claimed, claim, logged, log = asyncio.run(scenario())
    assert (claimed, logged) == (n, n)
    assert psycopg.Pipeline.is_supported()  # so each executemany is one pipelined round trip
    # insert (one pipelined batch), revocations that apply (one batch), read back (few shapes)
    assert claim <= 2 + 5 * 4
    assert log <= 5 * 4  # multi-row inserts of the fixed shapes


def test_a_replica_reads_what_another_committed_at_once(pg_url: str) -> None:
    """No replica caches the database: a write through one is read through another."""

    async def scenario() -> list[Region]:
        writer, reader = await replicas(pg_url, 2)
        try:
            await writer.upsert_region(ZHEJIANG, actor=ACTOR, now=T0)
            return await reader.list_regions()
        finally:
            await close([writer, reader])

    assert asyncio.run(scenario()) == [ZHEJIANG]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM registry_version").fetchone() == (1,)


def test_conversions_claimed_while_a_revocation_batch_is_applied_are_all_revoked(
    pg_url: str,
) -> None:
    """A revocation batch (exclusive) and conversions of the codes it names (concurrent, through
    other replicas) at once: whichever commits first, every conversion of a revoked code ends up
    revoked, from the batch's time."""
    sources = [f"rv-{i:03d}" for i in range(60)]
    effective = T0 + timedelta(minutes=5)

    async def scenario() -> list[ConversionRecord]:
        stores = await replicas(pg_url)
        try:
            await stores[0].upsert_region(ZHEJIANG, actor=ACTOR, now=T0)
            claims = [
                stores[1 + i % 2].claim_conversions([conversion(s, i % 2) for s in chunk])
                for i, chunk in enumerate(sources[k : k + 5] for k in range(0, len(sources), 5))
            ]
            batch = RevocationBatchChange(
                region=ZHEJIANG.code,
                batch_id="b1",
                effective_at=effective,
                digest=digest("batch b1"),
                codes=tuple(sources),
                holders=(),
                actor="partner:330000",
                at=T0,
            )
            middle = len(claims) // 2
            await asyncio.gather(
                *claims[:middle], stores[0].apply_revocation_batch(batch), *claims[middle:]
            )
            return await stores[0].list_conversions(limit=1000)
        finally:
            await close(stores)

    stored = asyncio.run(scenario())
    assert sorted(r.source_key for r in stored) == sources
    assert {r.revoked_at for r in stored} == {effective}


def test_the_same_record_claimed_again_and_again_at_once_is_stored_once_without_an_error(
    pg_url: str,
) -> None:
    """A writer that retries a batch through another replica sends the very same records (the
    same converted code ids): the retry meets the first on any of the unique keys and gets
    the stored records back, never ALREADY_EXISTS."""
    records = [conversion(f"same-{i:03d}", 0) for i in range(120)]
    # Overlapping windows: each record is in several batches, at different places in each.
    batches = [records[start : start + 24] for start in range(0, len(records), 4)] * 2

    async def scenario() -> list[list[ConversionRecord]]:
        stores = await replicas(pg_url)
        try:
            await stores[0].upsert_region(ZHEJIANG, actor=ACTOR, now=T0)
            calls = [stores[i % len(stores)].claim_conversions(b) for i, b in enumerate(batches)]
            return list(await asyncio.gather(*calls))
        finally:
            await close(stores)

    answers = asyncio.run(scenario())
    assert answers == batches
