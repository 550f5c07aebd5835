"""The example scripts in examples/, run as a user would, against a real gateway over mTLS."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest
from support.aio import run, serving

from adapters.regions import REGION_SPECS
from gateway.pki import TlsFiles
from keys.model import Mode

pytestmark = pytest.mark.integration  # a real server (tests/support/tiers.py)

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
MODES = {s.code: s.mode for s in REGION_SPECS}


async def script(name: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / name), *args,
        cwd=REPO, env=ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def test_setup_then_verifier_and_partner_against_a_real_gateway(tmp_path: Path) -> None:
    data_dir = tmp_path / "gw"
    code, out, err = run(script("demo_setup.py", str(data_dir)))
    assert code == 0, err
    assert "trustgw serve --data-dir" in out
    pki = data_dir / "pki"
    codes = (data_dir / "codes.txt").read_text().splitlines()
    assert len(codes) == 15
    sorted_regions = sorted(s.code for s in REGION_SPECS)
    convert = codes[sorted_regions.index(next(r for r in sorted_regions
                                               if MODES[r] is Mode.CONVERT))]  # fmt: skip
    show = codes[sorted_regions.index(next(r for r in sorted_regions if MODES[r] is Mode.SHOW))]
    yellow = codes[-1]
    trust_file = tmp_path / "trustgw-keys.json"

    def client(role: str) -> list[str]:
        return ["--cert", str(pki / f"{role}.pem"), "--key", str(pki / f"{role}.key"),
                "--ca", str(pki / "ca.pem")]  # fmt: skip

    async def scenario() -> dict[str, tuple[int, str, str]]:
        server_tls = TlsFiles(pki / "server.pem", pki / "server.key", pki / "ca.pem")
        async with serving(data_dir, server_tls) as (_, port):
            target = ["--target", f"localhost:{port}"]
            results = {
                "convert": await script("verifier.py", *target, *client("verifier"), convert),
                "yellow": await script("verifier.py", *target, *client("verifier"), yellow),
                "partner": await script(
                    "partner.py", *target, *client("partner"), "--out", str(trust_file)
                ),
                "as-partner": await script("verifier.py", *target, *client("partner"), show),
            }
            results["offline-trust"] = await script(
                "verifier.py", *target, *client("verifier"), "--trust", str(trust_file), show
            )
            # The partner asks about the home code the convert-mode code became (by its id).
            home_id = re.search(r"home-province code (SD[0-9a-f]{30})", results["convert"][1])
            assert home_id is not None, results["convert"][1]
            results["status"] = await script(
                "partner.py", *target, *client("partner"), "--out", str(tmp_path / "k2.json"),
                "--code-status", home_id.group(1),
            )  # fmt: skip
        return results

    results = run(scenario())
    code, out, err = results["convert"]
    assert code == 0, err
    assert "RECOGNISED" in out and "attestation verified" in out
    assert "home-province code SD" in out and "verified" in out
    code, out, _ = results["yellow"]
    assert code == 1 and "NOT_GREEN" in out
    code, out, err = results["partner"]
    assert code == 0, err
    assert "trust list version" in out
    trust = json.loads(trust_file.read_text())
    assert trust["region"] == "370000" and {k["role"] for k in trust["keys"]} >= {"attest", "issue"}
    code, _, err = results["as-partner"]
    assert code == 2 and "PERMISSION_DENIED" in err  # a partner certificate may not recognise
    code, out, err = results["offline-trust"]
    assert code == 0, err
    assert "attestation verified" in out
    code, out, err = results["status"]
    assert code == 0, err
    assert ": valid (colour green" in out and "signature verified" in out


def test_an_unreachable_gateway_is_exit_2(tmp_path: Path) -> None:
    code, _, err = run(
        script("verifier.py", "--target", "127.0.0.1:1", "--insecure", "--timeout", "0.5", "x")
    )
    assert code == 2 and ("UNAVAILABLE" in err or "DEADLINE_EXCEEDED" in err)
