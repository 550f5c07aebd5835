"""Handing converted stock certificates out: ``convert-batch --out``, ``stock jobs``,
``stock export`` and QR images (docs/stock-conversion.md, "The output")."""

from __future__ import annotations

import csv
import json
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import png
import pytest
import zxingcpp
from cli_support import Ran, trustgw
from support.aio import run

from bench.stock import sample_rows, write_csv
from gateway import tokens
from gateway.stock.output import COLUMNS, out_format, qr_image
from keys.keystore import KeyDirectory
from keys.store import SQLiteStore
from keys.timeutil import from_unix, parse_time, to_iso

NOW = datetime(2026, 3, 11, 4, 0, tzinfo=UTC)
OTHER_ID = "110101199003071233"  # a valid resident ID number (GB 11643 check digit)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    logging.getLogger("trustgw.keys").setLevel(logging.ERROR)
    path = tmp_path / "data"
    path.mkdir()
    KeyDirectory.create(path / "keys", dev=True, passphrase=None, now=NOW - timedelta(days=1))

    async def create() -> None:
        await (await SQLiteStore.open(path / "trustgw.db")).close()

    run(create())
    return path


def _trust(data_dir: Path) -> tokens.GatewayTrust:
    keys = KeyDirectory.open(data_dir / "keys", passphrase=None)
    return tokens.GatewayTrust.from_key_infos(keys.public_keys(), now=NOW)


def _rows(count: int, seed: int = 1) -> list[dict[str, str]]:
    return list(sample_rows(count, NOW, seed=seed))


def convert(capsys: Any, data_dir: Path, path: Path, *extra: str, at: datetime = NOW) -> Ran:
    return trustgw(capsys, "convert-batch", str(path), "--data-dir", str(data_dir), "--json",
                   "--quiet", "--at", to_iso(at), *extra)  # fmt: skip


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_convert_batch_out_writes_every_code_in_row_order_and_each_verifies(
    data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    rows = _rows(40)
    rows[4] = {**rows[4], "status": "purple"}  # rejected: in the report, not in the output
    source = tmp_path / "certs.csv"
    write_csv(source, iter(rows))
    out = tmp_path / "codes.csv"
    ran = convert(capsys, data_dir, source, "--out", str(out))
    assert ran.status == 0, ran.err
    summary = ran.json()
    assert summary["output"]["rows"] == summary["output"]["codes"] == 39
    written = _read_csv(out)
    assert [int(r["row"]) for r in written] == [n for n in range(1, 41) if n != 5]
    trust = _trust(data_dir)
    for line, row in zip(written, [r for i, r in enumerate(rows) if i != 4], strict=True):
        assert (line["city"], line["certificate_id"]) == (row["city"], row["certificate_id"])
        assert line["status"] == "converted"
        claims = tokens.verify_home_code(line["home_code"], trust, NOW)
        assert claims["src"] == {"city": row["city"], "certificate_id": row["certificate_id"]}
        assert claims["id"] == line["code_id"] and claims["colour"] == line["colour"]
        assert parse_time(line["valid_from"]) == from_unix(claims["iat"])
        assert parse_time(line["valid_until"]) == from_unix(claims["exp"])
    text = out.read_text(encoding="utf-8")
    for row in rows:  # no raw personal identifier, nor the holder's pseudonym
        assert row["id_number"] not in text and row["name"] not in text
    assert "h1-" not in text
    assert out.stat().st_mode & 0o077 == 0


def test_the_output_format_follows_the_extension_or_the_flag(
    data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    source = tmp_path / "certs.csv"
    write_csv(source, iter(_rows(5)))
    jsonl = tmp_path / "codes.jsonl"
    assert convert(capsys, data_dir, source, "--out", str(jsonl)).status == 0
    lines = _read_jsonl(jsonl)
    assert len(lines) == 5 and all(tuple(line) == COLUMNS for line in lines)
    forced = tmp_path / "codes.txt"
    ran = convert(capsys, data_dir, source, "--out", str(forced), "--out-format", "csv")
    assert ran.status == 0, ran.err
    assert [r["home_code"] for r in _read_csv(forced)] == [line["home_code"] for line in lines]
    unknown = convert(capsys, data_dir, source, "--out", str(tmp_path / "codes.xls"))
    assert (unknown.status, unknown.reason) == (2, "USAGE")
    assert not (tmp_path / "codes.xls").exists()


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    [
        pytest.param("a.csv", None, "csv", id="csv"),
        pytest.param("a.CSV", None, "csv", id="upper-case"),
        pytest.param("a.jsonl", None, "jsonl", id="jsonl"),
        pytest.param("a.ndjson", None, "jsonl", id="ndjson"),
        pytest.param("a.out", "jsonl", "jsonl", id="flag-wins"),
        pytest.param("a.csv", "jsonl", "jsonl", id="flag-over-extension"),
    ],
)
def test_out_format(name: str, given: str | None, expected: str) -> None:
    assert out_format(Path(name), given) == expected


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--qr-dir", "q"], id="qr-dir-without-out"),
        pytest.param(["--out-format", "csv"], id="out-format-without-out"),
        pytest.param(["--out", "o.csv", "--qr-format", "svg"], id="qr-format-without-qr-dir"),
        pytest.param(["--out", "o"], id="no-extension"),
    ],
)
def test_output_options_that_cannot_be_used_are_one_usage_line(
    data_dir: Path, tmp_path: Path, capsys: Any, argv: list[str], monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "certs.csv"
    write_csv(source, iter(_rows(2)))
    ran = convert(capsys, data_dir, source, *argv)
    assert (ran.status, ran.reason) == (2, "USAGE"), ran.err
    assert not list(tmp_path.glob("o*")) and not (tmp_path / "q").exists()


def test_an_earlier_job_is_listed_and_exported_with_each_rows_status(
    data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    rows = _rows(6)
    first = tmp_path / "first.csv"
    write_csv(first, iter(rows))
    assert convert(capsys, data_dir, first).status == 0
    # Later: the same certificates again, one of them for another holder, and one new one.
    second_rows = [rows[0], {**rows[1], "id_number": OTHER_ID}, *_rows(1, seed=9)]
    second = tmp_path / "second.jsonl"
    second.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in second_rows))
    later = NOW + timedelta(hours=1)
    assert convert(capsys, data_dir, second, at=later).status == 0

    ran = trustgw(capsys, "stock", "jobs", "--data-dir", str(data_dir), "--json")
    assert ran.status == 0, ran.err
    jobs = ran.json()
    assert [j["source"] for j in jobs] == ["second.jsonl", "first.csv"]
    assert all(j["status"] == "complete" for j in jobs)
    assert (jobs[0]["converted"], jobs[0]["already_converted"]) == (1, 2)
    table = trustgw(capsys, "stock", "jobs", "--data-dir", str(data_dir))
    assert table.status == 0 and "second.jsonl" in table.out and jobs[1]["job"][:16] in table.out

    first_out, second_out = tmp_path / "first.jsonl", tmp_path / "second.csv"
    for job, out in ((jobs[1], first_out), (jobs[0], second_out)):
        ran = trustgw(capsys, "stock", "export", job["job"][:12], "--data-dir", str(data_dir),
                      "--out", str(out))  # fmt: skip
        assert ran.status == 0, ran.err
        assert f"to {out}" in ran.out
    earlier = {r["certificate_id"]: r for r in _read_jsonl(first_out)}
    got = _read_csv(second_out)
    assert [r["status"] for r in got] == ["already_converted", "holder_conflict", "converted"]
    # An earlier conversion is handed out as it was made; another holder's code is not.
    assert got[0]["home_code"] == earlier[rows[0]["certificate_id"]]["home_code"]
    assert got[0]["valid_from"] == to_iso(NOW)
    assert (got[1]["certificate_id"], got[1]["home_code"], got[1]["code_id"]) == (
        rows[1]["certificate_id"], "", ""
    )  # fmt: skip
    assert got[2]["valid_from"] == to_iso(later)


@pytest.mark.parametrize(
    ("job", "reason", "status"),
    [
        pytest.param("abc", "USAGE", 2, id="too-short"),
        pytest.param("zzzzzzzzzz", "USAGE", 2, id="not-hex"),
        pytest.param("0" * 12, "NOT_FOUND", 1, id="no-such-job"),
    ],
)
def test_an_export_of_a_job_that_is_not_there_is_one_line(
    data_dir: Path, tmp_path: Path, capsys: Any, job: str, reason: str, status: int
) -> None:
    out = tmp_path / "o.csv"
    ran = trustgw(capsys, "stock", "export", job, "--data-dir", str(data_dir), "--out", str(out))
    assert (ran.status, ran.reason) == (status, reason), ran.err
    assert not out.exists()


def _decode_png(data: bytes) -> list[str]:
    """The texts of the QR codes in a PNG, read by zxing-cpp from the pixels pypng decodes."""
    width, height, pixels, info = png.Reader(bytes=data).asDirect()
    assert info["planes"] == 1 and not info["alpha"]  # greyscale, as segno writes it
    top = (1 << info["bitdepth"]) - 1
    grey = bytes(value * 255 // top for line in pixels for value in line)
    return [r.text for r in zxingcpp.read_barcodes(memoryview(grey).cast("B", (height, width)))]


def test_qr_images_of_the_home_codes_decode_to_the_codes(
    data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    source = tmp_path / "certs.csv"
    write_csv(source, iter(_rows(8)))
    out, qr = tmp_path / "codes.csv", tmp_path / "qr"
    ran = convert(capsys, data_dir, source, "--out", str(out), "--qr-dir", str(qr))
    assert ran.status == 0, ran.err
    assert ran.json()["output"]["qr_images"] == 8
    written = _read_csv(out)
    assert sorted(p.name for p in qr.iterdir()) == sorted(f"{r['code_id']}.png" for r in written)
    for row in written:
        assert _decode_png((qr / f"{row['code_id']}.png").read_bytes()) == [row["home_code"]]
    (job,) = trustgw(capsys, "stock", "jobs", "--data-dir", str(data_dir), "--json").json()
    svg = tmp_path / "svg"
    again = tmp_path / "again.csv"
    ran = trustgw(capsys, "stock", "export", job["job"], "--data-dir", str(data_dir), "--out",
                  str(again), "--qr-dir", str(svg), "--qr-format", "svg")  # fmt: skip
    assert ran.status == 0, ran.err
    images = sorted(svg.iterdir())
    assert len(images) == 8 and all(p.suffix == ".svg" for p in images)
    assert all(b"<svg" in p.read_bytes() for p in images)


def test_a_decoder_does_not_read_another_code_from_an_image() -> None:
    # The check above could not pass with a decoder that echoes: two codes, two different texts.
    assert _decode_png(qr_image("SD1:aaaa", "png")) == ["SD1:aaaa"]
    assert _decode_png(qr_image("SD1:bbbb", "png")) == ["SD1:bbbb"]


def test_a_resumed_job_exports_every_committed_row_once(
    data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    from gateway.stock.converter import StockConverter
    from keys.pseudonym import Pseudonymiser

    source = tmp_path / "certs.csv"
    write_csv(source, iter(_rows(50)))

    class Stop(BaseException):
        pass

    async def interrupted() -> None:
        keys = KeyDirectory.open(data_dir / "keys", passphrase=None)
        store = await SQLiteStore.open(data_dir / "trustgw.db")
        try:
            converter = StockConverter(
                store, keys, Pseudonymiser(keys.pseudonym_secret()), now=NOW, batch_size=10
            )

            def stop(last_row: int) -> None:
                if last_row >= 20:
                    raise Stop

            with pytest.raises(Stop):
                await converter.run(source, on_batch=stop)
        finally:
            await store.close()

    run(interrupted())
    out = tmp_path / "codes.jsonl"
    ran = convert(capsys, data_dir, source, "--out", str(out))
    assert ran.status == 0, ran.err
    assert ran.json()["resumed_from_row"] >= 20
    assert [line["row"] for line in _read_jsonl(out)] == list(range(1, 51))


def test_purged_certificates_leave_the_jobs_output(
    data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    source = tmp_path / "certs.csv"
    write_csv(source, iter(_rows(4)))
    assert convert(capsys, data_dir, source).status == 0
    with sqlite3.connect(data_dir / "trustgw.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM stock_job_rows").fetchone() == (4,)

    async def purge() -> None:
        store = await SQLiteStore.open(data_dir / "trustgw.db")
        try:
            await store.purge(
                recognitions_before=None, conversions_before=NOW + timedelta(days=30)
            )
        finally:
            await store.close()

    run(purge())
    with sqlite3.connect(data_dir / "trustgw.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM stock_job_rows").fetchone() == (0,)
    (job,) = trustgw(capsys, "stock", "jobs", "--data-dir", str(data_dir), "--json").json()
    out = tmp_path / "codes.csv"
    ran = trustgw(capsys, "stock", "export", job["job"], "--data-dir", str(data_dir), "--out",
                  str(out))  # fmt: skip
    assert ran.status == 0, ran.err
    assert _read_csv(out) == []


@pytest.mark.integration  # a PostgreSQL server (tests/support/pg.py)
def test_the_output_is_the_same_over_postgresql(
    data_dir: Path, tmp_path: Path, capsys: Any, pg_url: str
) -> None:
    from keys.store.factory import open_store

    async def create() -> None:
        await (await open_store(pg_url)).close()

    run(create())
    rows = _rows(6)
    source = tmp_path / "certs.csv"
    write_csv(source, iter([*rows, {**rows[2], "id_number": OTHER_ID}]))
    out = tmp_path / "codes.jsonl"
    ran = convert(capsys, data_dir, source, "--database", pg_url, "--out", str(out))
    assert ran.status == 0, ran.err
    lines = _read_jsonl(out)
    assert [line["row"] for line in lines] == list(range(1, 8))
    assert [line["status"] for line in lines][-1] == "holder_conflict"
    trust = _trust(data_dir)
    for line in lines[:-1]:
        assert tokens.verify_home_code(line["home_code"], trust, NOW)["id"] == line["code_id"]
    store = ("--data-dir", str(data_dir), "--database", pg_url)
    (job,) = trustgw(capsys, "stock", "jobs", *store, "--json").json()
    again = tmp_path / "again.jsonl"
    ran = trustgw(capsys, "stock", "export", job["job"], *store, "--out", str(again))
    assert ran.status == 0, ran.err
    assert _read_jsonl(again) == lines
