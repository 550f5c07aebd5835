"""Gateway key withdrawal (issue 12): docs/operations.md, "Withdrawing a compromised gateway
key", run end to end as written, and the rule of docs/verifying.md, "When a signed output is
valid" (rule 2: a withdrawn key refuses what it signed at or after its compromise time).

A gateway runs in process on a development data directory; the runbook's commands run through
``trustgw`` as the shell would split them, off the gateway's event loop (another process would
run them the same way). The running gateway picks the withdrawal up without a restart.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from independent import doc_checkpoint
from support.aio import run
from support.clock import REAL_NOW
from support.wait import eventually, measured
from test_documented_commands import block_lines

from adapters.regions import REGION_SPECS
from gateway import tokens
from gateway.api.v1 import recognition_pb2 as pb
from gateway.cli import main
from gateway.grpc.recognition import RecognitionService
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway
from gateway.sdk.results import trust_from_proto
from keys import gatewaykeys
from keys.errors import KeyRevokedError
from keys.keystore import KeyRole
from keys.model import KeyStatus, Mode
from keys.timeutil import to_iso, to_unix, utcnow
from keys.trustlist import PinnedKey, TrustListVerifier

ROOT = Path(__file__).resolve().parent.parent
SHOW = next(s.code for s in REGION_SPECS if s.mode is Mode.SHOW)
DATA_DIR = "/var/lib/trustgw"


def runbook() -> list[str]:
    """The commands of the runbook, as docs/operations.md shows them."""
    lines = block_lines((ROOT / "docs" / "operations.md").read_text(), "sh withdraw")
    assert lines and any("keys revoke" in line for line in lines)
    return lines


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.integration
@pytest.mark.doc('verifying.md "When a signed output is valid"', 'verifying.md "The trust file"')
def test_the_withdrawal_runbook_end_to_end(
    prepared_dir: Any, codes: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """docs/operations.md, "Withdrawing a compromised gateway key": the withdrawn attest key,
    with its compromise time, is carried at once by GetGatewayKeys, the trust list and the
    exported file; the gateway signs with its replacement from then on; `trustgw verify`, the
    SDK's tokens and the independent checkpoint accept what the key signed before the compromise
    time and refuse (KEY_REVOKED) what it signed at or after."""
    monkeypatch.chdir(tmp_path)
    start = REAL_NOW
    data_dir = prepared_dir(start - timedelta(hours=2))
    before_at = start - timedelta(minutes=30)
    compromised = start - timedelta(minutes=10)
    after_at = start - timedelta(minutes=5)

    async def scenario() -> dict[str, Any]:
        gateway = await Gateway.open(GatewayConfig(data_dir=data_dir))
        try:
            old, _ = gateway.signer(KeyRole.ATTEST, start)
            pinned = PinnedKey.of(gateway.published_keys())
            signed_before = await gateway.recogniser.recognise(codes(SHOW, before_at)(), before_at)
            signed_after = await gateway.recogniser.recognise(codes(SHOW, after_at)(), after_at)
            assert signed_before.attestation and signed_after.attestation
            assert signed_before.attestation.kid == signed_after.attestation.kid == old.kid
            outputs = []
            for line in runbook():
                line = line.replace(DATA_DIR, str(data_dir)).replace("KID", old.kid)
                line = line.replace("2026-03-11T08:00:00Z", to_iso(compromised))
                argv = shlex.split(line)
                assert argv[0] == "trustgw", line
                status, out, err = await asyncio.to_thread(_cli, argv[1:], capsys)
                assert status == 0, f"{line}\n{out}{err}"
                outputs.append(out)

            def replaced() -> bool:
                return gateway.signer(KeyRole.ATTEST, utcnow())[0].kid != old.kid

            _, delay = await measured(
                eventually(replaced), timeout=30, what="the running gateway signs anew"
            )
            now = utcnow()
            fresh = await gateway.recogniser.recognise(codes(SHOW, now)(), now)
            reply = await RecognitionService(gateway).GetGatewayKeys(
                pb.GetGatewayKeysRequest(),
                None,  # type: ignore[arg-type]
            )
            listed = await gateway.trustlist.signed(0, now)
            return {
                "old": old,
                "pinned": pinned,
                "before": signed_before.attestation,
                "after": signed_after.attestation,
                "fresh": fresh.attestation,
                "reply": reply,
                "list": listed,
                "outputs": outputs,
                "delay": delay,
            }
        finally:
            await gateway.close()

    r = run(scenario())
    print(f"withdrawal in force in the running gateway after {r['delay'] * 1000:.0f} ms")
    old = r["old"]
    assert "withdrew gateway attest key" in r["outputs"][1] and "replaced by" in r["outputs"][1]
    assert old.kid in r["outputs"][-1] and "revoked" in r["outputs"][-1]

    # GetGatewayKeys and the SDK's reading of it.
    (entry,) = [k for k in r["reply"].keys if k.key_id == old.kid]
    assert entry.status == "revoked" and entry.revoked_at == to_unix(compromised)
    sdk_trust = trust_from_proto(r["reply"])
    # The trust list, verified as a watcher would (pinned to the keys it had before).
    trust_list = TrustListVerifier(r["pinned"]).verify(r["list"].envelope, utcnow())
    listed = tokens.GatewayTrust.from_trustlist(trust_list).find(old.kid, "attest")
    assert listed.status == "revoked" and listed.revoked_at == compromised
    # The exported keys file shows each key's status.
    exported = json.loads((tmp_path / "trustgw-keys.json").read_text())
    statuses = {k["kid"]: (k["status"], k["revoked_at"]) for k in exported["keys"]}
    assert statuses[old.kid] == ("revoked", to_unix(compromised))
    fresh = r["fresh"]
    assert fresh is not None and fresh.kid != old.kid
    assert statuses[fresh.kid][0] == "active"

    file_trust = tokens.GatewayTrust.from_json((tmp_path / "trustgw-keys.json").read_bytes())
    checkpoint = doc_checkpoint.TrustFile.from_json((tmp_path / "trustgw-keys.json").read_bytes())
    for trust in (file_trust, sdk_trust):
        before = r["before"]
        tokens.verify_attestation(before, trust, before_at + timedelta(seconds=1))
        with pytest.raises(KeyRevokedError):
            tokens.verify_attestation(r["after"], trust, after_at + timedelta(seconds=1))
        tokens.verify_attestation(fresh, trust, utcnow())

    def checkpoint_verdict(att: tokens.Attestation, at: datetime) -> str:
        try:
            doc_checkpoint.verify_attestation(
                checkpoint, att.payload, att.kid, att.alg, att.signature, to_unix(at)
            )
        except doc_checkpoint.Refused as refused:
            return refused.reason
        return "ACCEPTED"

    assert checkpoint_verdict(r["before"], before_at + timedelta(seconds=1)) == "ACCEPTED"
    assert checkpoint_verdict(r["after"], after_at + timedelta(seconds=1)) == "KEY_REVOKED"

    # trustgw verify, offline, with the exported file.
    for name, att, at, expected in (
        ("before", r["before"], before_at, 0),
        ("after", r["after"], after_at, 1),
    ):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(att.to_json()))
        args = ["verify", "--format", "attestation", "--trust", "trustgw-keys.json", "--json"]
        status, out, _ = _cli([*args, "--at", to_iso(at + timedelta(seconds=1)), str(path)], capsys)
        assert status == expected, out
        if expected:
            assert json.loads(out)["reason"] == "KEY_REVOKED"


def test_keys_revoke_of_the_home_region_names_the_gateway_key(
    prepared_dir: Any, capsys: Any
) -> None:
    """`keys revoke --region 370000 --kid` works for a gateway key (its role found from the
    kid); an unknown kid is NOT_FOUND naming `keys list`; --role with a partner's region, or
    neither --role nor --region, is a usage error."""
    data_dir = prepared_dir(utcnow() - timedelta(hours=1))
    keys = run(_keys(data_dir))
    retired_issue = next(k for k in keys if k.role is KeyRole.ISSUE)
    base = ["keys", "revoke", "--data-dir", str(data_dir)]
    status, out, err = _cli(
        [*base, "--region", "370000", "--kid", retired_issue.kid, "--json"], capsys
    )
    assert status == 0, err
    result = json.loads(out)
    assert (result["role"], result["status"]) == ("issue", "revoked")
    assert result["replacement"] is not None  # it was the issue key that signs: rotated at once
    status, _, err = _cli([*base, "--region", "370000", "--kid", "0000000000000000"], capsys)
    assert status == 1 and err.startswith("trustgw: NOT_FOUND: ") and "keys list" in err
    status, _, err = _cli([*base, "--role", "attest", "--region", "110000", "--kid", "x"], capsys)
    assert status == 2 and err.startswith("trustgw: USAGE: ")
    status, _, err = _cli([*base, "--kid", "x"], capsys)
    assert status == 2 and err.startswith("trustgw: USAGE: ")
    future = to_iso(utcnow() + timedelta(days=1))
    status, _, err = _cli([*base, "--role", "attest", "--kid", keys[0].kid, "--at", future], capsys)
    assert status == 2 and "future" in err


async def _keys(data_dir: Path) -> list[Any]:
    from tests.support.keyring import open_stored_keys

    return (await open_stored_keys(data_dir)).public_keys()


def test_the_gateway_never_signs_with_a_withdrawn_key(tmp_path: Path) -> None:
    """Withdrawing a retired key (another one signs) adds nothing; the withdrawn key is never
    chosen to sign, not even inside its validity window."""
    from keys.store import SQLiteStore

    async def scenario() -> None:
        store = await SQLiteStore.open(tmp_path / "db")
        try:
            now = utcnow().replace(microsecond=0)
            await gatewaykeys.create_or_join(store, dev=True, passphrase=None, now=now)
            new = await gatewaykeys.rotate(store, None, KeyRole.ATTEST, now, activate_at=now)
            keyring = await gatewaykeys.open_keyring(store, None)
            (old,) = [
                k for k in keyring.public_keys() if k.role is KeyRole.ATTEST and k.kid != new.kid
            ]
            withdrawn, replacement = await gatewaykeys.withdraw(
                store, None, KeyRole.ATTEST, new.kid, now, now
            )
            assert replacement is None or replacement.kid != new.kid
            keyring = await gatewaykeys.open_keyring(store, None)
            for at in (now, now + timedelta(days=30)):
                kid = keyring.signer(KeyRole.ATTEST, at)[0].kid
                assert kid != new.kid
                assert all(i.kid != new.kid for i, _ in keyring.signers(KeyRole.ATTEST, at))
            assert withdrawn.status is KeyStatus.REVOKED and old.status is KeyStatus.RETIRED
        finally:
            await store.close()

    run(scenario())
