"""A new gateway key signs only after the trust list that carries it has been recorded and
pushed to this process's watchers; every rotation has a lead time (issue 8 item 16).

Pins docs/verifying.md, "Keys and rotation", docs/operations.md, "Rotating keys" (the lead
time, ``--activate-in 0``) and docs/trust-registry.md §12, "Gateway key rotation and the trust
list". Ordering is checked with events, never with sleeps or timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from support.aio import run, serving
from support.clock import REAL_NOW
from support.wait import eventually

from adapters.regions import REGION_SPECS
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.api.v1 import registry_pb2 as rpb
from gateway.api.v1 import registry_pb2_grpc as rpb_grpc
from gateway.cli import main
from gateway.grpc.trustlist import TrustListService
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway
from keys import gatewaykeys
from keys.keystore import DEFAULT_ACTIVATION_DELAY, KeyRole
from keys.model import HOME_REGION, Mode
from keys.timeutil import utcnow
from keys.trustlist import PinnedKey, TrustListVerifier
from tests.support.keyring import stored_keys

NOW = REAL_NOW  # a serving gateway reads the real clock
SHOW = next(s.code for s in REGION_SPECS if s.mode is Mode.SHOW)


class Watcher:
    """Follows a WatchTrustList stream with a verifier; records every gateway key it has."""

    def __init__(self, pinned: list[PinnedKey]) -> None:
        self.verifier = TrustListVerifier(pinned)
        self.kids: set[str] = set()
        self.since: dict[str, int] = {}  # each key id: the version of the first list carrying it
        self.lists = 0

    def take(self, message: Any) -> set[str]:
        """Verify a pushed list (a ``TrustListResponse`` or a ``SignedTrustList``) at the time
        it says it was signed, and hold its keys."""
        issued = message.issued_at
        at = issued if isinstance(issued, datetime) else datetime.fromtimestamp(issued, UTC)
        accepted = self.verifier.verify(message.envelope, at)
        self.kids = {str(k["kid"]) for k in accepted.keys(HOME_REGION)}
        for kid in self.kids:
            self.since.setdefault(kid, message.version)
        self.lists += 1
        return self.kids


class _Context:
    """What WatchTrustList needs of a servicer context on a plaintext server: nothing but
    ``abort_with_status`` for a failure the test would report."""

    async def abort_with_status(self, status: Any) -> None:
        raise AssertionError(f"the watch aborted: {status}")


def test_a_reloaded_key_signs_only_after_every_watcher_took_the_list_carrying_it(
    prepared_dir, codes
) -> None:
    """In process: the watcher holds on to the list (it has not taken it yet); meanwhile the
    old key keeps signing, then the new key signs — never before."""
    data_dir = prepared_dir(NOW)
    make = codes(SHOW, NOW)

    async def scenario() -> dict[str, Any]:
        gateway = await Gateway.open(GatewayConfig(data_dir=data_dir, refresh_interval=3600))
        try:
            watcher = Watcher(PinnedKey.of(gateway.published_keys()))
            watcher.take(await gateway.trustlist.signed(0, NOW))  # the full list first
            received = asyncio.Event()
            release = asyncio.Event()
            stream = TrustListService(gateway).WatchTrustList(
                rpb.WatchTrustListRequest(since_version=gateway.trustlist.version), _Context()
            )

            async def follow(messages: AsyncIterator[rpb.TrustListResponse]) -> None:
                async for message in messages:
                    watcher.take(message)
                    received.set()
                    await release.wait()  # the stream is resumed (delivered) only after this

            following = asyncio.create_task(follow(stream))
            old, _ = gateway.signer(KeyRole.ATTEST, NOW)
            rotated_at = NOW + timedelta(minutes=1)  # after the keys of prepared_dir(NOW)
            new = await gatewaykeys.rotate(  # emergency, in the database's keyring
                gateway.store, None, KeyRole.ATTEST, rotated_at, activate_at=rotated_at
            )
            at = rotated_at + timedelta(minutes=1)  # the new key is valid: only the gate holds it
            reloading = asyncio.create_task(gateway.refresh())
            await asyncio.wait_for(received.wait(), 30)
            # The list is recorded and on its way; the watcher has not taken it.
            published = {i.kid for i in gateway.published_keys()}
            during = [await gateway.recogniser.recognise(make(), at) for _ in range(20)]
            still_reloading = not reloading.done()
            release.set()
            await asyncio.wait_for(reloading, 30)
            after = await gateway.recogniser.recognise(make(), at)
            stream_kids = set(watcher.kids)
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
            await stream.aclose()
            return {
                "old": old.kid,
                "new": new.kid,
                "published": published,
                "during": {d.attestation.kid for d in during if d.attestation},
                "still_reloading": still_reloading,
                "after": after.attestation.kid if after.attestation else None,
                "watcher_kids": stream_kids,
            }
        finally:
            await gateway.close()

    r = run(scenario())
    assert r["new"] in r["published"]  # published (GetGatewayKeys, trust list) at once ...
    assert r["still_reloading"] and r["during"] == {r["old"]}  # ... but not signing yet
    assert r["new"] in r["watcher_kids"] and r["after"] == r["new"]


def test_a_watcher_that_does_not_read_delays_a_new_key_only_until_the_push_timeout(
    prepared_dir, codes, caplog
) -> None:
    """docs/verifying.md, "Keys and rotation": a subscriber that does not read is waited for at
    most the push timeout, then the new key signs and a warning says so."""
    data_dir = prepared_dir(NOW)
    make = codes(SHOW, NOW)

    async def scenario() -> tuple[str, str]:
        gateway = await Gateway.open(GatewayConfig(data_dir=data_dir, refresh_interval=3600))
        gateway._push_timeout = timedelta(milliseconds=200)
        try:
            with gateway.trustlist.watching(gateway.trustlist.version):  # never delivers
                rotated_at = NOW + timedelta(minutes=1)  # after the keys of prepared_dir(NOW)
                new = await gatewaykeys.rotate(
                    gateway.store, None, KeyRole.ATTEST, rotated_at, activate_at=rotated_at
                )
                with caplog.at_level(logging.WARNING, logger="trustgw.server"):
                    await gateway.refresh()
                decision = await gateway.recogniser.recognise(
                    make(), rotated_at + timedelta(minutes=1)
                )
                assert decision.attestation is not None
                return new.kid, decision.attestation.kid
        finally:
            await gateway.close()

    new, signed_by = run(scenario())
    assert signed_by == new
    assert "did not take version" in caplog.text


@pytest.mark.integration
def test_over_grpc_every_response_signed_by_a_new_key_arrives_after_the_watcher_had_it(
    prepared_dir, codes, capsys
) -> None:
    """Over gRPC, under load, with an emergency rotation (``--activate-in 0``): the list
    carrying a key is always written to the watch before the first response that key signed
    arrives, so a verifier that takes what its watch received first never meets that key
    unknown (docs/verifying.md, "Keys and rotation")."""
    data_dir = prepared_dir(NOW)
    make = codes(SHOW, NOW)

    async def scenario() -> dict[str, Any]:
        async with serving(data_dir) as (gateway, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                watcher = Watcher(PinnedKey.of(gateway.published_keys()))
                lists = rpb_grpc.TrustListServiceStub(channel)
                held = await lists.GetTrustList(rpb.GetTrustListRequest(), timeout=10)
                watcher.take(held)  # the full list first, then every version pushed
                watch = lists.WatchTrustList(rpb.WatchTrustListRequest(since_version=held.version))
                state: dict[str, Any] = {"stop": False, "new": None, "unknown": [], "signed": 0}
                started = asyncio.Event()

                async def follow() -> None:
                    async for message in watch:
                        watcher.take(message)

                async def worker() -> None:
                    while not state["stop"]:
                        response = await stub.Recognise(
                            pb.RecogniseRequest(code=make()), timeout=10
                        )
                        started.set()
                        kid = response.attestation.key_id
                        if kid not in watcher.kids:
                            # The follower has not taken the list carrying this key yet: its
                            # reader task may run after this one. The guarantee is that the
                            # gateway wrote that list to the watch before the key signed, so the
                            # follower takes it without asking for anything more; a key whose
                            # list no watch had been written is a key the watcher never met.
                            written = max(gateway.trustlist.written_versions(), default=0)
                            await eventually(
                                lambda k=kid: k in watcher.kids, what=f"the list carrying {kid}"
                            )
                            if watcher.since[kid] > written:
                                state["unknown"].append(kid)
                        if kid == state["new"]:
                            state["signed"] += 1

                async def rotate() -> None:
                    await asyncio.wait_for(started.wait(), 30)
                    args = ["keys", "rotate", "--data-dir", str(data_dir), "--role", "attest",
                            "--activate-in", "0", "--json"]  # fmt: skip
                    assert await asyncio.to_thread(main, args) == 0
                    try:
                        state["new"] = json.loads(capsys.readouterr().out)["kid"]
                        await eventually(lambda: state["signed"] >= 20, what="the new key signs")
                    finally:
                        state["stop"] = True

                following = asyncio.create_task(follow())
                await asyncio.gather(*(worker() for _ in range(6)), rotate())
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following
                return {**state, "lists": watcher.lists, "kids": watcher.kids}

    r = run(scenario())
    assert r["signed"] >= 20  # the new key did sign, under load
    assert r["new"] in r["kids"] and r["lists"] >= 1
    assert r["unknown"] == []


def test_a_rotation_without_activate_in_signs_after_the_default_lead_time(
    prepared_dir, capsys
) -> None:
    """docs/operations.md, "Rotating keys": published at once, signs 5 minutes later."""
    assert timedelta(minutes=5) == DEFAULT_ACTIVATION_DELAY
    data_dir = prepared_dir(NOW)
    before = utcnow().replace(microsecond=0)
    args = ["keys", "rotate", "--data-dir", str(data_dir), "--role", "issue", "--json"]
    assert main(args) == 0
    after = utcnow()
    result = json.loads(capsys.readouterr().out)
    not_before = datetime.fromisoformat(result["not_before"].replace("Z", "+00:00"))
    assert before + DEFAULT_ACTIVATION_DELAY <= not_before <= after + DEFAULT_ACTIVATION_DELAY
    keys = stored_keys(data_dir)
    assert result["kid"] in {i.kid for i in keys.public_keys()}
    assert keys.signer(KeyRole.ISSUE, not_before - timedelta(seconds=1))[0].kid != result["kid"]
    assert keys.signer(KeyRole.ISSUE, not_before)[0].kid == result["kid"]
