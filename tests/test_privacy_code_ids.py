"""Code ids at rest (issue 8 item 15): partners whose code ids ARE the holders' ID numbers.

Some partners use the holder's ID number as their code id. The gateway keeps a code id only as
its *code key* (HMAC under the gateway's secret, keys.pseudonym); revocation matching computes
the key of the code in hand. These tests run such codes through recognition (show and convert),
conversion, a partner's revocation batch (by code and by holder), the recognition log and a
stock batch conversion, then look for the raw ids and their unkeyed ``sha256("region|id")`` in
every table of the database (also inside the stored home codes' payloads), in the database's
files, in the logs and in the audit trail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.aio import run, serving
from support.clock import REAL_NOW

from adapters.base import Colour
from adapters.fields import id_check_digit
from adapters.regions import REGION_SPECS
from bench.stock import sample_rows, write_csv
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.cli import main
from keys.model import HOME_REGION, Mode
from keys.partner import PartnerSigner
from keys.pseudonym import code_hash

# Regions whose codes carry a text code id (the others derive one from the claims).
ID_REGIONS = [s for s in REGION_SPECS if s.fields.code_id is not None]
SHOW = next(s for s in ID_REGIONS if s.mode is Mode.SHOW)
CONVERT = next(s for s in ID_REGIONS if s.mode is Mode.CONVERT)


def _id(first17: str) -> str:
    return first17 + id_check_digit(first17)


def _ids(n: int, seed: int) -> list[str]:
    return [_id(f"3701021990{seed:02d}{i:02d}{i:03d}") for i in range(n)]


def _needles(ids: list[str]) -> dict[str, bytes]:
    """Each raw id and its unkeyed hash under every region (hex, both cases)."""
    needles: dict[str, bytes] = {}
    for code_id in ids:
        needles[f"id {code_id}"] = code_id.encode()
        for region in [HOME_REGION, *(s.code for s in REGION_SPECS)]:
            digest = code_hash(region, code_id)
            needles[f"sha256({region}|{code_id})"] = digest.encode()
            needles[f"SHA256({region}|{code_id})"] = digest.upper().encode()
    return needles


def _decoded_codes(values: list[Any]) -> list[bytes]:
    """The payloads of the home codes (``SD1:<b64url payload>.<sig>``) among stored values."""
    out = []
    for value in values:
        if isinstance(value, str) and value.startswith("SD1:"):
            body = value[4:].split(".", 1)[0]
            out.append(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return out


def _database_text(path: Path) -> tuple[bytes, int]:
    """Every value of every table, with the home codes' payloads decoded; and the row count."""
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = [row for t in tables for row in conn.execute(f"SELECT * FROM {t}")]  # noqa: S608
    values = [v for row in rows for v in row]
    text = repr(rows).encode() + b"".join(_decoded_codes(values))
    return text, len(rows)


def _hits(data: bytes, needles: dict[str, bytes]) -> list[str]:
    return [label for label, needle in needles.items() if needle in data]


@pytest.mark.integration
def test_code_ids_that_are_id_numbers_are_kept_only_keyed(
    codes: Any,
    prepared_dir: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    now = REAL_NOW
    data_dir = prepared_dir(now)
    ids = _ids(2 * len(ID_REGIONS) + 4, seed=1)
    holders = _ids(len(ID_REGIONS), seed=2)
    partners = {s.code: PartnerSigner.generate(s.code, mode=s.mode) for s in (SHOW, CONVERT)}
    green = {s.code: ids[2 * i] for i, s in enumerate(ID_REGIONS)}
    red = {s.code: ids[2 * i + 1] for i, s in enumerate(ID_REGIONS)}
    revoked_code, revoked_holder_code, later = ids[-4], ids[-3], ids[-2]

    async def scenario() -> dict[str, str]:
        reasons: dict[str, str] = {}
        async with serving(data_dir) as (gateway, port):
            for partner in partners.values():
                await gateway.trust.install_partner(
                    partner.partner_file(), actor="operator:test", now=now
                )
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)

                async def recognise(request_id: str, code: str) -> str:
                    reply = await stub.Recognise(
                        pb.RecogniseRequest(request_id=request_id, code=code), timeout=10
                    )
                    return reply.reason

                for i, spec in enumerate(ID_REGIONS):
                    make = codes(spec.code, now)
                    holder = (holders[i], "张三")
                    reasons[f"green {spec.code}"] = await recognise(
                        f"g{i}", make(holder=holder, code_id=green[spec.code])
                    )
                    reasons[f"red {spec.code}"] = await recognise(
                        f"r{i}", make(Colour.RED, holder=holder, code_id=red[spec.code])
                    )
                convert = codes(CONVERT.code, now)
                by_code = convert(code_id=revoked_code, holder=(holders[0], "李四"))
                by_holder = convert(code_id=revoked_holder_code, holder=(holders[1], "王五"))
                reasons["before revocation"] = await recognise("b1", by_code)
                reasons["holder before revocation"] = await recognise("b2", by_holder)
                partner = partners[CONVERT.code]
                await gateway.trust.publish_revocations(
                    partner.revocations(
                        "batch-1",
                        now - timedelta(minutes=1),
                        code_ids=[revoked_code],
                        holder_ids=[holders[1]],
                    ),
                    caller_region=CONVERT.code,
                    now=now,
                )
                reasons["revoked code"] = await recognise("c1", by_code)
                reasons["revoked holder"] = await recognise("c2", by_holder)
                reasons["not revoked"] = await recognise(
                    "c3", convert(code_id=later, holder=(holders[2], "赵六"))
                )
        return reasons

    reasons = run(scenario())
    assert {k: v for k, v in reasons.items() if k.startswith("green")} == {
        f"green {s.code}": "RECOGNISED" for s in ID_REGIONS
    }
    assert {v for k, v in reasons.items() if k.startswith("red")} == {"NOT_GREEN"}
    assert reasons["before revocation"] == reasons["holder before revocation"] == "RECOGNISED"
    # Matching a revocation works on code keys computed from the code in hand.
    assert reasons["revoked code"] == reasons["revoked holder"] == "CODE_REVOKED"
    assert reasons["not revoked"] == "RECOGNISED"

    # A stock conversion: certificate ids that embed an ID number are refused.
    rows = list(sample_rows(12, now, seed=5))
    rows[0] = {**rows[0], "certificate_id": f"JN-{ids[0]}"}
    rows[1] = {**rows[1], "certificate_id": ids[1]}
    rows[2] = {**rows[2], "certificate_id": f"QD:{ids[2][:15]}"}
    stock = tmp_path / "stock.csv"
    write_csv(stock, iter(rows))
    report = tmp_path / "errors.jsonl"
    assert main(["convert-batch", str(stock), "--data-dir", str(data_dir),
                 "--report", str(report)]) == 0  # fmt: skip
    refused = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(r["row"], r["reason"]) for r in refused] == [
        (n, "CERTIFICATE_ID_PERSONAL") for n in (1, 2, 3)
    ]
    assert main(["audit", "verify", "--data-dir", str(data_dir)]) == 0
    assert main(["audit", "show", "--data-dir", str(data_dir), "--json"]) == 0
    out, err = capfd.readouterr()

    database, count = _database_text(data_dir / "trustgw.db")
    assert count > 50  # regions, keys, anchors, conversions, revocations, log, audit, stock
    with sqlite3.connect(data_dir / "trustgw.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM code_revocations").fetchone()[0] == 1
        logged = conn.execute("SELECT COUNT(*) FROM recognitions WHERE code_key LIKE 'c1-%'")
        assert logged.fetchone()[0] >= 2 * len(ID_REGIONS)
        assert conn.execute("SELECT COUNT(*) FROM conversions").fetchone()[0] >= 3
    needles = _needles(ids + holders)
    hits = {
        "database": _hits(database, needles),
        "report": _hits(report.read_bytes(), needles),
        "logs": _hits(caplog.text.encode(), needles),
        "log arguments": _hits(repr([r.args for r in caplog.records]).encode(), needles),
        "output": _hits((out + err).encode(), needles),
    }
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            hits[str(path.relative_to(data_dir))] = _hits(path.read_bytes(), needles)
    assert {where: found for where, found in hits.items() if found} == {}


def test_the_scan_would_find_a_raw_id_inside_a_stored_home_code() -> None:
    """The scan decodes stored home codes: a raw id in a payload is found."""
    code_id = _ids(1, seed=9)[0]
    payload = base64.urlsafe_b64encode(json.dumps({"src": code_id}).encode()).rstrip(b"=")
    stored = f"SD1:{payload.decode()}.sig"
    assert code_id.encode() not in repr([stored]).encode()  # base64 hides it from a plain grep
    found = _hits(repr([stored]).encode() + b"".join(_decoded_codes([stored])), _needles([code_id]))
    assert found == [f"id {code_id}"]
    digest = hashlib.sha256(f"{SHOW.code}|{code_id}".encode()).hexdigest()
    assert _hits(digest.encode(), _needles([code_id])) == [f"sha256({SHOW.code}|{code_id})"]


def test_partners_code_hashes_are_keyed_on_arrival(tmp_path: Path) -> None:
    """A revocation batch's code hashes are stored only keyed, and differ per gateway secret."""
    from keys.pseudonym import Pseudonymiser

    hashed = code_hash(SHOW.code, "11010119900307123X")
    one, other = Pseudonymiser(b"1" * 32), Pseudonymiser(b"2" * 32)
    assert one.from_code_hash(hashed) == one.code_key(SHOW.code, "11010119900307123X")
    assert one.from_code_hash(hashed) != other.from_code_hash(hashed)
    assert one.from_code_hash(hashed).startswith("c1-") and hashed not in one.from_code_hash(hashed)
    # a separate domain from the holder pseudonyms under the same secret
    assert one.from_code_hash(hashed)[3:] != one.from_holder_hash(hashed)[3:]
    with pytest.raises(ValueError):
        one.from_code_hash(hashed.upper())
