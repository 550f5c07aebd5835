"""The store sends SQL of a bounded number of shapes, whatever the batch sizes (issue 8 item 14).

sqlite3 caches up to 128 prepared statements per connection, keyed by SQL text: a statement
whose text depends on the batch length (one multi-row INSERT per length) fills that cache with
statements used once and keeps their memory, which grew the gateway by ~0.6 kB per logged
decision. These tests watch every statement the store runs (sqlite3's trace callback) while
writing batches of every length from 1 to a few hundred, and count the distinct shapes.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.aio import run

from keys.personal import RecognitionEntry, StockBatch, StockConversion
from keys.store import BATCH_SHAPES, SQLiteStore, batch_shapes

T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
# A literal in traced SQL (sqlite3 traces statements with their values filled in).
_LITERAL = re.compile(r"X'[0-9A-Fa-f]*'|'(?:[^']|'')*'|-?\b\d+(?:\.\d+)?\b|\bNULL\b")


def _shape(sql: str) -> str:
    """The statement with every literal replaced by ``?``: its prepared-statement text."""
    return _LITERAL.sub("?", sql)


class Shapes:
    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, sql: str) -> None:
        self.seen.add(_shape(sql))

    def of(self, table: str) -> set[str]:
        return {s for s in self.seen if f"INTO {table} " in s or f"FROM {table} " in s}


@pytest.mark.parametrize("n", [0, 1, 4, 5, 6, 99, 100, 101, 499, 500, 501, 1234, 10_007])
def test_batch_shapes_cut_every_length_into_the_fixed_sizes(n: int) -> None:
    items = list(range(n))
    chunks = list(batch_shapes(items))
    assert [x for chunk in chunks for x in chunk] == items
    assert all(len(chunk) in BATCH_SHAPES for chunk in chunks)


def _entry(n: int) -> RecognitionEntry:
    return RecognitionEntry(
        T0, "110000", "show", "refused", "SIGNATURE_INVALID", f"h1-{n}", f"c-{n}", "k1", f"r{n}"
    )


def test_recognition_log_batches_of_every_length_use_few_statement_texts(tmp_path: Path) -> None:
    shapes = Shapes()

    async def body() -> int:
        store = await SQLiteStore.open(tmp_path / "t.db", trace=shapes)
        shapes.seen.clear()  # the schema's migrations run once, at open
        try:
            n = 0
            for size in [*range(1, 260), 499, 500, 501, 777, 1003]:
                await store.append_recognitions([_entry(n + i) for i in range(size)])
                n += size
            return len(await store.list_recognitions(limit=100_000))
        finally:
            await store.close()

    written = run(body())
    assert written == sum([*range(1, 260), 499, 500, 501, 777, 1003])
    inserts = {s for s in shapes.of("recognitions") if s.startswith("INSERT")}
    assert 1 <= len(inserts) <= len(BATCH_SHAPES)
    assert len(shapes.seen) < 32  # far below sqlite3's cache of 128 statements


def test_stock_batches_of_every_length_use_few_statement_texts(tmp_path: Path) -> None:
    shapes = Shapes()
    digest = hashlib.sha256(b"file").hexdigest()

    def record(n: int) -> StockConversion:
        return StockConversion(
            "370100", f"C{n}", f"h1-{n}", f"SD{n:030d}", f"SD1:{n}", "green",
            T0, T0 + timedelta(days=1), T0,
        )  # fmt: skip

    async def body() -> int:
        store = await SQLiteStore.open(tmp_path / "t.db", trace=shapes)
        shapes.seen.clear()  # the schema's migrations run once, at open
        try:
            await store.open_stock_job(digest, "file.csv", T0)
            row = made = 0
            for size in [*range(1, 130), 501]:
                # every batch also repeats one certificate already stored (an "already converted")
                # on a row of its own: each row of the file is in one batch only
                numbers = [made + i for i in range(size)] + ([0] if made else [])
                batch = StockBatch(
                    digest,
                    row,
                    row + len(numbers),
                    tuple(record(i) for i in numbers),
                    tuple(row + k + 1 for k in range(len(numbers))),
                    {"rows": len(numbers)},
                    T0,
                )
                await store.commit_stock_batch(batch)
                row += len(numbers)
                made += size
            return await store.count_stock_conversions()
        finally:
            await store.close()

    assert run(body()) == sum([*range(1, 130), 501])
    assert 1 <= len({s for s in shapes.of("stock_conversions") if "INSERT" in s}) <= 5
    assert 1 <= len({s for s in shapes.of("stock_conversions") if "SELECT" in s}) <= 6
    assert len(shapes.seen) < 32
