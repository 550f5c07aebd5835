"""Rotation under load: a partner rotates its signing key and the gateway its attest and
trustlist keys while verifiers recognise codes over mTLS: no failed request, no valid code
refused, every new gateway key in the trust list before it signs anything."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from registry_grpc_support import (
    DAY,
    NOW,
    SHOW,
    client,
    factory,
    listed,
    make_pki,
    new_issuer,
    partner_for,
)
from support.aio import run, serving
from support.wait import eventually

from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.api.v1 import registry_pb2 as rpb
from gateway.api.v1 import registry_pb2_grpc as rpb_grpc
from gateway.cli import main
from gateway.pki import TlsFiles
from keys.signed import Envelope
from keys.trustlist import PinnedKey, TrustListVerifier

pytestmark = pytest.mark.integration  # a real server (tests/support/tiers.py)

WORKERS = 8


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TlsFiles]:
    return make_pki(tmp_path / "pki")


def test_partner_and_gateway_key_rotation_under_load_fails_no_request(
    prepared_dir, pki, simulator, capsys
) -> None:
    data_dir = prepared_dir(NOW)
    partner = partner_for(SHOW)
    old = simulator.issuer(SHOW.code)
    new = new_issuer(SHOW, "show-rotated")
    makers = {old.kid: factory(old, 1), new.kid: factory(new, 2)}

    async def scenario() -> dict[str, Any]:
        async with serving(data_dir, pki["server"]) as (gateway, port):
            await gateway.trust.install_partner(
                partner.partner_file(), actor="operator:test", now=NOW
            )
            p, v = client(port, pki["partner"]), client(port, pki["verifier"])
            await p.publish(partner.keyset(1, [listed(old)], expires=NOW + DAY))
            start_kids = {i.kid for i in gateway.key_dir.public_keys()}
            pinned = PinnedKey.of(gateway.key_dir.public_keys())
            state: dict[str, Any] = {"signing": old.kid, "stop": False}
            results: dict[str, Any] = {
                "responses": 0,
                "errors": [],
                "refused": [],
                "attest_kids": set(),
                "unlisted_when_first_used": [],
                "lists": [],
            }
            in_flight: dict[str, int] = {old.kid: 0, new.kid: 0}

            async def worker() -> None:
                while not state["stop"]:
                    kid = state["signing"]
                    in_flight[kid] += 1
                    try:
                        response = await v.recognise(makers[kid]())
                    except grpc.aio.AioRpcError as exc:
                        results["errors"].append(f"{exc.code()}: {exc.details()}")
                        continue
                    finally:
                        in_flight[kid] -= 1
                    results["responses"] += 1
                    if response.reason != "RECOGNISED":
                        results["refused"].append((kid, response.reason))
                    att = response.attestation.key_id
                    if att not in results["attest_kids"]:
                        results["attest_kids"].add(att)
                        latest = await gateway.store.latest_trustlist()
                        if att.encode() not in latest.content:
                            results["unlisted_when_first_used"].append(att)

            async def watch() -> None:
                verifier = TrustListVerifier(pinned)
                call = v.trustlist.WatchTrustList(rpb.WatchTrustListRequest())
                async for message in call:
                    # at the time it says it was signed (the server's clock)
                    at = datetime.fromtimestamp(message.issued_at, UTC)
                    accepted = verifier.verify(message.envelope, at)
                    results["lists"].append((accepted.version, sorted(verifier.trusted_kids)))

            async def rotate_gateway_key(role: str) -> str:
                # --activate-in 0: signs as soon as this gateway's watchers have the key
                args = ["keys", "rotate", "--data-dir", str(data_dir), "--role", role, "--json",
                        "--activate-in", "0"]  # fmt: skip
                assert await asyncio.to_thread(main, args) == 0
                return str(json.loads(capsys.readouterr().out)["kid"])

            async def load(more: int) -> None:
                """Until ``more`` further requests have been answered (the load goes on)."""
                mark = results["responses"] + len(results["errors"])
                await eventually(
                    lambda: results["responses"] + len(results["errors"]) >= mark + more,
                    what=f"{more} more answers",
                )

            async def rotate() -> dict[str, str]:
                try:
                    await load(60)
                    # Partner: v2 lists the old and the new key, then it signs with the new one
                    both = [listed(old), listed(new)]
                    await p.publish(partner.keyset(2, both, expires=NOW + DAY))
                    state["signing"] = new.kid
                    await eventually(lambda: not in_flight[old.kid], what="old codes answered")
                    await load(60)
                    # ... and v3 drops the old key once nothing it signed is in flight.
                    await p.publish(partner.keyset(3, [listed(new)], expires=NOW + DAY))
                    await load(60)
                    # Gateway: new attest and trustlist keys while the load runs.
                    kids = {r: await rotate_gateway_key(r) for r in ("attest", "trustlist")}
                    await eventually(
                        lambda: kids["attest"] in results["attest_kids"], what="new attest key"
                    )
                    await load(60)
                finally:
                    state["stop"] = True
                return kids

            watcher = asyncio.create_task(watch())
            *_, kids = await asyncio.gather(*(worker() for _ in range(WORKERS)), rotate())
            results["kids"] = kids
            results["start_kids"] = start_kids
            stale = await v.recognise(makers[old.kid]())
            results["stale"] = stale.reason
            # The watcher has the list signed by the new trustlist key.
            await eventually(
                lambda: results["lists"] and kids["trustlist"] in results["lists"][-1][1],
                what="the watcher follows the trustlist key rotation",
            )
            watcher.cancel()
            await p.close()
            await v.close()
            return results

    results = run(scenario())
    print(
        f"\nrotation under load: {results['responses']} requests, "
        f"{len(results['errors'])} failed, {len(results['refused'])} refused, "
        f"{len(results['lists'])} trust lists pushed"
    )
    assert results["errors"] == []
    assert results["refused"] == []
    assert results["responses"] > 200
    # Both attest keys answered, without a gap; the new one was listed before it signed.
    assert results["kids"]["attest"] in results["attest_kids"]
    assert len(results["attest_kids"]) == 2
    assert results["unlisted_when_first_used"] == []
    # The watcher followed every version, and the trustlist key rotation, from its pinned key.
    versions = [version for version, _ in results["lists"]]
    assert versions == sorted(versions) and len(versions) >= 4
    assert results["kids"]["trustlist"] in results["lists"][-1][1]
    # After v3 the old partner key is gone.
    assert results["stale"] == "KEY_UNKNOWN"


def test_an_announced_gateway_key_is_listed_at_once_and_signs_only_from_activate_at(
    prepared_dir, codes, capsys
) -> None:
    data_dir = prepared_dir(NOW)
    make = codes(SHOW.code, NOW)

    async def scenario() -> tuple[str, dict[str, Any], str, str]:
        async with serving(data_dir) as (gateway, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                before = await stub.Recognise(pb.RecogniseRequest(code=make()), timeout=5)
                watch = rpb_grpc.TrustListServiceStub(channel).WatchTrustList(
                    rpb.WatchTrustListRequest(since_version=gateway.trustlist.version)
                )
                args = ["keys", "rotate", "--data-dir", str(data_dir), "--role", "attest"]
                assert await asyncio.to_thread(main, [*args, "--activate-in", "1h", "--json"]) == 0
                kid = str(json.loads(capsys.readouterr().out)["kid"])
                pushed = await asyncio.wait_for(watch.read(), 5)
                watch.cancel()
                body = json.loads(Envelope.from_bytes(pushed.envelope).signed)
                entry = next(k for k in body["upserted"] if k["kid"] == kid)
                after = await stub.Recognise(pb.RecogniseRequest(code=make()), timeout=5)
                return kid, entry, before.attestation.key_id, after.attestation.key_id

    kid, entry, before, after = run(scenario())
    assert (entry["role"], entry["owner"]) == ("attest", "370000")
    assert entry["not_before"] >= int(NOW.timestamp()) + 3600 - 60  # announced, not yet valid
    assert after == before != kid  # the previous key signs until the new one's activate_at
