"""The client SDK against a real server on a free port: plain results, errors with reasons,
request ids, retries only where safe, mutual TLS, async and blocking."""

from __future__ import annotations

import asyncio
import random
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.aio import run, serving
from support.clock import REAL_NOW

from adapters.base import Colour
from adapters.regions import REGION_SPECS
from gateway import tokens
from gateway.api.v1 import recognition_pb2 as pb
from gateway.limits import REQUEST_LIMITS
from gateway.pki import DevCA, TlsFiles
from gateway.sdk import (
    AsyncGatewayClient,
    Decision,
    GatewayClient,
    GatewayRpcError,
    RetryPolicy,
)
from gateway.sdk.client import error_from_grpc
from keys.model import Mode

NOW = REAL_NOW  # a serving gateway reads the real clock
CONVERT = next(s.code for s in REGION_SPECS if s.mode is Mode.CONVERT)
SHOW = next(s.code for s in REGION_SPECS if s.mode is Mode.SHOW)
FAST = RetryPolicy(attempts=4, initial_backoff=0.01, max_backoff=0.05)
KEYS = "/gateway.api.v1.RecognitionService/GetGatewayKeys"
KEYS_REQUEST = pb.GetGatewayKeysRequest()


@pytest.mark.integration
@pytest.mark.doc('verifying.md "Python API"')
def test_recognise_returns_plain_data_that_verifies_offline(codes, prepared_dir) -> None:
    data_dir = prepared_dir(NOW)
    code = codes(CONVERT, NOW)()

    async def scenario() -> tuple[Decision, Decision, tokens.GatewayTrust]:
        async with serving(data_dir) as (_, port):
            async with AsyncGatewayClient(f"127.0.0.1:{port}", insecure=True) as client:
                first = await client.recognise(code, request_id="chk-1.a", timeout=5)
                again = await client.recognise(code)
                return first, again, await client.gateway_keys()

    first, again, trust = run(scenario())
    assert first.recognised and first.reason == "RECOGNISED"
    assert (first.region, first.mode, first.colour) == (CONVERT, "convert", "green")
    assert first.request_id == first.server_request_id == "chk-1.a"
    assert len(again.request_id) == 16 and again.server_request_id == again.request_id
    assert first.valid_until is not None and first.valid_until.tzinfo is not None
    assert first.attestation is not None and first.converted is not None
    at = first.valid_until - timedelta(seconds=1)  # within its validity, whatever the clock
    claims = tokens.verify_attestation(first.attestation, trust, at)
    assert claims["region"] == CONVERT
    home = tokens.verify_home_code(first.converted.code, trust, at)
    assert home["id"] == first.converted.code_id
    assert again.converted == first.converted  # idempotent: the same code, the same conversion


@pytest.mark.integration
@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        pytest.param("yellow", "NOT_GREEN", id="not-green"),
        pytest.param("forged", "SIGNATURE_INVALID", id="forged"),
        pytest.param("garbage", "REGION_UNKNOWN", id="unknown-region"),
    ],
)
def test_a_refusal_is_a_decision_not_an_exception(codes, prepared_dir, kind, reason) -> None:
    data_dir = prepared_dir(NOW)
    make = codes(SHOW, NOW)
    code = {
        "yellow": lambda: make(Colour.YELLOW),
        "forged": lambda: make(forged=True),
        "garbage": lambda: "HELLO-WORLD",
    }[kind]()

    async def scenario() -> Decision:
        async with serving(data_dir) as (_, port):
            async with AsyncGatewayClient(f"127.0.0.1:{port}", insecure=True) as client:
                return await client.recognise(code)

    decision = run(scenario())
    assert not decision.recognised
    assert decision.reason == reason
    assert decision.attestation is None and decision.converted is None


@pytest.mark.integration
def test_invalid_request_raises_with_the_gateways_reason(prepared_dir) -> None:
    data_dir = prepared_dir(NOW)

    async def scenario() -> GatewayRpcError:
        async with serving(data_dir) as (_, port):
            async with AsyncGatewayClient(f"127.0.0.1:{port}", insecure=True) as client:
                with pytest.raises(GatewayRpcError) as info:
                    await client.recognise("x", region_hint="abc", request_id="bad-hint")
                return info.value

    error = run(scenario())
    assert error.status == "INVALID_ARGUMENT"
    assert error.reason == "INVALID_REQUEST"
    assert error.request_id == "bad-hint"
    assert not error.retryable


@pytest.mark.integration
def test_recognise_many_answers_in_order(codes, prepared_dir) -> None:
    data_dir = prepared_dir(NOW)
    show, convert = codes(SHOW, NOW), codes(CONVERT, NOW)
    batch = [convert(), show(Colour.RED), show(), "junk", convert()] * 10

    async def scenario() -> list[Decision]:
        async with serving(data_dir) as (_, port):
            async with AsyncGatewayClient(f"127.0.0.1:{port}", insecure=True) as client:
                return await client.recognise_many(batch, timeout=20)

    decisions = run(scenario())
    assert [d.reason for d in decisions] == [
        "RECOGNISED", "NOT_GREEN", "RECOGNISED", "REGION_UNKNOWN", "RECOGNISED"
    ] * 10  # fmt: skip
    assert len({d.request_id for d in decisions}) == len(batch)
    assert len({d.server_request_id for d in decisions}) == 1  # one stream


@pytest.mark.integration
def test_the_blocking_client(codes, prepared_dir) -> None:
    data_dir = prepared_dir(NOW)
    code = codes(SHOW, NOW)()

    async def scenario() -> tuple[Decision, list[Decision], int]:
        async with serving(data_dir) as (_, port):

            def blocking() -> tuple[Decision, list[Decision], int]:
                with GatewayClient(f"127.0.0.1:{port}", insecure=True) as client:
                    one = client.recognise(code)
                    many = client.recognise_many([code, code])
                    return one, many, len(client.gateway_keys().keys)

            return await asyncio.to_thread(blocking)

    one, many, keys = run(scenario())
    assert one.recognised and [d.reason for d in many] == ["RECOGNISED", "RECOGNISED"]
    assert keys >= 2


@pytest.mark.integration
def test_the_trust_list_is_served_signed(prepared_dir) -> None:
    data_dir = prepared_dir(NOW)

    async def scenario() -> Any:
        async with serving(data_dir) as (_, port):
            async with AsyncGatewayClient(f"127.0.0.1:{port}", insecure=True) as client:
                return await client.trust_list()

    signed = run(scenario())
    assert signed.version >= 1 and signed.since_version == 0
    assert signed.envelope.startswith(b"{") and signed.expires > signed.issued_at


# --- mutual TLS ---------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TlsFiles]:
    ca = DevCA.create(tmp_path / "pki", NOW)
    files = {"server": TlsFiles(*ca.issue("server", server=True, now=NOW), ca.cert_path)}
    for name, uri in [
        ("verifier", "trustgw://verifier/c1"),
        ("partner", f"trustgw://partner/{SHOW}"),
    ]:
        files[name] = TlsFiles(*ca.issue(name, uri=uri, now=NOW), ca.cert_path)
    return files


@pytest.mark.integration
@pytest.mark.doc('api.md "Who may call what"')
def test_mutual_tls_roles(codes, prepared_dir, pki) -> None:
    data_dir = prepared_dir(NOW)
    code = codes(SHOW, NOW)()

    async def scenario() -> tuple[Decision, GatewayRpcError, int]:
        async with serving(data_dir, pki["server"]) as (_, port):
            target = f"localhost:{port}"
            async with AsyncGatewayClient(target, pki["verifier"]) as verifier:
                decision = await verifier.recognise(code)
            async with AsyncGatewayClient(target, pki["partner"]) as partner:
                with pytest.raises(GatewayRpcError) as info:
                    await partner.recognise(code)
                keys = len((await partner.gateway_keys()).keys)
            return decision, info.value, keys

    decision, denied, keys = run(scenario())
    assert decision.recognised
    assert (denied.status, denied.reason) == ("PERMISSION_DENIED", "PERMISSION_DENIED")
    assert keys >= 2


def test_plaintext_must_be_asked_for() -> None:
    with pytest.raises(ValueError, match="insecure=True"):
        AsyncGatewayClient("127.0.0.1:1")


# --- retries ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class _SignallingPolicy(RetryPolicy):
    """A retry policy that says when the client first backs off (an attempt failed)."""

    retried: asyncio.Event = field(default_factory=asyncio.Event, compare=False)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        self.retried.set()
        return super().backoff(attempt, rng)


@pytest.mark.integration
def test_unavailable_is_retried_until_the_gateway_comes_up(codes, prepared_dir) -> None:
    from gateway.grpc.server import build_server
    from gateway.runtime.config import GatewayConfig
    from gateway.runtime.gateway import Gateway

    data_dir = prepared_dir(NOW)
    code = codes(SHOW, NOW)()
    port = _free_port()
    # The deadline (30 s) bounds the attempts, not their number.
    policy = _SignallingPolicy(attempts=10_000, initial_backoff=0.05, max_backoff=0.2)

    async def scenario() -> Decision:
        async def start_late() -> tuple[Any, Any]:
            await policy.retried.wait()  # the first attempt found nothing listening
            gateway = await Gateway.open(GatewayConfig(data_dir=data_dir))
            return gateway, await build_server(gateway, f"127.0.0.1:{port}")

        async with AsyncGatewayClient(f"127.0.0.1:{port}", insecure=True, retry=policy) as client:
            starting = asyncio.create_task(start_late())
            decision = await client.recognise(code, timeout=30)
            gateway, running = await starting
            await running.stop(0.5)
            await gateway.close()
            return decision

    assert run(scenario()).recognised


@pytest.mark.integration
@pytest.mark.doc('api.md "Deadlines"')
def test_the_deadline_bounds_all_attempts() -> None:
    port = _free_port()  # nothing listens

    async def scenario() -> GatewayRpcError:
        policy = RetryPolicy(attempts=1000, initial_backoff=0.01, max_backoff=0.02)
        async with AsyncGatewayClient(f"127.0.0.1:{port}", insecure=True, retry=policy) as c:
            with pytest.raises(GatewayRpcError) as info:
                await c.recognise("x", timeout=0.5)
            return info.value

    error = run(scenario())
    assert error.status in ("UNAVAILABLE", "DEADLINE_EXCEEDED")


class _FakeCall:
    def __init__(self, outcome: Any) -> None:
        self._outcome = outcome

    def __await__(self) -> Any:
        async def result() -> Any:
            if isinstance(self._outcome, Exception):
                raise self._outcome
            return self._outcome

        return result().__await__()

    async def trailing_metadata(self) -> Any:
        return grpc.aio.Metadata(("x-request-id", "srv-1"))


def _error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x")


@pytest.mark.integration
@pytest.mark.parametrize(
    ("status", "idempotent", "attempts"),
    [
        pytest.param(grpc.StatusCode.UNAVAILABLE, True, 4, id="unavailable-retried"),
        pytest.param(grpc.StatusCode.UNAVAILABLE, False, 1, id="not-idempotent-not-retried"),
        pytest.param(grpc.StatusCode.DEADLINE_EXCEEDED, True, 1, id="deadline-not-retried"),
        pytest.param(grpc.StatusCode.INVALID_ARGUMENT, True, 1, id="invalid-not-retried"),
        pytest.param(grpc.StatusCode.INTERNAL, True, 1, id="internal-not-retried"),
        pytest.param(grpc.StatusCode.CANCELLED, True, 1, id="cancelled-not-retried"),
    ],
)
def test_which_failures_are_retried(status, idempotent, attempts) -> None:
    calls: list[float | None] = []

    def method(request: Any, timeout: float | None = None, metadata: Any = None) -> _FakeCall:
        calls.append(timeout)
        return _FakeCall(_error(status))

    async def scenario() -> None:
        client = AsyncGatewayClient("127.0.0.1:1", insecure=True, retry=FAST, rng=random.Random(1))
        try:
            with pytest.raises(GatewayRpcError) as info:
                await client._call(
                    method, KEYS, KEYS_REQUEST, timeout=5, request_id="r", idempotent=idempotent
                )
            assert info.value.status == status.name
        finally:
            await client.close()

    run(scenario())
    assert len(calls) == attempts
    assert all(t is not None and 0 < t <= 5 for t in calls)  # each attempt has a deadline


@pytest.mark.integration
def test_a_retry_that_succeeds_returns_the_servers_request_id() -> None:
    outcomes: list[Any] = [_error(grpc.StatusCode.UNAVAILABLE)] * 2 + ["answer"]

    def method(request: Any, timeout: float | None = None, metadata: Any = None) -> _FakeCall:
        assert metadata == (("x-request-id", "mine"),)  # the same id on every attempt
        return _FakeCall(outcomes.pop(0))

    async def scenario() -> tuple[Any, str]:
        async with AsyncGatewayClient("127.0.0.1:1", insecure=True, retry=FAST) as client:
            return await client._call(method, KEYS, KEYS_REQUEST, timeout=5, request_id="mine")

    assert run(scenario()) == ("answer", "srv-1")


def test_backoff_is_exponential_with_full_jitter() -> None:
    policy = RetryPolicy(attempts=6, initial_backoff=0.1, max_backoff=0.5, multiplier=2)
    rng = random.Random(3)
    for attempt, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (5, 0.5)]:
        pauses = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(0 <= p <= cap for p in pauses)
        assert max(pauses) > cap * 0.8  # spread over the whole range
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


class _FakeStream:
    """A RecogniseStream call that answers the first ``answer`` requests, then fails."""

    def __init__(self, requests: Any, answer: int, error: grpc.aio.AioRpcError | None) -> None:
        self._requests = list(requests)
        self._answer = answer
        self._error = error

    async def _responses(self) -> Any:
        from gateway.api.v1 import recognition_pb2 as pb

        for request in self._requests[: self._answer]:
            yield pb.RecogniseResponse(
                request_id=request.request_id, recognised=True, reason=request.code
            )
        if self._error is not None:
            raise self._error

    def __aiter__(self) -> Any:
        return self._responses()

    async def trailing_metadata(self) -> Any:
        return grpc.aio.Metadata(("x-request-id", "stream-srv"))


@pytest.mark.integration
def test_recognise_many_resends_only_the_unanswered_codes_after_unavailable() -> None:
    sent: list[list[str]] = []
    plan = [(2, _error(grpc.StatusCode.UNAVAILABLE)), (10, None)]

    class Stub:
        def RecogniseStream(self, requests: Any, timeout: float, metadata: Any) -> _FakeStream:
            requests = list(requests)
            sent.append([r.code for r in requests])
            answer, error = plan.pop(0)
            return _FakeStream(requests, answer, error)

    async def scenario() -> list[Decision]:
        async with AsyncGatewayClient("127.0.0.1:1", insecure=True, retry=FAST) as client:
            client._recognition = Stub()  # type: ignore[assignment]
            return await client.recognise_many([f"C{i}" for i in range(5)], timeout=5)

    decisions = run(scenario())
    assert sent == [["C0", "C1", "C2", "C3", "C4"], ["C2", "C3", "C4"]]
    assert [d.reason for d in decisions] == ["C0", "C1", "C2", "C3", "C4"]  # in order
    assert decisions[-1].server_request_id == "stream-srv"


@pytest.mark.integration
def test_recognise_many_does_not_retry_other_failures() -> None:
    calls = []

    class Stub:
        def RecogniseStream(self, requests: Any, timeout: float, metadata: Any) -> _FakeStream:
            calls.append(1)
            return _FakeStream(requests, 1, _error(grpc.StatusCode.PERMISSION_DENIED))

    async def scenario() -> None:
        async with AsyncGatewayClient("127.0.0.1:1", insecure=True, retry=FAST) as client:
            client._recognition = Stub()  # type: ignore[assignment]
            with pytest.raises(GatewayRpcError) as info:
                await client.recognise_many(["a", "b"])
            assert info.value.status == "PERMISSION_DENIED"

    run(scenario())
    assert calls == [1]


# --- sizes checked before sending: docs/api.md "Limits" ---------------------------------------


def _bad_requests(gateway: Any, method: str) -> float:
    value = gateway.metrics.registry.get_sample_value(
        "trustgw_bad_requests_total", {"method": method, "reason": "REQUEST_TOO_LARGE"}
    )
    return value or 0.0


@pytest.mark.integration
@pytest.mark.doc('api.md "Limits"', 'api.md "RPC errors"')
def test_a_request_over_its_methods_limit_is_refused_before_it_is_sent(codes, prepared_dir) -> None:
    """The SDK refuses what the gateway would refuse, with the same status, reason, message and
    ``limit``, without sending it (the gateway counts no bad request); in a batch, in its place,
    and the other codes are answered."""
    data_dir = prepared_dir(NOW)
    code = codes(SHOW, NOW)()
    huge = "A" * (40 * 1024)

    async def scenario() -> tuple[GatewayRpcError, Any, list[Decision], tuple[float, float]]:
        async with serving(data_dir) as (gateway, port):
            async with AsyncGatewayClient(f"127.0.0.1:{port}", insecure=True) as client:
                with pytest.raises(GatewayRpcError) as info:
                    await client.recognise(huge, request_id="too-big")
                batch = await client.recognise_many([code, huge, code], timeout=10)
                counted = (
                    _bad_requests(gateway, "Recognise"),
                    _bad_requests(gateway, "RecogniseStream"),
                )
                # What the gateway itself answers to the same bytes, sent without the SDK.
                raw = pb.RecogniseRequest(request_id="too-big", code=huge).SerializeToString()
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    try:
                        await channel.unary_unary("/gateway.api.v1.RecognitionService/Recognise")(
                            raw, timeout=10
                        )
                    except grpc.aio.AioRpcError as exc:
                        server = error_from_grpc(exc)
                return info.value, server, batch, counted

    local, server, batch, counted = run(scenario())
    size = pb.RecogniseRequest(request_id="too-big", code=huge).ByteSize()
    assert counted == (0.0, 0.0)  # nothing over the limit reached the gateway
    assert (
        (local.status, local.reason, local.message, local.metadata)
        == (
            server.status,
            server.reason,
            server.message,
            server.metadata,
        )
        == (
            "RESOURCE_EXHAUSTED",
            "REQUEST_TOO_LARGE",
            f"the request is {size} bytes; this method accepts at most 32768",
            {"limit": "32768"},
        )
    )
    assert local.request_id == "" and not local.retryable  # never sent
    assert [d.reason for d in batch] == ["RECOGNISED", "REQUEST_TOO_LARGE", "RECOGNISED"]
    assert batch[1].server_request_id == "" and not batch[1].recognised
    assert batch[1].message.endswith("bytes; this method accepts at most 32768")
    assert len({d.request_id for d in batch}) == 3


@pytest.mark.integration
@pytest.mark.parametrize("path", sorted(REQUEST_LIMITS))
def test_every_method_is_checked_against_its_own_limit(path: str) -> None:
    """One byte over the method's limit is refused (and nothing is called); at it, sent."""
    from gateway.api.v1 import registry_pb2 as rpb
    from gateway.sdk.client import check_size

    limit = REQUEST_LIMITS[path]
    at = rpb.SubmissionRequest(submission=b"x" * (limit - 4 - (limit >= 128 * 1024)))
    while at.ByteSize() < limit:
        at.submission += b"x"
    assert at.ByteSize() == limit
    check_size(path, at)
    over = rpb.SubmissionRequest(submission=at.submission + b"x")
    with pytest.raises(GatewayRpcError) as info:
        check_size(path, over)
    assert (info.value.reason, info.value.metadata) == ("REQUEST_TOO_LARGE", {"limit": str(limit)})

    calls: list[Any] = []

    async def scenario() -> None:
        async with AsyncGatewayClient("127.0.0.1:1", insecure=True, retry=FAST) as client:
            with pytest.raises(GatewayRpcError):
                await client._call(calls.append, path, over, timeout=5, request_id="r")

    run(scenario())
    assert calls == []


@pytest.mark.integration
def test_the_sdk_refuses_an_oversized_submission_before_sending() -> None:
    """A submission over 2 MiB + 64 bytes: REQUEST_TOO_LARGE, not gRPC's own RESOURCE_EXHAUSTED
    without a reason (the gateway's server-wide limit), and no connection is needed."""

    async def scenario() -> GatewayRpcError:
        async with AsyncGatewayClient("127.0.0.1:1", insecure=True, retry=FAST) as client:
            with pytest.raises(GatewayRpcError) as info:
                await client.publish_key_set(b"{" + b" " * (2 * 1024 * 1024 + 64), timeout=5)
            return info.value

    error = run(scenario())
    assert (error.status, error.reason) == ("RESOURCE_EXHAUSTED", "REQUEST_TOO_LARGE")
    assert error.metadata == {"limit": str(2 * 1024 * 1024 + 64)}
