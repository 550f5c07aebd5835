"""PartnerService and TrustListService over real gRPC with mutual TLS."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from registry_grpc_support import (
    DAY,
    NOW,
    OTHER,
    SHOW,
    Client,
    client,
    error_reason,
    factory,
    listed,
    make_pki,
    new_issuer,
    partner_for,
)
from support.aio import run, serving
from support.wait import eventually

from adapters.simulator import PartnerSimulator
from gateway.api.v1 import registry_pb2 as rpb
from gateway.pki import TlsFiles
from keys.errors import GatewayError
from keys.partner import PartnerSigner
from keys.trustlist import PinnedKey, TrustListVerifier

pytestmark = pytest.mark.integration  # a real server (tests/support/tiers.py)

T = TypeVar("T")
HOUR = timedelta(hours=1)
Body = Callable[[Any, dict[str, Client]], Awaitable[T]]


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TlsFiles]:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def world(prepared_dir, pki, simulator: PartnerSimulator):
    """``world(body)`` runs ``body(gateway, clients)`` against a gateway over mTLS in which
    SHOW's and OTHER's partners are onboarded (anchors installed, no key set yet)."""
    data_dir = prepared_dir(NOW)

    def go(body: Body[T], partners: tuple[PartnerSigner, ...] = ()) -> T:
        async def scenario() -> T:
            async with serving(data_dir, pki["server"]) as (gateway, port):
                for partner in partners:
                    await gateway.trust.install_partner(
                        partner.partner_file(), actor="operator:test", now=NOW
                    )
                clients = {name: client(port, pki[name]) for name in pki if name != "server"}
                try:
                    return await body(gateway, clients)
                finally:
                    for c in clients.values():
                        await c.close()

        return run(scenario())

    return go


async def failure(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        result = await call
    except grpc.aio.AioRpcError as exc:
        return error_reason(exc)
    raise AssertionError(f"the call succeeded: {result}")


@pytest.mark.doc("trust-registry.md §12")
def test_a_published_key_set_takes_effect_at_once(world, simulator) -> None:
    partner = partner_for(SHOW)
    old = simulator.issuer(SHOW.code)
    new = new_issuer(SHOW, "show-2026-b")

    async def body(gateway, c: dict[str, Client]) -> list[Any]:
        p, v = c["partner"], c["verifier"]
        first = await p.publish(partner.keyset(1, [listed(old)], expires=NOW + DAY))
        before = await v.recognise(factory(new)())
        second = await p.publish(partner.keyset(2, [listed(new)], expires=NOW + DAY))
        # No sleep: the server refreshed its snapshot when it accepted the key set.
        fresh = await v.recognise(factory(new)())
        stale = await v.recognise(factory(old)())
        return [first, before, second, fresh, stale]

    first, before, second, fresh, stale = world(body, (partner,))
    assert (first.kind, first.version, first.duplicate) == (rpb.SUBMISSION_KIND_KEYSET, 1, False)
    assert first.region == SHOW.code and len(first.digest) == 64
    assert before.reason == "KEY_UNKNOWN"
    assert (second.version, list(second.keys_added), list(second.keys_removed)) == (
        2,
        ["show-2026-b"],
        [old.kid],
    )
    assert fresh.reason == "RECOGNISED"
    assert stale.reason == "KEY_UNKNOWN"


@pytest.mark.parametrize(
    ("version", "expires", "expected"),
    [
        pytest.param(1, NOW + 2 * DAY, "VERSION_ROLLBACK", id="rollback-to-v1"),
        pytest.param(2, NOW + 2 * DAY, "VERSION_REPLAY", id="equal-version-other-body"),
        pytest.param(4, NOW + DAY, "VERSION_GAP", id="gap-to-v4"),
        pytest.param(3, NOW - DAY, "KEYSET_EXPIRED", id="expired-key-set"),
    ],
)
def test_key_set_versions_only_move_forward(world, simulator, version, expires, expected) -> None:
    partner = partner_for(SHOW)
    keys = [listed(simulator.issuer(SHOW.code))]
    status = {
        "VERSION_ROLLBACK": grpc.StatusCode.FAILED_PRECONDITION,
        "VERSION_REPLAY": grpc.StatusCode.FAILED_PRECONDITION,
        "VERSION_GAP": grpc.StatusCode.FAILED_PRECONDITION,
        "KEYSET_EXPIRED": grpc.StatusCode.INVALID_ARGUMENT,
    }[expected]

    async def body(gateway, c: dict[str, Client]) -> tuple[grpc.StatusCode, str]:
        p = c["partner"]
        await p.publish(partner.keyset(1, keys, expires=NOW + DAY))
        await p.publish(partner.keyset(2, keys, expires=NOW + DAY))
        return await failure(p.publish(partner.keyset(version, keys, expires=expires)))

    assert world(body, (partner,)) == (status, expected)


def test_a_retried_submission_is_acknowledged_as_a_duplicate(world, simulator) -> None:
    partner = partner_for(SHOW)
    envelope = partner.keyset(1, [listed(simulator.issuer(SHOW.code))], expires=NOW + DAY)

    async def body(gateway, c: dict[str, Client]) -> list[rpb.SubmissionReceipt]:
        return [await c["partner"].publish(envelope) for _ in range(2)]

    first, retry = world(body, (partner,))
    assert (first.duplicate, retry.duplicate) == (False, True)
    assert (retry.digest, retry.version, retry.accepted_at) == (
        first.digest,
        first.version,
        first.accepted_at,
    )


@pytest.mark.doc("trust-registry.md §8", "trust-registry.md §12")
@pytest.mark.parametrize(
    ("caller", "signer", "expected"),
    [
        pytest.param("other", "show", "REGION_FORBIDDEN", id="other-region-certificate"),
        pytest.param("partner", "other", "REGION_FORBIDDEN", id="signed-by-other-anchors"),
        pytest.param("verifier", "show", "PERMISSION_DENIED", id="verifier-certificate"),
        pytest.param("operator", "show", "PERMISSION_DENIED", id="operator-certificate"),
    ],
)
def test_only_a_partner_of_the_region_may_write(world, simulator, caller, signer, expected) -> None:
    show, other = partner_for(SHOW), partner_for(OTHER)
    keys = [listed(simulator.issuer(SHOW.code))]
    signers = (show if signer == "show" else other).anchors.signers()
    envelope = show.keyset(1, keys, expires=NOW + DAY, signers=signers)

    async def body(gateway, c: dict[str, Client]) -> tuple[grpc.StatusCode, str]:
        return await failure(c[caller].publish(envelope))

    assert world(body, (show, other)) == (grpc.StatusCode.PERMISSION_DENIED, expected)


@pytest.mark.doc("trust-registry.md §11", "trust-registry.md §12")
def test_bad_submissions_are_invalid_argument_never_internal(world) -> None:
    partner = partner_for(SHOW)

    async def body(gateway, c: dict[str, Client]) -> list[tuple[grpc.StatusCode, str]]:
        stub = c["partner"].partner
        results = []
        for data in (b"", b"not json", b'{"signed": "e30", "signatures": []}', b"{" * 5000):
            for method in (stub.PublishKeySet, stub.RevokeKey, stub.PublishRevocations):
                call = method(rpb.SubmissionRequest(submission=data), timeout=5)
                results.append(await failure(call))
        return results

    results = world(body, (partner,))
    assert {code for code, _ in results} == {grpc.StatusCode.INVALID_ARGUMENT}
    assert {reason for _, reason in results} <= {"INVALID_REQUEST", "MALFORMED", "OVERSIZED"}


def test_revoked_codes_holders_and_keys_are_refused_right_away(world, simulator) -> None:
    partner = partner_for(SHOW)
    issuer = simulator.issuer(SHOW.code)
    make = factory(issuer)
    holder = ("11010119900307001X", "Zhang San")
    revoked_code = make(code_id="c0ffee01")
    holders_code = make(holder=holder)
    other_code = make()

    async def body(gateway, c: dict[str, Client]) -> list[Any]:
        p, v = c["partner"], c["verifier"]
        await p.publish(partner.keyset(1, [listed(issuer)], expires=NOW + DAY))
        before = [(await v.recognise(x)).reason for x in (revoked_code, holders_code)]
        batch = partner.revocations(
            "b-0001", NOW - timedelta(minutes=1), code_ids=["c0ffee01"], holder_ids=[holder[0]]
        )
        receipt = await p.partner.PublishRevocations(rpb.SubmissionRequest(submission=batch))
        after = [(await v.recognise(x)).reason for x in (revoked_code, holders_code, other_code)]
        revocation = partner.key_revocation(issuer.kid, NOW - 2 * HOUR)
        key_receipt = await p.partner.RevokeKey(rpb.SubmissionRequest(submission=revocation))
        late = await v.recognise(other_code)  # issued an hour ago: after the compromise
        return [before, receipt, after, key_receipt, late.reason]

    before, receipt, after, key_receipt, late = world(body, (partner,))
    assert before == ["RECOGNISED", "RECOGNISED"]
    assert (receipt.kind, receipt.batch_id, receipt.codes, receipt.holders) == (
        rpb.SUBMISSION_KIND_REVOCATIONS,
        "b-0001",
        1,
        1,
    )
    assert after == ["CODE_REVOKED", "CODE_REVOKED", "RECOGNISED"]
    assert (key_receipt.kind, key_receipt.key_id) == (
        rpb.SUBMISSION_KIND_KEY_REVOCATION,
        issuer.kid,
    )
    assert key_receipt.revoked_at == int((NOW - 2 * HOUR).timestamp())
    assert late == "KEY_REVOKED"


@pytest.mark.doc("trust-registry.md §12")
def test_trust_list_fetch_delta_verify_and_rollback(world, simulator) -> None:
    partner = partner_for(SHOW)
    old = simulator.issuer(SHOW.code)
    new = new_issuer(SHOW, "show-2026-b")

    async def body(gateway, c: dict[str, Client]) -> tuple[Any, ...]:
        pinned = PinnedKey.of(gateway.key_dir.public_keys())
        v = c["verifier"].trustlist
        first = await v.GetTrustList(rpb.GetTrustListRequest(since_version=0))
        await c["partner"].publish(partner.keyset(1, [listed(old)], expires=NOW + DAY))
        await c["partner"].publish(partner.keyset(2, [listed(new)], expires=NOW + DAY))
        delta = await v.GetTrustList(rpb.GetTrustListRequest(since_version=first.version))
        full = await c["partner"].trustlist.GetTrustList(rpb.GetTrustListRequest())
        unknown = await c["operator"].trustlist.GetTrustList(
            rpb.GetTrustListRequest(since_version=10_000)
        )
        negative = await failure(v.GetTrustList(rpb.GetTrustListRequest(since_version=-1)))
        return pinned, first, delta, full, unknown, negative

    pinned, first, delta, full, unknown, negative = world(body, (partner,))
    assert first.since_version == 0 and first.version >= 1
    assert first.expires > NOW.timestamp() + DAY.total_seconds() - 60
    assert (delta.since_version, delta.version) == (first.version, full.version)
    assert delta.version > first.version
    assert (unknown.since_version, unknown.version) == (0, full.version)
    assert negative == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")

    verifier = TrustListVerifier(pinned)
    # Checked when the last of them was signed (the server signs with its own clock): each is
    # valid from its issued_at (docs/trust-registry.md §9).
    at = datetime.fromtimestamp(max(first.issued_at, delta.issued_at, full.issued_at), UTC)
    held = verifier.verify(first.envelope, at)
    assert any(k["kid"] == old.kid for k in held.keys(SHOW.code))
    import json

    from keys.signed import Envelope

    body = json.loads(Envelope.from_bytes(delta.envelope).signed)
    assert {"owner": SHOW.code, "kid": old.kid} in body["removed"]
    after = verifier.verify(delta.envelope, at)
    assert [k["kid"] for k in after.keys(SHOW.code)] == ["show-2026-b"]
    assert verifier.verify(full.envelope, at).digest == after.digest
    with pytest.raises(GatewayError) as info:
        verifier.verify(first.envelope, at)  # a rolled-back list
    assert info.value.reason == "TRUSTLIST_ROLLBACK"


@pytest.mark.doc("trust-registry.md §12")
def test_watch_pushes_each_new_version_and_ends_on_shutdown(prepared_dir, pki, simulator) -> None:
    partner = partner_for(SHOW)
    data_dir = prepared_dir(NOW)
    issuer = simulator.issuer(SHOW.code)

    async def scenario() -> tuple[list[Any], Any, int]:
        async with serving(data_dir, pki["server"]) as (gateway, port):
            await gateway.trust.install_partner(
                partner.partner_file(), actor="operator:test", now=NOW
            )
            await gateway.publish_trustlist()
            start = gateway.trustlist.version
            c, p = client(port, pki["verifier"]), client(port, pki["partner"])
            call = c.trustlist.WatchTrustList(rpb.WatchTrustListRequest(since_version=start))
            received: list[Any] = []

            async def read() -> None:
                async for message in call:
                    received.append(message)

            reader = asyncio.create_task(read())
            await eventually(lambda: gateway.trustlist.watchers == 1, what="the watch is open")
            assert received == []  # nothing newer than what the watcher holds
            await p.publish(partner.keyset(1, [listed(issuer)], expires=NOW + DAY))
            # The first message pushed is the new version (checked below), not the held one.
            await eventually(lambda: received, what="the new version is pushed")
            pushed = list(received)
        # The server stopped: the stream ended by itself, with OK.
        await asyncio.wait_for(reader, 5)
        code = await call.code()
        await c.close()
        await p.close()
        return pushed, code, start

    pushed, code, start = run(scenario())
    assert len(pushed) == 1
    assert (pushed[0].since_version, pushed[0].version) == (start, start + 1)
    assert code is grpc.StatusCode.OK


@pytest.mark.doc("trust-registry.md §12")
def test_a_plaintext_dev_server_takes_the_region_from_the_submission(
    prepared_dir, simulator
) -> None:
    show, other = partner_for(SHOW), partner_for(OTHER)
    keys = [listed(simulator.issuer(SHOW.code))]
    data_dir = prepared_dir(NOW)

    async def scenario() -> tuple[Any, Any]:
        async with serving(data_dir) as (gateway, port):
            for partner in (show, other):
                await gateway.trust.install_partner(
                    partner.partner_file(), actor="operator:test", now=NOW
                )
            c = client(port, None)
            try:
                # Without certificates the anchors' signatures alone decide.
                forged = show.keyset(1, keys, expires=NOW + DAY, signers=other.anchors.signers())
                refused = await failure(c.publish(forged))
                accepted = await c.publish(show.keyset(1, keys, expires=NOW + DAY))
            finally:
                await c.close()
            return refused, accepted

    refused, accepted = run(scenario())
    assert refused == (grpc.StatusCode.PERMISSION_DENIED, "REGION_FORBIDDEN")
    assert (accepted.region, accepted.version) == (SHOW.code, 1)


def test_watch_follows_cli_changes_and_re_sends_while_idle(prepared_dir, pki, capsys) -> None:
    from gateway.cli import main

    data_dir = prepared_dir(NOW)

    async def scenario() -> tuple[list[Any], int]:
        async with serving(data_dir, pki["server"]) as (gateway, port):
            start = gateway.trustlist.version
            c = client(port, pki["verifier"])
            call = c.trustlist.WatchTrustList(rpb.WatchTrustListRequest(since_version=0))
            received: list[Any] = []
            arrived = asyncio.Event()

            async def read() -> None:
                async for message in call:
                    received.append(message)
                    arrived.set()

            reader = asyncio.create_task(read())
            await asyncio.wait_for(arrived.wait(), 30)  # the current list, first
            arrived.clear()
            # An operator disables a region with the CLI: another process, same database.
            args = ["partner", "disable", SHOW.code, "--data-dir", str(data_dir)]
            assert await asyncio.to_thread(main, args) == 0
            # Pushed once the refresh loop (every 0.1 s here) notices the change: not by the
            # idle re-send, hours away.
            await asyncio.wait_for(arrived.wait(), 30)
            call.cancel()
            reader.cancel()
            # Idle: the same version is re-sent, freshly signed, before it could expire.
            gateway.trustlist.resend = timedelta(seconds=0.2)
            held = received[-1].version
            idle = c.trustlist.WatchTrustList(rpb.WatchTrustListRequest(since_version=held))
            received.append(await asyncio.wait_for(idle.read(), 5))
            idle.cancel()
            await c.close()
            return received, start

    received, start = run(scenario())
    capsys.readouterr()
    first, disabled, resent = received[:3]
    assert (first.since_version, first.version) == (0, start)
    assert (disabled.since_version, disabled.version) == (start, start + 1)
    assert (resent.since_version, resent.version) == (0, disabled.version)


@pytest.mark.doc('api.md "The gRPC API"', 'trust-registry.md §12')
def test_reflection_and_health_list_the_registry_services(prepared_dir) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    data_dir = prepared_dir(NOW)
    names = ("gateway.api.v1.PartnerService", "gateway.api.v1.TrustListService")

    async def scenario() -> tuple[set[str], list[int]]:
        async with serving(data_dir) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])
                )
                listed = {
                    s.name async for answer in stream for s in answer.list_services_response.service
                }
                health = health_pb2_grpc.HealthStub(channel)
                statuses = [
                    (await health.Check(health_pb2.HealthCheckRequest(service=n))).status
                    for n in names
                ]
                return listed, statuses

    listed, statuses = run(scenario())
    assert set(names) <= listed
    assert statuses == [1, 1]  # SERVING


def test_a_full_size_revocation_batch_fits_the_receive_limit(world) -> None:
    partner = partner_for(SHOW)
    batch = partner.revocations(
        "big-1", NOW - DAY, code_ids=[f"code-{n:05d}" for n in range(10_000)]
    )
    assert len(batch) > 800 * 1024  # far above the 64 KiB a Recognise request needs

    async def body(gateway, c: dict[str, Client]) -> rpb.SubmissionReceipt:
        request = rpb.SubmissionRequest(submission=batch)
        return await c["partner"].partner.PublishRevocations(request, timeout=30)

    receipt = world(body, (partner,))
    assert (receipt.batch_id, receipt.codes, receipt.duplicate) == ("big-1", 10_000, False)
