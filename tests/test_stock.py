"""trustgw convert-batch: rules, bad rows, idempotency, resumption, report and summary."""

from __future__ import annotations

import csv
import io
import json
import logging
import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.aio import run
from support.wait import wait_until

from adapters.base import Colour
from bench.stock import sample_rows, write_csv
from gateway import tokens
from gateway.cli import main
from gateway.stock.converter import StockConverter
from gateway.stock.progress import Progress
from gateway.stock.rows import COLUMNS, Certificate, parse_row
from gateway.stock.rules import decide
from keys.errors import ConcurrentChangeError, RowError
from keys.keystore import KeyDirectory
from keys.personal import StockBatch
from keys.pseudonym import Pseudonymiser
from keys.store import SQLiteStore
from keys.timeutil import to_iso
from tests.support.keyring import open_stored_keys, stored_keys

NOW = datetime(2026, 3, 11, 4, 0, tzinfo=UTC)  # 12:00 in China Standard Time
TODAY = date(2026, 3, 11)
PSEUDO = Pseudonymiser(b"k" * 32)


def days_ago(n: int) -> date:
    return TODAY - timedelta(days=n)


BASE = Certificate(
    city="370100",
    certificate_id="C1",
    holder="h1-x",
    status=Colour.GREEN,
    resident_since=days_ago(400),
    temperature=36.5,
)


@pytest.mark.parametrize(
    "changes, colour, rules",
    [
        pytest.param({}, Colour.GREEN, (), id="all-rules-hold"),
        pytest.param({"resident_since": days_ago(14)}, Colour.GREEN, (), id="resident-14-days"),
        pytest.param(
            {"resident_since": days_ago(13)},
            Colour.YELLOW,
            ("RESIDENT_UNDER_14_DAYS",),
            id="resident-13-days",
        ),
        pytest.param({"temperature": 37.2}, Colour.GREEN, (), id="37.2-no-fever"),
        pytest.param({"temperature": 37.3}, Colour.RED, ("FEVER",), id="37.3-fever"),
        pytest.param({"dry_cough": True}, Colour.YELLOW, ("SYMPTOMS",), id="dry-cough"),
        pytest.param({"fatigue": True}, Colour.YELLOW, ("SYMPTOMS",), id="fatigue"),
        pytest.param(
            {"case": "confirmed"}, Colour.RED, ("CONFIRMED_NOT_DISCHARGED",), id="confirmed"
        ),
        pytest.param(
            {"case": "confirmed", "discharged_on": days_ago(13)},
            Colour.YELLOW,
            ("DISCHARGED_UNDER_14_DAYS",),
            id="discharged-13-days-ago",
        ),
        pytest.param(
            {"case": "confirmed", "discharged_on": days_ago(14)},
            Colour.GREEN,
            (),
            id="discharged-14-days-ago",
        ),
        pytest.param({"case": "suspected"}, Colour.RED, ("NOT_CURED",), id="suspected"),
        pytest.param(
            {"case": "positive", "isolation_start": days_ago(20), "isolation_end": days_ago(10)},
            Colour.YELLOW,
            ("ISOLATED_UNDER_14_DAYS",),
            id="positive-isolated-10-days",
        ),
        pytest.param(
            {"case": "positive", "isolation_start": days_ago(30), "isolation_end": days_ago(16)},
            Colour.GREEN,
            (),
            id="positive-cured-isolated-14-days",
        ),
        pytest.param(
            {"case": "close_contact", "observation_end": days_ago(-1)},
            Colour.YELLOW,
            ("UNDER_MEDICAL_OBSERVATION",),
            id="close-contact-observed",
        ),
        pytest.param(
            {"case": "close_contact", "observation_end": days_ago(0)},
            Colour.GREEN,
            (),
            id="close-contact-released-today",
        ),
        pytest.param(
            {"case": "high_risk_contact"},
            Colour.YELLOW,
            ("CONTACT_ISOLATED_UNDER_14_DAYS",),
            id="high-risk-contact-not-isolated",
        ),
        pytest.param(
            {"last_arrival": days_ago(13)},
            Colour.YELLOW,
            ("ARRIVED_UNDER_14_DAYS",),
            id="arrived-13-days-ago",
        ),
        pytest.param({"last_arrival": days_ago(14)}, Colour.GREEN, (), id="arrived-14-days-ago"),
        pytest.param(
            {"status": Colour.RED}, Colour.RED, ("CITY_STATUS_RED",), id="city-red-never-upgraded"
        ),
        pytest.param(
            {"status": Colour.YELLOW, "temperature": 38.0},
            Colour.RED,
            ("FEVER",),
            id="rules-worse-than-city",
        ),
    ],
)
def test_colour_rules(changes: dict[str, Any], colour: Colour, rules: tuple[str, ...]) -> None:
    assert decide(replace(BASE, **changes), NOW) == (colour, rules)


def test_days_are_counted_in_china_standard_time() -> None:
    cert = replace(BASE, last_arrival=date(2026, 2, 26))
    # 15:59 UTC on the 11th is 23:59 in Jinan, 13 days after the arrival; a minute later it
    # is the 12th there, 14 days after.
    assert decide(cert, datetime(2026, 3, 11, 15, 59, tzinfo=UTC))[0] is Colour.YELLOW
    assert decide(cert, datetime(2026, 3, 11, 16, 0, tzinfo=UTC))[0] is Colour.GREEN


GOOD = {
    "city": "370100",
    "certificate_id": "JN-0001",
    "id_number": "110101199003071233",
    "name": "张三",
    "status": "green",
    "resident_since": "2020-01-01",
}


@pytest.mark.parametrize(
    "changes, reason",
    [
        pytest.param({"city": ""}, "MISSING_FIELD", id="no-city"),
        pytest.param({"city": "110000"}, "BAD_CITY", id="city-outside-province"),
        pytest.param({"city": "370000"}, "BAD_CITY", id="province-is-not-a-city"),
        pytest.param({"certificate_id": "a b"}, "BAD_CERTIFICATE_ID", id="certificate-id-space"),
        pytest.param(
            {"certificate_id": "110101199003071233"},
            "CERTIFICATE_ID_PERSONAL",
            id="certificate-id-is-id-number",
        ),
        pytest.param(
            {"certificate_id": "JN-110101199003071233"},
            "CERTIFICATE_ID_PERSONAL",
            id="certificate-id-embeds-the-id-number",
        ),
        pytest.param(
            {"certificate_id": "JN-44030119850101002X-2"},
            "CERTIFICATE_ID_PERSONAL",
            id="certificate-id-embeds-another-id-number-with-x",
        ),
        pytest.param(
            {"certificate_id": "JN.11010119900307123x"},
            "CERTIFICATE_ID_PERSONAL",
            id="certificate-id-17-digits-and-lower-x",
        ),
        pytest.param(
            {"certificate_id": "JN:110101900307123"},
            "CERTIFICATE_ID_PERSONAL",
            id="certificate-id-embeds-an-old-15-digit-id",
        ),
        pytest.param({"id_number": "110101199003071234"}, "BAD_ID_NUMBER", id="check-digit"),
        pytest.param({"id_number": "11010119900307123"}, "BAD_ID_NUMBER", id="17-characters"),
        pytest.param({"name": " "}, "MISSING_FIELD", id="no-name"),
        pytest.param({"status": "blue"}, "BAD_STATUS", id="status"),
        pytest.param({"resident_since": "2020-13-01"}, "BAD_DATE", id="resident-since"),
        pytest.param({"temperature": "hot"}, "BAD_TEMPERATURE", id="temperature-text"),
        pytest.param({"temperature": "98.6"}, "BAD_TEMPERATURE", id="fahrenheit"),
        pytest.param({"dry_cough": "maybe"}, "BAD_FLAG", id="flag"),
        pytest.param({"case": "cured"}, "BAD_CASE", id="case"),
        pytest.param({"issued_at": "yesterday"}, "BAD_TIME", id="issued-at"),
        pytest.param(
            {"issued_at": "2026-03-02", "expires_at": "2026-03-01"}, "BAD_TIME", id="window"
        ),
        pytest.param({"name": ["x"]}, "BAD_VALUE", id="json-list"),
    ],
)
def test_bad_rows(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(RowError) as caught:
        parse_row({**GOOD, **changes}, PSEUDO)
    assert caught.value.reason == reason
    assert "110101199003071233" not in caught.value.message
    assert "张三" not in caught.value.message


@pytest.mark.parametrize(
    "certificate_id", ["JN-0001", "JN-20260311-00012345", "12345678901234", "A1234567890123X"]
)
def test_certificate_ids_with_shorter_digit_runs_are_accepted(certificate_id: str) -> None:
    assert parse_row({**GOOD, "certificate_id": certificate_id}, PSEUDO).certificate_id == (
        certificate_id
    )


def test_a_good_row_keeps_only_the_pseudonym() -> None:
    cert = parse_row({**GOOD, "status": "绿码", "dry_cough": "否", "temperature": 36.6}, PSEUDO)
    assert cert.holder == PSEUDO("370000", "110101199003071233")
    assert cert.status is Colour.GREEN and not cert.dry_cough and cert.temperature == 36.6
    assert "110101199003071233" not in repr(cert) and "张三" not in repr(cert)


def test_city_flag_fills_and_checks_the_city() -> None:
    assert parse_row({**GOOD, "city": ""}, PSEUDO, city="370200").city == "370200"
    with pytest.raises(RowError, match="not from city 370200"):
        parse_row(GOOD, PSEUDO, city="370200")


# --- end to end --------------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    logging.getLogger("trustgw.keys").setLevel(logging.ERROR)
    path = tmp_path / "data"
    path.mkdir()
    KeyDirectory.create(path / "keys", dev=True, passphrase=None, now=NOW - timedelta(days=1))
    run(_open_close(path))
    return path


async def _open_close(path: Path) -> None:
    store = await SQLiteStore.open(path / "trustgw.db")
    await store.close()


def _rows(count: int, seed: int = 1) -> list[dict[str, str]]:
    return list(sample_rows(count, NOW, seed=seed))


BAD_ROWS = [  # (row dict changes, reason), inserted at rows 7, 14, 21 ...
    ({"id_number": "110101199003071234"}, "BAD_ID_NUMBER"),
    ({"status": "purple"}, "BAD_STATUS"),
    ({"city": "440100"}, "BAD_CITY"),
    ({"expires_at": to_iso(NOW - timedelta(hours=1))}, "CERTIFICATE_EXPIRED"),
]


def _file_with_bad_rows(path: Path, count: int) -> tuple[int, dict[int, str]]:
    rows = _rows(count)
    bad: dict[int, str] = {}
    for i, (changes, reason) in enumerate(BAD_ROWS):
        index = 7 * (i + 1) - 1
        rows[index] = {**rows[index], **changes}
        bad[index + 1] = reason
    write_csv(path, iter(rows))
    return count - len(bad), bad


def _convert(data_dir: Path, path: Path, *extra: str, capsys: Any = None) -> dict[str, Any]:
    code = main(
        ["convert-batch", str(path), "--data-dir", str(data_dir), "--json", "--quiet",
         "--at", to_iso(NOW), *extra]
    )  # fmt: skip
    assert code == 0
    assert capsys is not None
    return dict(json.loads(capsys.readouterr().out))


def _codes(data_dir: Path) -> list[tuple[str, str, str, str]]:
    import sqlite3

    with sqlite3.connect(data_dir / "trustgw.db") as conn:
        return conn.execute(
            "SELECT city, certificate_id, code, colour FROM stock_conversions ORDER BY 1, 2"
        ).fetchall()


def _trust(data_dir: Path) -> tokens.GatewayTrust:
    keys = stored_keys(data_dir)
    return tokens.GatewayTrust(
        "370000",
        tuple(
            tokens.TrustedKey(k.kid, k.role.value, k.public_key, k.not_before, k.not_after)
            for k in keys.public_keys()
        ),
    )


def test_convert_batch_converts_reports_and_summarises(
    data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    path = tmp_path / "certs.csv"
    good, bad = _file_with_bad_rows(path, 300)
    report = tmp_path / "errors.jsonl"
    summary = _convert(data_dir, path, "--report", str(report), capsys=capsys)
    assert summary["status"] == "complete"
    assert summary["rows_read"] == 300
    assert summary["converted"] == good
    assert summary["already_converted"] == 0
    assert summary["rejected"] == len(bad)
    assert summary["rejected_by_reason"] == {r: 1 for r in sorted(bad.values())}
    assert sum(summary["colours"].values()) == good
    assert summary["colours"]["green"] > summary["colours"]["yellow"] > 0
    assert summary["rows_per_second"] > 0
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert {line["row"]: line["reason"] for line in lines} == bad
    assert all(set(line) <= {"row", "reason", "message", "column"} for line in lines)
    stored = _codes(data_dir)
    assert len(stored) == good
    trust = _trust(data_dir)
    for city, certificate_id, code, colour in stored[:50]:
        claims = tokens.verify_home_code(code, trust, NOW)
        assert claims["src"] == {"city": city, "certificate_id": certificate_id}
        assert claims["colour"] == colour and claims["holder"].startswith("h1-")
        assert claims["id"] == tokens.home_code_id(city, certificate_id)
        assert claims["exp"] - claims["iat"] <= 7 * 86400


def test_converting_twice_yields_one_code(data_dir: Path, tmp_path: Path, capsys: Any) -> None:
    rows = _rows(120)
    first = tmp_path / "certs.csv"
    write_csv(first, iter(rows))
    _convert(data_dir, first, capsys=capsys)
    before = _codes(data_dir)
    again = _convert(data_dir, first, capsys=capsys)
    assert again["status"] == "already complete" and again["converted"] == 120
    # The same certificates in another file (JSON Lines, later in time) keep their codes.
    other = tmp_path / "again.jsonl"
    other.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[::-1]))
    later = _convert(data_dir, other, "--at", to_iso(NOW + timedelta(hours=1)), capsys=capsys)
    assert later["status"] == "complete"
    assert (later["converted"], later["already_converted"]) == (0, 120)
    assert _codes(data_dir) == before


def test_same_certificate_for_another_holder_is_reported(
    data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    rows = _rows(3)
    rows.append({**rows[1], "id_number": "110101199003071233"})
    path = tmp_path / "certs.csv"
    write_csv(path, iter(rows))
    report = tmp_path / "errors.jsonl"
    summary = _convert(data_dir, path, "--report", str(report), capsys=capsys)
    assert (summary["converted"], summary["already_converted"]) == (3, 1)
    assert summary["holder_conflicts"] == 1
    assert [json.loads(line)["reason"] for line in report.read_text().splitlines()] == [
        "HOLDER_CONFLICT"
    ]


class Interrupt(BaseException):
    pass


def _convert_until(data_dir: Path, path: Path, report: Path, stop_after: int | None) -> Any:
    async def scenario() -> Any:
        store = await SQLiteStore.open(data_dir / "trustgw.db")
        keys = await open_stored_keys(data_dir)
        converter = StockConverter(
            store, keys, Pseudonymiser(keys.pseudonym_secret()), now=NOW, batch_size=50
        )
        batches = 0

        def on_batch(last_row: int) -> None:
            nonlocal batches
            batches += 1
            if stop_after is not None and batches == stop_after:
                raise Interrupt(last_row)

        try:
            return await converter.run(path, report=report, on_batch=on_batch)
        finally:
            await store.close()

    return run(scenario())


def test_an_interrupted_batch_resumes_and_converts_every_row_once(
    data_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "certs.csv"
    good, bad = _file_with_bad_rows(path, 430)
    report = tmp_path / "errors.jsonl"
    with pytest.raises(Interrupt):
        _convert_until(data_dir, path, report, stop_after=3)
    partial = len(_codes(data_dir))
    assert 0 < partial < good
    summary = _convert_until(data_dir, path, report, stop_after=None)
    assert summary.resumed_from_row >= 150
    assert summary.rows_this_run == 430 - summary.resumed_from_row
    totals = summary.to_json()
    assert totals["rows_read"] == 430
    assert (totals["converted"], totals["already_converted"]) == (good, 0)
    assert totals["rejected"] == len(bad)
    assert len(_codes(data_dir)) == good
    rows = [json.loads(line)["row"] for line in report.read_text().splitlines()]
    assert sorted(rows) == sorted(bad) and len(set(rows)) == len(rows)


def test_a_batch_behind_the_job_is_refused(data_dir: Path) -> None:
    async def scenario() -> None:
        store = await SQLiteStore.open(data_dir / "trustgw.db")
        try:
            job = await store.open_stock_job("a" * 64, "f.csv", NOW)
            batch = StockBatch("a" * 64, 0, 10, (), (), {"rows_read": 10}, NOW)
            assert (await store.commit_stock_batch(batch)).counts == {"rows_read": 10}
            with pytest.raises(ConcurrentChangeError):
                await store.commit_stock_batch(batch)  # a second run of the same file
            assert job.committed_rows == 0
            assert (await store.open_stock_job("a" * 64, "f.csv", NOW)).committed_rows == 10
        finally:
            await store.close()

    run(scenario())


def test_unreadable_input_is_a_usage_error(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "certs.csv"
    path.write_text("city,certificate_id\n370100,A\n")
    assert main(["convert-batch", str(path), "--data-dir", str(data_dir), "-q"]) == 2
    assert main(["convert-batch", str(tmp_path / "x.xls"), "--data-dir", str(data_dir)]) == 2


def test_jsonl_rows_and_malformed_lines(data_dir: Path, tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "certs.data"
    rows = _rows(3)
    lines = [json.dumps(rows[0]), "{not json", "", json.dumps(rows[1]), "[1]", json.dumps(rows[2])]
    path.write_text("\n".join(lines) + "\n")
    report = tmp_path / "errors.jsonl"
    summary = _convert(data_dir, path, "--format", "jsonl", "--report", str(report), capsys=capsys)
    assert (summary["rows_read"], summary["converted"], summary["rejected"]) == (5, 3, 2)
    assert [json.loads(x)["row"] for x in report.read_text().splitlines()] == [2, 5]


def test_text_summary_and_progress_lines(data_dir: Path, tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "certs.csv"
    write_csv(path, iter(_rows(20)))
    assert main(["convert-batch", str(path), "--data-dir", str(data_dir), "--at", to_iso(NOW)]) == 0
    out, err = capsys.readouterr()
    assert "converted" in out and "rows/s" in out
    assert "convert-batch: 20 rows (100%)" in err  # stderr is not a terminal: plain lines


def test_progress_bar_on_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(out, 1000, bar=True)
    progress.update(10, 500, final=True)
    text = out.getvalue()
    assert text.startswith("\r") and " 50.0% |" in text and "rows/s" in text and "left" in text


def _csv_rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        yield from csv.DictReader(f)


def test_the_sample_file_has_the_documented_columns(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    write_csv(path, sample_rows(5, NOW, seed=random.randint(0, 9)))
    rows = list(_csv_rows(path))
    assert len(rows) == 5 and tuple(rows[0]) == COLUMNS
    doc = (Path(__file__).parent.parent / "docs" / "stock-conversion.md").read_text()
    for column in COLUMNS:
        assert f"`{column}`" in doc


@pytest.mark.integration
@pytest.mark.parametrize("signame", ["SIGKILL", "SIGINT"])
def test_a_killed_conversion_resumes_and_converts_every_row_once(
    data_dir: Path, tmp_path: Path, capsys: Any, signame: str
) -> None:
    """SIGKILL (no clean-up at all) or Ctrl-C in the middle of the file, then the same command
    again."""
    import signal
    import sqlite3
    import subprocess
    import sys

    path = tmp_path / "certs.csv"
    rows = 20_000
    write_csv(path, sample_rows(rows, NOW, seed=5))
    root = Path(__file__).resolve().parent.parent
    argv = [sys.executable, "-m", "gateway.cli", "convert-batch", str(path), "--data-dir",
            str(data_dir), "--quiet", "--batch-size", "50", "--at", to_iso(NOW)]  # fmt: skip
    proc = subprocess.Popen(  # noqa: S603
        argv,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

    def committed_rows() -> int:
        """Rows the running conversion has committed so far (0 before its first batch)."""
        try:
            with sqlite3.connect(data_dir / "trustgw.db", timeout=5) as conn:
                found = conn.execute("SELECT committed_rows FROM stock_jobs").fetchone()
        except sqlite3.Error:
            return 0
        return int(found[0]) if found else 0

    committed = 0
    try:
        # Half way (1000 rows at least), or the process ended by itself (the assert fails).
        wait_until(lambda: proc.poll() is not None or committed_rows() >= 1000, timeout=60)
        committed = committed_rows()
    finally:
        if proc.poll() is None:
            proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate()
    assert 0 < committed < rows, "the conversion was killed half way"
    if signame == "SIGINT":
        assert proc.returncode == 130
        assert b"run the same command again to resume" in err
    summary = _convert(data_dir, path, capsys=capsys)
    assert summary["resumed_from_row"] >= committed
    assert summary["rows_read"] == rows
    assert (summary["converted"], summary["already_converted"]) == (rows, 0)
    assert len(_codes(data_dir)) == rows
