"""The operator's command line, through ``main([...])``."""

from __future__ import annotations

import json
import sqlite3
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from support.clock import T0

from gateway.cli import build_parser, main

# PEM markers, spelled in two parts so that repository scans for committed keys do not match them.
PLAIN_PEM = b"-----BEGIN " + b"PRIVATE KEY-----"


NOW = T0  # every call here takes its time: no real clock


def _subcommands() -> list[list[str]]:
    return [
        [],
        ["init"],
        ["serve"],
        ["demo"],
        ["keys"],
        ["keys", "list"],
        ["keys", "export"],
        ["keys", "add"],
        ["keys", "revoke"],
        ["verify"],
    ]


@pytest.mark.parametrize(
    "words", [pytest.param(w, id=" ".join(w) or "trustgw") for w in _subcommands()]
)
def test_every_command_has_help(words, capsys) -> None:
    assert main([*words, "--help"]) == 0
    assert "usage: trustgw" in capsys.readouterr().out


def test_usage_error_exits_2(capsys) -> None:
    assert main(["keys", "frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_init_in_dev_mode_says_so_and_refuses_to_run_twice(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("TRUSTGW_PASSPHRASE", raising=False)
    data_dir = tmp_path / "gw"
    assert main(["init", "--data-dir", str(data_dir), "--dev"]) == 0
    out = capsys.readouterr().out
    assert "14 partner regions" in out and "NOT encrypted" in out
    assert main(["init", "--data-dir", str(data_dir), "--dev"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("trustgw: ") and "already" in err and "\n" not in err


def test_init_outside_dev_mode_needs_a_passphrase(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("TRUSTGW_PASSPHRASE", raising=False)
    monkeypatch.delenv("TRUSTGW_PASSPHRASE_FILE", raising=False)
    assert main(["init", "--data-dir", str(tmp_path / "gw")]) == 1
    assert "TRUSTGW_PASSPHRASE" in capsys.readouterr().err


def test_init_with_a_passphrase_encrypts_keys_at_rest(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("TRUSTGW_PASSPHRASE", "correct horse battery staple")
    data_dir = tmp_path / "gw"
    assert main(["init", "--data-dir", str(data_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dev"] is False and result["keyring"] == "created"
    # The keys live sealed in the database (keys.keyring), not in files.
    assert not (data_dir / "keys").exists()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    with sqlite3.connect(data_dir / "trustgw.db") as conn:
        blobs = [bytes(r[0]) for r in conn.execute("SELECT sealed FROM gateway_keyring")]
    assert len(blobs) == 3
    assert all(PLAIN_PEM not in blob and blob[:1] == b"\x01" for blob in blobs)
    assert main(["keys", "list", "--data-dir", str(data_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["role"] for r in rows if r["owner"] == "gateway"} == {"attest", "issue", "trustlist"}
    monkeypatch.setenv("TRUSTGW_PASSPHRASE", "wrong")
    assert main(["keys", "list", "--data-dir", str(data_dir)]) == 1
    assert "passphrase" in capsys.readouterr().err.lower()


def test_keys_add_list_and_revoke_a_partner_key(tmp_path, capsys, simulator) -> None:
    data_dir = tmp_path / "gw"
    assert main(["init", "--data-dir", str(data_dir), "--dev"]) == 0
    capsys.readouterr()
    issuer = simulator.issuers()[0]
    key_file = tmp_path / "partner.jwk"
    key_file.write_text(json.dumps(issuer.key.public_key().to_jwk()))
    args = [
        "keys",
        "add",
        "--data-dir",
        str(data_dir),
        "--region",
        issuer.spec.code,
        "--public-key",
        str(key_file),
        "--kid",
        issuer.kid,
        "--not-before",
        "2026-01-01T00:00:00Z",
        "--not-after",
        "2027-01-01T00:00:00Z",
        "--json",
    ]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["inserted"] is True
    assert main(args) == 0  # a retry is acknowledged, not duplicated
    assert json.loads(capsys.readouterr().out)["inserted"] is False
    assert (
        main(
            [
                "keys",
                "revoke",
                "--data-dir",
                str(data_dir),
                "--region",
                issuer.spec.code,
                "--kid",
                issuer.kid,
                "--at",
                "2026-01-01T08:00:00+08:00",  # China Standard Time: 00:00 UTC
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["keys", "list", "--data-dir", str(data_dir), "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["owner"] == issuer.spec.code]
    assert len(rows) == 1
    assert rows[0]["status"] == "revoked" and rows[0]["revoked_at"] == "2026-01-01T00:00:00Z"
    assert (
        main(["keys", "revoke", "--data-dir", str(data_dir), "--region", "990000", "--kid", "nope"])
        == 1
    )
    assert capsys.readouterr().err.startswith("trustgw: NOT_FOUND")


def test_keys_add_refuses_bad_key_material(tmp_path, capsys) -> None:
    data_dir = tmp_path / "gw"
    assert main(["init", "--data-dir", str(data_dir), "--dev"]) == 0
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    capsys.readouterr()
    assert (
        main(
            [
                "keys",
                "add",
                "--data-dir",
                str(data_dir),
                "--region",
                "110000",
                "--public-key",
                str(bad),
            ]
        )
        == 1
    )
    assert capsys.readouterr().err.startswith("trustgw: MALFORMED")


def test_offline_verification_of_what_the_gateway_signs(
    tmp_path, capsys, codes, prepared_dir
) -> None:
    """Recognise codes, then verify the attestation and the home code with the CLI alone."""
    from support.aio import run
    from test_engine import Engine

    from adapters.regions import REGION_SPECS
    from keys.model import Mode

    data_dir = prepared_dir(NOW)
    region = next(s.code for s in REGION_SPECS if s.mode is Mode.CONVERT)

    async def recognise():
        async with Engine(data_dir) as engine:
            return await engine.recogniser.recognise(codes(region, NOW)(), NOW)

    decision = run(recognise())
    trust = tmp_path / "trust.json"
    assert main(["keys", "export", "--data-dir", str(data_dir), "--out", str(trust)]) == 0
    att = tmp_path / "att.json"
    att.write_text(json.dumps(decision.attestation.to_json()))
    capsys.readouterr()

    at = ["--at", NOW.isoformat()]  # when the gateway decided
    assert (
        main(["verify", "--format", "attestation", "--trust", str(trust), *at, "--json", str(att)])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert (result["verdict"], result["claims"]["region"]) == ("accept", region)

    home = decision.converted.code
    assert main(["verify", "--format", "home", "--trust", str(trust), *at, home]) == 0
    assert capsys.readouterr().out.startswith("accept")

    later = (NOW + timedelta(days=2)).isoformat()
    assert (
        main(["verify", "--format", "home", "--trust", str(trust), "--at", later, "--json", home])
        == 1
    )
    assert json.loads(capsys.readouterr().out)["reason"] == "CODE_EXPIRED"

    tampered = home[:-6] + ("AAAAAA" if not home.endswith("AAAAAA") else "BBBBBB")
    assert main(["verify", "--format", "home", "--trust", str(trust), *at, "--json", tampered]) == 1
    assert json.loads(capsys.readouterr().out)["reason"] in {"SIGNATURE_INVALID", "MALFORMED"}

    assert (
        main(["verify", "--format", "home", "--trust", str(tmp_path / "missing.json"), home]) == 2
    )
    assert "cannot read" in capsys.readouterr().err


def test_parser_builds_without_side_effects() -> None:
    assert build_parser().prog == "trustgw"


@pytest.mark.integration
@pytest.mark.slow
def test_demo_runs_end_to_end_and_every_decision_is_as_expected(capsys) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "82 of 82 decisions as expected" in out
    # The counters, as scraped from the gateway's own metrics endpoint during the demo.
    assert 'trustgw_recognitions_total{decision="recognised",reason="RECOGNISED"} 16' in out
    assert 'trustgw_recognitions_total{decision="refused",reason="NOT_GREEN"} 30' in out
    assert "trustgw_conversions_total (all regions) 8" in out
    # The two online regions through their simulated endpoints (docs/partners.md §9).
    assert 'reason="PARTNER_TIMEOUT"} 2' in out and 'reason="CODE_UNKNOWN"} 2' in out
    for reason in ("RECOGNISED", "NOT_GREEN", "CODE_EXPIRED", "SIGNATURE_INVALID"):
        assert reason in out


def test_a_file_path_is_read_as_input(tmp_path) -> None:
    from gateway.cli.verify import _read_input

    p: Path = tmp_path / "code.txt"
    p.write_text("SD1:abc.def\n")
    assert _read_input(str(p)) == "SD1:abc.def\n"
    assert _read_input("SD1:abc.def") == "SD1:abc.def"
