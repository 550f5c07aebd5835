"""No personal identifier is stored or logged: the demo and a batch conversion with known people.

Known names and ID numbers go into the simulated partners' codes (the demo) and into a stock
file (convert-batch, with good and bad rows); with every logger at DEBUG, none of them, nor their
unkeyed SHA-256 (alone or as a partner's ``holder_hash``), may appear in any file of the data
directories (database with its -wal/-shm, key directory, PKI), the error report, the logs or the
output.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import logging
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from support.clock import REAL_NOW
from support.wait import eventually

from adapters.base import Colour
from adapters.fields import id_check_digit
from adapters.regions import REGION_SPECS
from bench.stock import sample_rows, write_csv
from gateway import demo
from gateway.cli import main
from keys.model import HOME_REGION
from keys.pseudonym import holder_hash


def _id(first17: str) -> str:
    return first17 + id_check_digit(first17)


KNOWN = [
    ("张三", _id("11010119900307123")),
    ("李四", _id("31010419851224567")),
    ("王五", _id("44030519780615234")),
    ("赵六", _id("37010219920101345")),
    ("钱七", _id("37020319881111456")),
    ("孙八", _id("51010720000229567")),
    ("周九", _id("33010619700707678")),
    ("吴十", _id("12010319650505789")),
    ("郑十一", _id("13010219991231890")),
    ("冯十二", _id("23010319830303901")),
    ("陈十三", _id("50010319950909012")),
    ("欧阳十四", _id("65010219600101123")),
    ("Zhang San", _id("11010119900307987")),
]
assert KNOWN[0] == ("张三", "110101199003071233")


def _needles() -> dict[str, bytes]:
    """Every form in which a known person must not appear."""
    needles: dict[str, bytes] = {}
    regions = [HOME_REGION, *(s.code for s in REGION_SPECS)]
    for name, id_number in KNOWN:
        needles[f"name {name}"] = name.encode()
        needles[f"id {id_number}"] = id_number.encode()
        for what, value in (("name", name), ("id", id_number)):
            digest = hashlib.sha256(value.encode()).hexdigest()
            needles[f"sha256({what} {value})"] = digest.encode()
            needles[f"SHA256({what} {value})"] = digest.upper().encode()
        for region in regions:
            needles[f"holder_hash({region}, {id_number})"] = holder_hash(region, id_number).encode()
    return needles


def _found(data: bytes, needles: dict[str, bytes]) -> list[str]:
    return [label for label, needle in needles.items() if needle in data]


def _scan_tree(root: Path, needles: dict[str, bytes]) -> dict[str, list[str]]:
    hits: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            found = _found(path.read_bytes(), needles)
            if found:
                hits[str(path.relative_to(root))] = found
    return hits


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in ("trustgw", "trustgw.keys", "trustgw.engine", "trustgw.server"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    return caplog


@pytest.mark.integration
def test_no_personal_identifier_is_stored_or_logged(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    people = itertools.cycle(KNOWN)

    def known_holder(rng: random.Random) -> tuple[str, str]:
        name, id_number = next(people)
        return id_number, name

    # The demo: every region's green, yellow, red, expired and forged codes carry known people.
    monkeypatch.setattr(demo, "fake_holder", known_holder)
    demo_dir = tmp_path / "demo"
    demo_out = io.StringIO()
    assert asyncio.run(demo.run_demo(demo_out, keep=demo_dir)) == 0
    # The demo ends with the keys' logger at ERROR; the batch conversion logs at DEBUG again.
    logging.getLogger("trustgw.keys").setLevel(logging.DEBUG)

    # A batch conversion into the demo's data directory: known people in good and bad rows.
    now = REAL_NOW  # the demo made its keys at the real time
    rows = list(sample_rows(40, now, seed=3))
    for i, (name, id_number) in enumerate(KNOWN):
        rows[i] = {**rows[i], "name": name, "id_number": id_number}
    name, id_number = KNOWN[0]
    bad = [
        {**rows[20], "certificate_id": "BAD-1", "name": name, "id_number": id_number,
         "status": "purple"},
        {**rows[21], "certificate_id": "BAD-2", "name": name, "id_number": id_number[:17]},
        {**rows[22], "certificate_id": id_number, "name": name, "id_number": id_number},
        {**rows[23], "certificate_id": "BAD-4", "name": name, "id_number": id_number,
         "city": id_number[:6]},
        {**rows[24], "certificate_id": "BAD-5", "name": name * 40, "id_number": id_number},
        {**rows[0], "id_number": KNOWN[1][1]},  # the same certificate for another holder
    ]  # fmt: skip
    stock = tmp_path / "stock.csv"
    write_csv(stock, iter(rows + bad))
    report = tmp_path / "errors.jsonl"
    assert main(["-v", "convert-batch", str(stock), "--data-dir", str(demo_dir),
                 "--report", str(report)]) == 0  # fmt: skip
    assert main(["-v", "convert-batch", str(stock), "--data-dir", str(demo_dir), "--json"]) == 0
    assert main(["-v", "purge", "--data-dir", str(demo_dir), "--dry-run"]) == 0
    out, err = capfd.readouterr()
    assert "converted" in out and report.read_text().count("\n") == 6

    # The demo and the conversion did store people: as pseudonyms.
    import sqlite3

    with sqlite3.connect(demo_dir / "trustgw.db") as conn:
        logged = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT holder) FROM recognitions"
        ).fetchone()
        stored = conn.execute("SELECT COUNT(*) FROM stock_conversions").fetchone()[0]
    assert logged[0] == 82 and logged[1] > 5  # 70 offline decisions, 12 online (the demo)
    assert stored == 40

    needles = _needles()
    hits = _scan_tree(demo_dir, needles)
    # The scan covered the store, which holds the gateway's keyring too (no keys/ any more).
    assert (demo_dir / "trustgw.db").is_file() and not (demo_dir / "keys").exists()
    for label, data in (
        ("error report", report.read_bytes()),
        ("logs", debug_logs.text.encode()),
        ("log record arguments", repr([r.args for r in debug_logs.records]).encode()),
        ("demo output", demo_out.getvalue().encode()),
        ("stdout", out.encode()),
        ("stderr", err.encode()),
    ):
        found = _found(data, needles)
        if found:
            hits[label] = found
    assert hits == {}
    assert debug_logs.records, "logging was captured"


def test_the_needles_would_be_found(tmp_path: Path) -> None:
    """The scan itself works: a planted name, ID number and holder hash are each reported."""
    name, id_number = KNOWN[0]
    (tmp_path / "a-wal").write_bytes(b"xx" + name.encode() + b"yy")
    (tmp_path / "b").write_text(holder_hash("110000", id_number))
    (tmp_path / "c").write_text(f"...{id_number}...")
    hits = _scan_tree(tmp_path, _needles())
    assert hits == {
        "a-wal": [f"name {name}"],
        "b": [f"holder_hash(110000, {id_number})"],
        "c": [f"id {id_number}"],
    }
    assert _found(hashlib.sha256(name.encode()).hexdigest().encode(), _needles())


@pytest.mark.integration
def test_nothing_personal_in_a_live_database_and_its_wal(
    codes: Any,
    prepared_dir: Any,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    """While the gateway serves (its -wal and -shm files in use) and a batch conversion runs
    beside it, the data directory holds the people only as pseudonyms."""
    import sqlite3

    import grpc
    from support.aio import serving

    from gateway.api.v1 import recognition_pb2 as pb
    from gateway.api.v1 import recognition_pb2_grpc as pb_grpc

    now = REAL_NOW  # a serving gateway reads the real clock
    data_dir = prepared_dir(now)
    regions = [s.code for s in REGION_SPECS]
    stock = tmp_path / "stock.csv"
    rows = list(sample_rows(len(KNOWN), now, seed=9))
    people = zip(rows, KNOWN, strict=True)
    write_csv(stock, iter({**r, "name": n, "id_number": i} for r, (n, i) in people))
    needles = _needles()

    async def scenario() -> dict[str, list[str]]:
        async with serving(data_dir) as (gateway, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                for n, (name, id_number) in enumerate(KNOWN):
                    factory = codes(regions[n % len(regions)], now)
                    for colour in (Colour.GREEN, Colour.RED):
                        code = factory(colour, holder=(id_number, name))
                        await stub.Recognise(pb.RecogniseRequest(code=code), timeout=5)
            args = ["-v", "convert-batch", str(stock), "--data-dir", str(data_dir), "-q"]
            assert await asyncio.to_thread(main, args) == 0
            reclog = gateway.reclog

            async def written() -> bool:
                # A flush keeps its entries when the store is busy (the conversion beside it
                # holds the write lock past the busy timeout under load) and returns: flush
                # again until all 26 decisions are in the database.
                await reclog.flush()
                return reclog.written == 26

            await eventually(written, what="the recognition log's 26 entries written")
            assert (data_dir / "trustgw.db-wal").is_file()
            with sqlite3.connect(data_dir / "trustgw.db") as conn:
                assert conn.execute("SELECT COUNT(*) FROM recognitions").fetchone()[0] == 26
                assert conn.execute("SELECT COUNT(*) FROM stock_conversions").fetchone()[0] == 13
            return _scan_tree(data_dir, needles)

    hits = asyncio.run(scenario())
    out, err = capfd.readouterr()
    for label, data in (
        ("logs", debug_logs.text.encode()),
        ("stdout", out.encode()),
        ("stderr", err.encode()),
    ):
        if found := _found(data, needles):
            hits[label] = found
    assert hits == {}


@pytest.mark.integration
def test_nothing_personal_is_kept_of_arrival_declarations(
    codes: Any,
    prepared_dir: Any,
    capfd: pytest.CaptureFixture[str],
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    """Known people declare their arrivals (with partner codes of every colour, from a province
    that is no partner, from abroad; again, revised, and refused for bad fields or another
    person's code), and operators look the declarations up: the data directory, the logs and the
    output hold them only as pseudonyms (docs/api.md, "What is kept")."""
    import grpc
    from support.aio import serving

    from gateway.api.v1 import declaration_pb2 as dpb
    from gateway.api.v1 import declaration_pb2_grpc as dpb_grpc

    now = REAL_NOW  # a serving gateway reads the real clock
    data_dir = prepared_dir(now)
    regions = [s.code for s in REGION_SPECS]
    arrival = (now - timedelta(days=2)).date().isoformat()
    needles = _needles()

    async def scenario() -> list[str]:
        ids: list[str] = []
        refused: list[str] = []
        async with serving(data_dir) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = dpb_grpc.DeclarationServiceStub(channel)

                async def declare(**fields: Any) -> None:
                    try:
                        answer = await stub.Declare(dpb.DeclareRequest(**fields), timeout=10)
                    except grpc.aio.AioRpcError as exc:
                        refused.append(exc.code().name)
                        return
                    ids.append(answer.declaration_id)

                for n, (name, id_number) in enumerate(KNOWN):
                    region = regions[n % len(regions)]
                    colour = (Colour.GREEN, Colour.YELLOW, Colour.RED)[n % 3]
                    code = codes(region, now)(colour, holder=(id_number, name))
                    base = {"id_number": id_number, "arrival_date": arrival,
                            "temperature_celsius": 36.5}  # fmt: skip
                    await declare(**base, origin=region, places=[region], partner_code=code)
                    await declare(**base, origin=region, places=[region], partner_code=code)
                    await declare(**base, origin="420000", dry_cough=True)  # supersedes
                    await declare(**base, origin="JP", places=["JP", "KR"])
                    await declare(**{**base, "id_number": id_number[:17] + "0"}, origin="JP")
                    await declare(**base, origin=id_number[:6], places=[id_number])
                    await declare(**{**base, "arrival_date": id_number}, origin="JP")
                    other = KNOWN[(n + 1) % len(KNOWN)]
                    stolen = codes(region, now)(holder=(other[1], other[0]))
                    await declare(**base, origin=region, partner_code=stolen)
        return ids + refused

    results = asyncio.run(scenario())
    assert "INVALID_ARGUMENT" in results and any(r.startswith("SD") for r in results)
    for ident in {r for r in results if r.startswith("SD")}:
        assert main(["declarations", "show", ident, "--data-dir", str(data_dir), "--json"]) == 0
    argv = ["declarations", "count", "--by", "origin,day,colour", "--data-dir", str(data_dir)]
    assert main([*argv, "--superseded"]) == 0
    assert main(["-v", "purge", "--data-dir", str(data_dir), "--dry-run", "--json"]) == 0
    import sqlite3

    with sqlite3.connect(data_dir / "trustgw.db") as conn:
        stored = conn.execute("SELECT COUNT(*), COUNT(DISTINCT holder) FROM declarations")
        count, holders = stored.fetchone()
    assert count >= 3 * len(KNOWN) - 3 and holders == len(KNOWN)
    hits = _scan_tree(data_dir, needles)
    out, err = capfd.readouterr()
    assert "SD1:" in out
    for label, data in (
        ("logs", debug_logs.text.encode()),
        ("log record arguments", repr([r.args for r in debug_logs.records]).encode()),
        ("stdout", out.encode()),
        ("stderr", err.encode()),
    ):
        if found := _found(data, needles):
            hits[label] = found
    assert hits == {}


@pytest.mark.integration
def test_no_identifier_in_visits_tracing_queries_or_their_logs(
    tmp_path: Path,
    simulator: Any,
    capfd: pytest.CaptureFixture[str],
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    """Known people scanned at venues with place codes and traced by a tracer (by ID number,
    with a purpose): the data directory, the PKI, the QR images, the logs and the output hold
    them as pseudonyms only (docs/api.md, "TracingService")."""
    import sqlite3

    from places_support import add_venues, make_pki, scenario
    from support.aio import run as arun

    now = REAL_NOW  # a serving gateway reads the real clock
    show = next(s.code for s in REGION_SPECS if s.mode.value == "show")
    people = {
        who: (id_number, name) for who, (name, id_number) in zip("abcde", KNOWN, strict=False)
    }
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    arun(demo.prepare(data_dir, simulator, now))
    venues = add_venues(data_dir, tmp_path)
    outcome = arun(scenario(data_dir, make_pki(tmp_path / "pki", now), simulator, show, people,
                            now, venues))  # fmt: skip
    assert len(outcome.traced["contacts:a"].contacts) == 3 and outcome.audit
    with sqlite3.connect(data_dir / "trustgw.db") as conn:
        visits = conn.execute("SELECT COUNT(*), COUNT(DISTINCT holder) FROM visits").fetchone()
    assert visits == (8, 6)  # five people and the forged code's empty holder
    out, err = capfd.readouterr()
    needles = _needles()
    hits = _scan_tree(tmp_path, needles)  # the data directory, the PKI, the QR images
    for label, data in (
        ("logs", debug_logs.text.encode()),
        ("log record arguments", repr([r.args for r in debug_logs.records]).encode()),
        ("answers", repr([outcome.traced, outcome.scans, outcome.audit]).encode()),
        ("stdout", out.encode()),
        ("stderr", err.encode()),
    ):
        found = _found(data, needles)
        if found:
            hits[label] = found
    assert hits == {}
    assert debug_logs.records, "logging was captured"
