"""Records the conformance suite stores: regions, keys, anchors, submissions, conversions, ...

Plain builders with fixed times (``T0``): every backend is given exactly the same input.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from keys.anchors import Anchor, AnchorSet
from keys.crypto import PrivateKey
from keys.model import ConversionRecord, Mode, Region, RegionKey
from keys.personal import RecognitionEntry, StockBatch, StockConversion
from keys.records import KeySetChange, RevocationBatchChange
from keys.store import Store

T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
ACTOR = "operator:conform"
BEIJING = Region("110000", "Beijing", Mode.SHOW, timedelta(hours=24))
ZHEJIANG = Region("330000", "Zhejiang", Mode.CONVERT, timedelta(hours=12))
SHANGHAI = Region("310000", "Shanghai", Mode.CONVERT, timedelta(hours=6))


def digest(text: str) -> str:
    """A SHA-256 hex digest (what submissions and stock jobs are keyed by)."""
    return hashlib.sha256(text.encode()).hexdigest()


def private(seed: int) -> PrivateKey:
    """A deterministic Ed25519 key."""
    return PrivateKey.from_ed25519_seed(bytes([seed]) * 32)


def region_key(region: str = "110000", seed: int = 1, **changes: Any) -> RegionKey:
    """A partner key of ``region`` valid around ``T0``."""
    public = private(seed).public_key()
    fields: dict[str, Any] = {
        "region": region,
        "kid": public.fingerprint(),
        "public_key": public,
        "not_before": T0 - timedelta(days=30),
        "not_after": T0 + timedelta(days=335),
    }
    fields.update(changes)
    return RegionKey(**fields)


def anchors(*seeds: int, threshold: int = 1) -> AnchorSet:
    """An anchor set of the Ed25519 keys with these seeds."""
    return AnchorSet(
        tuple(Anchor(f"anchor-{seed}", private(seed).public_key()) for seed in seeds), threshold
    )


def keyset(
    region: str,
    version: int,
    keys: tuple[RegionKey, ...],
    *,
    expected_version: int,
    expected_generation: int = 1,
    new_anchors: AnchorSet | None = None,
    at: datetime = T0,
) -> KeySetChange:
    """A verified key set (as :mod:`keys.trust` hands it to the store)."""
    return KeySetChange(
        region=region,
        version=version,
        expires=at + timedelta(days=30),
        digest=digest(f"keyset|{region}|{version}|{[k.kid for k in keys]}"),
        envelope=f"envelope {region} v{version}".encode(),
        keys=keys,
        anchors=new_anchors,
        expected_version=expected_version,
        expected_generation=expected_generation,
        actor=f"partner:{region}",
        at=at,
    )


def revocation_batch(
    region: str,
    batch_id: str,
    *,
    codes: tuple[str, ...] = (),
    holders: tuple[str, ...] = (),
    effective_at: datetime = T0,
    tag: str = "",
) -> RevocationBatchChange:
    """A verified revocation batch (codes as code keys, holders as pseudonyms)."""
    return RevocationBatchChange(
        region=region,
        batch_id=batch_id,
        effective_at=effective_at,
        digest=digest(f"revocations|{region}|{batch_id}|{codes}|{holders}|{tag}"),
        codes=codes,
        holders=holders,
        actor=f"partner:{region}",
        at=T0,
    )


def conversion(source: str, region: str = "330000", **changes: Any) -> ConversionRecord:
    """A partner conversion of the source code keyed ``source``."""
    fields: dict[str, Any] = {
        "region": region,
        "source_key": source,
        "holder": "h1-" + source,
        "converted_code_id": "c-" + source,
        "converted_code": "HC1:" + source,
        "issued_at": T0,
        "expires_at": T0 + timedelta(days=1),
        "created_at": T0,
    }
    fields.update(changes)
    return ConversionRecord(**fields)


def recognition(n: int, at: datetime = T0, region: str = "110000") -> RecognitionEntry:
    """A decided code for the recognition log (code id already keyed)."""
    return RecognitionEntry(
        at, region, "show", "recognised", "RECOGNISED", f"h1-{n}", f"ck-{n}", "k1", f"r{n}"
    )


def stock(n: int, city: str = "370100", **changes: Any) -> StockConversion:
    """A stock certificate conversion."""
    fields: dict[str, Any] = {
        "city": city,
        "certificate_id": f"cert-{n}",
        "holder": f"h1-stock-{n}",
        "code_id": f"SC-{n}",
        "code": f"SC1:{n}",
        "colour": "green",
        "issued_at": T0,
        "expires_at": T0 + timedelta(days=7),
        "created_at": T0,
    }
    fields.update(changes)
    return StockConversion(**fields)


def stock_batch(job: str, after_row: int, *numbers: int, **counts: int) -> StockBatch:
    """A batch of stock conversions ``numbers`` covering rows after_row+1 .. after_row+len."""
    rows = tuple(range(after_row + 1, after_row + 1 + len(numbers)))
    return StockBatch(
        digest=job,
        after_row=after_row,
        last_row=after_row + len(numbers),
        records=tuple(stock(n) for n in numbers),
        rows=rows,
        counts={"read": len(numbers), **counts},
        at=T0,
    )


async def read_snapshot(store: Store) -> dict[str, Any]:
    """What the protocols' reads give back (no write transaction, not even a dry run)."""
    head, entries = await store.read_audit(0, 1000)
    return {
        "registry": await store.read_registry(),
        "anchors": await store.all_anchors(),
        "revocations": await store.list_revocations(),
        "audit": (head, entries),
        "trustlist": await store.latest_trustlist(),
    }


async def snapshot(store: Store) -> dict[str, Any]:
    """Everything the protocols can read back, to compare before and after a failure: the
    reads, and the counts of what a purge would delete (a dry run, in a write transaction)."""
    counts = await store.purge(
        recognitions_before=FAR_FUTURE, conversions_before=FAR_FUTURE, dry_run=True
    )
    return {**await read_snapshot(store), "counts": counts}


FAR_FUTURE = T0 + timedelta(days=3650)


async def populate(store: Store) -> None:
    """A little of everything, through the protocols: what failure tests check is kept."""
    await store.install_partner(BEIJING, anchors(50), replace=False, actor=ACTOR, now=T0)
    await store.upsert_region(ZHEJIANG, actor=ACTOR, now=T0)
    await store.add_key(region_key("110000", 1), actor=ACTOR, now=T0)
    await store.add_key(region_key("330000", 2), actor=ACTOR, now=T0)
    await store.claim_conversions([conversion("a"), conversion("b")])
    await store.append_recognitions([recognition(1), recognition(2)])
    await store.record_trustlist(digest("list 1"), b'{"v":1}', expected_latest=0, now=T0)


# A stock job with two converted certificates, as rows of the stock tables (their shape is the
# same since they were created): old schemas are seeded with these statements, not through the
# current store, whose commit_stock_batch may also write tables a later migration adds.
STOCK_JOB_SQL = (
    "INSERT INTO stock_jobs (digest, source, committed_rows, counts, started_at, updated_at,"
    ' finished_at) VALUES (?, \'city.csv\', 2, \'{"converted": 2, "green": 2, "read": 2}\','
    " ?, ?, NULL)"
)
STOCK_ROW_SQL = (
    "INSERT INTO stock_conversions (city, certificate_id, holder, code_id, code, colour,"
    " issued_at, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def stock_seed(job: str) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements and parameters of :data:`STOCK_JOB_SQL` and two certificates."""
    at = int(T0.timestamp())
    rows: list[tuple[str, tuple[Any, ...]]] = [(STOCK_JOB_SQL, (job, at, at))]
    for n in (1, 2):
        record = stock(n)
        rows.append(
            (
                STOCK_ROW_SQL,
                (record.city, record.certificate_id, record.holder, record.code_id, record.code,
                 record.colour, at, int(record.expires_at.timestamp()), at),
            )
        )  # fmt: skip
    return rows
