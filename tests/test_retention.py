"""Retention: the recognition log (off the request path), trustgw purge and the server's purge."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.aio import run, serving
from support.clock import REAL_NOW
from support.wait import eventually

from adapters.base import Colour
from adapters.regions import REGION_SPECS
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.cli import main
from gateway.runtime.reclog import RecognitionLog
from gateway.runtime.retention import PeriodicPurge, RetentionPolicy, purge
from keys.errors import StoreUnavailableError
from keys.model import ConversionRecord, Mode, Region
from keys.personal import RecognitionEntry, StockBatch, StockConversion
from keys.store import SQLiteStore
from keys.timeutil import to_iso

T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SHOW = next(s.code for s in REGION_SPECS if s.mode is Mode.SHOW)
CONVERT = next(s.code for s in REGION_SPECS if s.mode is Mode.CONVERT)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"recognitions_days": -1}, id="negative-days"),
        pytest.param({"conversions_days": 40000}, id="over-a-century"),
        pytest.param({"recognitions_days": True}, id="bool-days"),
        pytest.param({"interval_seconds": -5}, id="negative-interval"),
    ],
)
def test_policy_validates(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetentionPolicy(**kwargs)


def test_policy_defaults_and_cutoffs() -> None:
    policy = RetentionPolicy()
    assert (policy.recognitions_days, policy.conversions_days) == (30, 180)
    assert policy.cutoffs(T0) == (T0 - 30 * DAY, T0 - 180 * DAY)
    assert RetentionPolicy(recognitions_days=None).cutoffs(T0)[0] is None


def _code_key(region: str, code_id: str) -> str:  # a stand-in for Pseudonymiser.code_key
    return f"c1-{region}-{code_id}"


def text_of(data_dir: Path) -> str:
    """Every value of every table of the data directory's database, as text."""
    with sqlite3.connect(data_dir / "trustgw.db") as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return repr([conn.execute(f"SELECT * FROM {t}").fetchall() for t in tables])  # noqa: S608


def _entry(at: datetime, n: int = 0) -> RecognitionEntry:
    return RecognitionEntry(
        at, "110000", "show", "recognised", "RECOGNISED", f"h1-{n}", f"code-{n}", "k1", f"r{n}"
    )


def _conversion(source: str, expires: datetime, revoked: datetime | None = None) -> Any:
    return ConversionRecord(
        region=CONVERT,
        source_key=source,
        holder="h1-x",
        converted_code_id=f"SD-{source}",
        converted_code=f"SD1:{source}",
        issued_at=expires - DAY,
        expires_at=expires,
        created_at=expires - DAY,
        revoked_at=revoked,
    )


def _stock(certificate_id: str, expires: datetime) -> StockConversion:
    return StockConversion(
        "370100", certificate_id, "h1-y", f"SD-{certificate_id}", f"SD1:{certificate_id}",
        "green", expires - DAY, expires, expires - DAY,
    )  # fmt: skip


async def _filled(path: Path) -> SQLiteStore:
    store = await SQLiteStore.open(path)
    await store.upsert_region(Region(CONVERT, "x", Mode.CONVERT, DAY))
    await store.append_recognitions([_entry(T0 - 40 * DAY, 1), _entry(T0 - 29 * DAY, 2)])
    await store.put_conversions(
        [
            _conversion("old", T0 - 200 * DAY),
            _conversion("recent", T0 - 100 * DAY),
            _conversion("old-revoked-long-ago", T0 - 200 * DAY, T0 - 190 * DAY),
            _conversion("old-revoked-recently", T0 - 200 * DAY, T0 - 10 * DAY),
        ]
    )
    job = await store.open_stock_job("b" * 64, "f.csv", T0)
    records = (_stock("A", T0 - 181 * DAY), _stock("B", T0 - 179 * DAY))
    await store.commit_stock_batch(StockBatch(job.digest, 0, 2, records, (1, 2), {}, T0))
    return store


def _counts(path: Path) -> tuple[int, int, int]:
    with sqlite3.connect(path) as conn:
        return tuple(
            conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # noqa: S608
            for t in ("recognitions", "conversions", "stock_conversions")
        )


def test_purge_deletes_what_is_older_than_the_policy(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"

    async def scenario() -> tuple[Any, Any, Any]:
        store = await _filled(path)
        try:
            dry = await purge(store, RetentionPolicy(), T0, dry_run=True)
            assert _counts(path) == (2, 4, 2)
            done = await purge(store, RetentionPolicy(), T0)
            again = await purge(store, RetentionPolicy(), T0)
            return dry, done, again
        finally:
            await store.close()

    dry, done, again = run(scenario())
    assert (dry.recognitions, dry.conversions, dry.stock_conversions, dry.kept_revoked) == (
        1, 2, 1, 1,
    )  # fmt: skip
    assert dry.dry_run and not done.dry_run
    assert (done.recognitions, done.conversions, done.stock_conversions) == (1, 2, 1)
    assert (again.recognitions, again.conversions, again.stock_conversions) == (0, 0, 0)
    with sqlite3.connect(path) as conn:
        kept = {r[0] for r in conn.execute("SELECT source_key FROM conversions")}
        assert kept == {"recent", "old-revoked-recently"}
        assert conn.execute("SELECT holder FROM recognitions").fetchall() == [("h1-2",)]
        assert conn.execute("SELECT certificate_id FROM stock_conversions").fetchall() == [("B",)]


def test_keep_forever_skips_a_kind(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"

    async def scenario() -> Any:
        store = await _filled(path)
        try:
            return await purge(store, RetentionPolicy(conversions_days=None, visits_days=None), T0)
        finally:
            await store.close()

    result = run(scenario())
    assert (result.recognitions, result.conversions, result.stock_conversions) == (1, 0, 0)
    assert set(result.cutoffs) == {"recognitions"}


def test_purge_command(tmp_path: Path, capsys: Any) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()

    async def fill() -> None:
        await (await _filled(data_dir / "trustgw.db")).close()

    run(fill())
    args = ["purge", "--data-dir", str(data_dir), "--at", to_iso(T0)]
    assert main([*args, "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert (dry["dry_run"], dry["recognitions"], dry["conversions"]) == (True, 1, 2)
    assert dry["stock_conversions"] == 1 and dry["kept_revoked_conversions"] == 1
    assert main([*args, "--recognitions-days", "keep", "--conversions-days", "1000"]) == 0
    out = capsys.readouterr().out
    assert "deleted 0 recognition log entries" in out and "deleted 0 partner" in out
    assert main(args) == 0
    assert "deleted 1 recognition log entries decided before 2026-02-09" in capsys.readouterr().out
    assert _counts(data_dir / "trustgw.db") == (1, 2, 1)
    assert main(["purge", "--data-dir", str(tmp_path / "none")]) == 2
    assert main([*args, "--recognitions-days", "-3"]) == 2


class FlakyStore:
    def __init__(self) -> None:
        self.fail = True
        self.batches: list[list[RecognitionEntry]] = []

    async def append_recognitions(self, entries: Sequence[RecognitionEntry]) -> None:
        if self.fail:
            raise StoreUnavailableError("down")
        self.batches.append(list(entries))


def test_recognition_log_keeps_entries_while_the_store_is_down_within_bounds() -> None:
    async def scenario() -> tuple[FlakyStore, RecognitionLog]:
        store = FlakyStore()
        reclog = RecognitionLog(store, _code_key, max_batch=3, max_pending=5)
        for n in range(7):
            reclog.record(_entry(T0, n))
        await reclog.flush()  # fails: keeps the newest 5
        store.fail = False
        await reclog.flush()
        return store, reclog

    store, reclog = run(scenario())
    assert reclog.dropped == 2 and reclog.written == 5
    assert [[e.holder for e in b] for b in store.batches] == [
        ["h1-2", "h1-3", "h1-4"],
        ["h1-5", "h1-6"],
    ]


@pytest.mark.integration
def test_the_server_logs_every_decision_without_raw_identifiers(
    codes: Any, prepared_dir: Any
) -> None:
    now = REAL_NOW  # a serving gateway reads the real clock
    data_dir = prepared_dir(now)
    show, convert = codes(SHOW, now), codes(CONVERT, now)
    holder = ("110101199003071233", "张三")
    requests = [
        ("a", show(holder=holder, code_id="SHOW-CODE-1")),
        ("b", convert(holder=holder, code_id="CONVERT-CODE-1")),
        ("c", show(Colour.RED, holder=holder, code_id="SHOW-CODE-2")),
        ("d", "garbage"),
    ]

    async def scenario() -> None:
        async with serving(data_dir) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                for request_id, code in requests:
                    await stub.Recognise(
                        pb.RecogniseRequest(request_id=request_id, code=code), timeout=5
                    )

    run(scenario())  # closing the gateway writes what the log still holds
    with sqlite3.connect(data_dir / "trustgw.db") as conn:
        rows = conn.execute(
            "SELECT request_id, region, mode, decision, reason, holder, code_key, kid"
            " FROM recognitions ORDER BY rowid"
        ).fetchall()
    assert [r[0] for r in rows] == ["a", "b", "c", "d"]
    assert [(r[2], r[3], r[4]) for r in rows[:3]] == [
        ("show", "recognised", "RECOGNISED"),
        ("convert", "recognised", "RECOGNISED"),
        ("show", "refused", "NOT_GREEN"),
    ]
    assert rows[3][3] == "refused"
    assert rows[0][5] == rows[2][5] and rows[0][5].startswith("h1-")
    unkeyed = hashlib.sha256(f"{SHOW}|SHOW-CODE-1".encode()).hexdigest()
    assert rows[0][6].startswith("c1-") and unkeyed not in text_of(data_dir)
    assert rows[0][6] != rows[2][6]  # one code key per code
    assert all(r[7] for r in rows[:3]) and rows[3][5:] == ("", "", "")
    text = repr(rows)
    assert "SHOW-CODE" not in text and holder[0] not in text and holder[1] not in text


def test_the_recognition_log_can_be_turned_off(codes: Any, prepared_dir: Any) -> None:
    from gateway.runtime.config import GatewayConfig
    from gateway.runtime.gateway import Gateway

    data_dir = prepared_dir(REAL_NOW)  # Gateway.open checks its keys at the real time

    async def scenario() -> Any:
        config = GatewayConfig(data_dir, retention=RetentionPolicy(recognition_log=False))
        gateway = await Gateway.open(config)
        await gateway.close()
        return gateway.reclog

    assert run(scenario()) is None


def test_periodic_purge_runs_and_survives_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"

    async def scenario() -> tuple[int, int]:
        store = await _filled(path)
        purger = PeriodicPurge(store, RetentionPolicy(interval_seconds=0.05), first_delay=0)
        purger.start()
        first = await eventually(lambda: purger.last, what="the first periodic purge")
        await purger.stop()
        await store.close()
        assert await PeriodicPurge(store, RetentionPolicy()).run_once(T0) is None  # closed
        assert first is not None
        return first.recognitions, first.stock_conversions

    # The clock's now is long after T0: everything filled in is past its retention.
    assert run(scenario()) == (2, 2)


class SlowStore:
    """A store whose first write waits until it is released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.batches: list[list[RecognitionEntry]] = []

    async def append_recognitions(self, entries: Sequence[RecognitionEntry]) -> None:
        await self.release.wait()
        self.batches.append(list(entries))


def test_a_flush_waits_for_the_batch_already_being_written() -> None:
    """flush() returns only once everything recorded before it is written, also a batch the
    background task had taken and was still writing (tests and shutdown rely on it)."""

    async def scenario() -> tuple[SlowStore, bool]:
        store = SlowStore()
        reclog = RecognitionLog(store, _code_key)
        reclog.record(_entry(T0, 1))
        background = asyncio.create_task(reclog.flush())  # as the background task would
        await asyncio.sleep(0)  # it has taken the entry and waits for the store
        caller = asyncio.create_task(reclog.flush())
        for _ in range(5):
            await asyncio.sleep(0)
        returned_early = caller.done()
        store.release.set()
        await asyncio.gather(background, caller)
        return store, returned_early

    store, returned_early = run(scenario())
    assert not returned_early
    assert [[e.holder for e in b] for b in store.batches] == [["h1-1"]]


def test_a_flush_leaves_what_came_during_its_write_to_the_next_interval() -> None:
    """Under load a flush writes what waited when it began, in one transaction, and returns:
    the entries that arrive while it writes go with the next interval's batch, not in a chain
    of tiny transactions back to back (one WAL sync and one hop to the store's thread each)."""

    async def scenario() -> tuple[SlowStore, list[list[str]]]:
        store = SlowStore()
        reclog = RecognitionLog(store, _code_key)
        reclog.record(_entry(T0, 1))
        flushing = asyncio.create_task(reclog.flush())
        await asyncio.sleep(0)  # it has taken entry 1 and waits for the store
        reclog.record(_entry(T0, 2))
        reclog.record(_entry(T0, 3))
        store.release.set()
        await flushing
        after_first = [[e.holder for e in b] for b in store.batches]
        await reclog.flush()  # the next interval's
        return store, after_first

    store, after_first = run(scenario())
    assert after_first == [["h1-1"]]
    assert [[e.holder for e in b] for b in store.batches] == [["h1-1"], ["h1-2", "h1-3"]]
