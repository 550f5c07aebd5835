"""The online client against a real simulated partner endpoint (HTTPS, mutual TLS): the fault
matrix, retries, the in-flight limit, the circuit breaker and the cache (docs/partners.md §9.6,
§9.7). No fixed sleeps; "no call past its deadline" is asserted by running each lookup inside
the checkpoint's own budget, never by measuring it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from support.aio import run
from support.clock import T0
from support.online import Pki, make_pki, online_settings, partner_endpoint, sim_for, sim_keys
from support.wait import eventually

from adapters.online import OnlineToken
from gateway.online.breaker import BreakerState, CircuitBreaker
from gateway.online.client import AiohttpTransport, Answer, PartnerClient, client_context
from gateway.online.config import PartnerSettings
from gateway.partner_sim import Fault, PartnerSim
from keys.errors import ForeignDataError
from keys.model import Mode, Region
from keys.registry import RegistrySnapshot
from keys.statusdoc import REVOKED, VALID

pytestmark = [pytest.mark.integration, pytest.mark.doc("partners.md §9.6")]

REGION = "110000"
CODE = "5f3a9c0e12d4b678"
TOKEN = OnlineToken(REGION, "bjhc", CODE)
BUDGET = 2.0  # the checkpoint's own remaining time in these scenarios: a deadline of 0.95 s


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("online-pki"))


class Clock:
    """The client's monotonic clock, moved only by the test (the breaker's cool-down); the
    calls' deadlines still hold in real time (asyncio's timeout)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return self.offset


def _client(
    sim: PartnerSim,
    pki: Pki,
    endpoint: str,
    *,
    client_cert: bool = True,
    clock: Clock | None = None,
    revoked: bool = False,
    **limits: object,
) -> PartnerClient:
    settings = PartnerSettings(REGION, endpoint, ca=pki.ca, **limits)  # type: ignore[arg-type]
    online = online_settings(pki, settings, client_cert=client_cert)
    keys = sim_keys(sim, T0, other_revoked_at=T0 - timedelta(hours=1) if revoked else None)
    snapshot = RegistrySnapshot.build(
        1, [Region(REGION, "Beijing", Mode.SHOW, timedelta(days=1))], keys
    )
    return PartnerClient(
        settings,
        AiohttpTransport(client_context(online, settings), settings.concurrency),
        lambda: snapshot,
        **({"clock": clock} if clock else {}),  # type: ignore[arg-type]
    )


async def _lookup(client: PartnerClient, budget: float | None = BUDGET) -> Answer | str:
    """The answer, or the refusal's reason; inside the checkpoint's budget, so a call that ran
    past its deadline fails the test with TimeoutError."""
    try:
        async with asyncio.timeout(budget):
            return await client.status(TOKEN, T0, budget)
    except ForeignDataError as exc:
        return exc.reason


def _sim(fault: Fault = Fault.NONE, **kw: object) -> PartnerSim:
    sim = sim_for(REGION, T0)
    sim.add(CODE)
    sim.fault = fault
    for name, value in kw.items():
        setattr(sim, name, value)
    return sim


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        pytest.param(Fault.NONE, None, id="answers"),
        pytest.param(Fault.HTTP_500, "PARTNER_UNAVAILABLE", id="http-500"),
        pytest.param(Fault.HTTP_503, "PARTNER_UNAVAILABLE", id="http-503"),
        pytest.param(Fault.HTTP_404, "PARTNER_UNAVAILABLE", id="http-404"),
        pytest.param(Fault.RESET, "PARTNER_UNAVAILABLE", id="connection-reset"),
        pytest.param(Fault.HANG, "PARTNER_TIMEOUT", id="accepts-never-answers"),
        pytest.param(Fault.OVERSIZED, "PARTNER_ANSWER_INVALID", id="oversized-answer"),
        pytest.param(Fault.OVERSIZED_STREAM, "PARTNER_ANSWER_INVALID", id="oversized-while-read"),
        pytest.param(Fault.MALFORMED, "PARTNER_ANSWER_INVALID", id="malformed-json"),
        pytest.param(Fault.BAD_SIGNATURE, "SIGNATURE_INVALID", id="badly-signed"),
        pytest.param(Fault.WRONG_NONCE, "PARTNER_ANSWER_INVALID", id="wrong-nonce"),
        pytest.param(Fault.STALE, "PARTNER_ANSWER_INVALID", id="stale-checked-at"),
    ],
)
def test_every_fault_of_the_partner_gives_its_stable_reason_within_the_deadline(
    pki: Pki, fault: Fault, reason: str | None
) -> None:
    async def scenario() -> None:
        sim = _sim(fault)
        async with partner_endpoint(sim, pki) as server:
            client = _client(sim, pki, server.endpoint)
            try:
                result = await _lookup(client)
            finally:
                await client.close()
        if reason is None:
            assert isinstance(result, Answer)
            assert (result.document.status, result.document.colour) == (VALID, "green")
            assert result.key.kid == sim.kid
        else:
            assert result == reason

    run(scenario())


def test_added_latency_beyond_the_deadline_is_a_timeout_and_within_it_an_answer(pki: Pki) -> None:
    async def scenario() -> None:
        sim = _sim(latency=5.0)
        async with partner_endpoint(sim, pki) as server:
            client = _client(sim, pki, server.endpoint)
            assert await _lookup(client) == "PARTNER_TIMEOUT"
            sim.latency = 0.02
            assert isinstance(await _lookup(client, budget=None), Answer)
            await client.close()

    run(scenario())


def test_a_key_the_registry_revoked_before_checked_at_is_refused(pki: Pki) -> None:
    async def scenario() -> None:
        sim = _sim(Fault.OTHER_KEY)
        async with partner_endpoint(sim, pki) as server:
            client = _client(sim, pki, server.endpoint, revoked=True)
            assert await _lookup(client) == "KEY_REVOKED"
            await client.close()
            client = _client(sim, pki, server.endpoint)  # the same key, not revoked: verifies
            assert isinstance(await _lookup(client), Answer)
            await client.close()

    run(scenario())


@pytest.mark.doc("partners.md §9.2")
def test_mutual_tls_a_gateway_without_its_client_certificate_is_refused(pki: Pki) -> None:
    async def scenario() -> None:
        sim = _sim()
        async with partner_endpoint(sim, pki) as server:
            client = _client(sim, pki, server.endpoint, client_cert=False, retry=False)
            assert await _lookup(client) == "PARTNER_UNAVAILABLE"
            await client.close()
        assert sim.requests == 0  # never reached the HTTP layer

    run(scenario())


def test_a_partner_certificate_from_another_ca_is_refused(pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")

    async def scenario() -> None:
        sim = _sim()
        async with partner_endpoint(sim, other, mtls=False) as server:
            client = _client(sim, pki, server.endpoint, retry=False)
            assert await _lookup(client) == "PARTNER_UNAVAILABLE"
            await client.close()
        assert sim.requests == 0

    run(scenario())


@pytest.mark.parametrize(
    ("retry", "fault", "requests", "reason"),
    [
        pytest.param(True, Fault.RESET, 2, None, id="reset-retried-once"),
        pytest.param(False, Fault.RESET, 1, "PARTNER_UNAVAILABLE", id="retry-off"),
        pytest.param(True, Fault.HTTP_503, 1, "PARTNER_UNAVAILABLE", id="http-error-not-retried"),
        pytest.param(True, Fault.HANG, 1, "PARTNER_TIMEOUT", id="timeout-not-retried"),
    ],
)
def test_at_most_one_retry_and_only_after_a_connection_failure(
    pki: Pki, retry: bool, fault: Fault, requests: int, reason: str | None
) -> None:
    async def scenario() -> None:
        sim = _sim(fault, fault_count=1)  # only the first request fails
        async with partner_endpoint(sim, pki) as server:
            client = _client(sim, pki, server.endpoint, retry=retry)
            result = await _lookup(client)
            await client.close()
        assert (result if isinstance(result, str) else None) == reason
        assert sim.requests == requests

    run(scenario())


def test_calls_beyond_the_concurrency_are_refused_at_once_as_busy(pki: Pki) -> None:
    async def scenario() -> None:
        sim = _sim(Fault.HANG)
        async with partner_endpoint(sim, pki) as server:
            client = _client(sim, pki, server.endpoint, concurrency=1)
            first = asyncio.create_task(_lookup(client))
            await eventually(lambda: client.in_flight == 1, what="the first call in flight")
            assert await _lookup(client) == "PARTNER_BUSY"
            assert sim.requests <= 1
            assert await first == "PARTNER_TIMEOUT"
            assert client.in_flight == 0
            await client.close()

    run(scenario())


@pytest.mark.parametrize(
    "fault", [pytest.param(Fault.HTTP_503, id="http-503"), pytest.param(Fault.HANG, id="hang")]
)
def test_the_breaker_opens_after_consecutive_failures_probes_after_the_cooldown_and_closes(
    pki: Pki, fault: Fault
) -> None:
    async def scenario() -> None:
        clock = Clock()
        sim = _sim(fault)
        async with partner_endpoint(sim, pki) as server:
            client = _client(
                sim,
                pki,
                server.endpoint,
                clock=clock,
                retry=False,
                breaker_failures=2,
                breaker_cooldown_s=30.0,
            )
            expected = "PARTNER_TIMEOUT" if fault is Fault.HANG else "PARTNER_UNAVAILABLE"
            assert [await _lookup(client), await _lookup(client)] == [expected, expected]
            assert client.breaker.state(clock()) is BreakerState.OPEN
            assert await _lookup(client) == "PARTNER_UNAVAILABLE"  # circuit open: no call
            assert sim.requests == 2
            clock.offset += 31  # the cool-down passes
            assert client.breaker.state(clock()) is BreakerState.HALF_OPEN
            assert await _lookup(client) == expected  # the probe fails: open again
            assert (sim.requests, client.breaker.state(clock())) == (3, BreakerState.OPEN)
            clock.offset += 31
            sim.fault = Fault.NONE
            assert isinstance(await _lookup(client), Answer)  # the probe succeeds: closed
            assert client.breaker.state(clock()) is BreakerState.CLOSED
            await client.close()

    run(scenario())


@pytest.mark.doc("partners.md §9.7")
def test_answers_are_cached_for_max_age_revoked_ones_too_and_the_cache_is_bounded(pki: Pki) -> None:
    async def scenario() -> None:
        sim = _sim(max_age=60)
        sim.add("revokedcode01", status=REVOKED)
        sim.add("thirdcode0001")
        async with partner_endpoint(sim, pki) as server:
            client = _client(sim, pki, server.endpoint, cache_entries=2)
            for _ in range(3):
                assert isinstance(await client.status(TOKEN, T0, None), Answer)
            assert sim.requests == 1
            revoked = OnlineToken(REGION, "bjhc", "revokedcode01")
            for _ in range(2):
                answer = await client.status(revoked, T0, None)
                assert answer.document.status == REVOKED
            assert sim.requests == 2
            # After max_age the answer is asked again.
            sim.clock = lambda: T0 + timedelta(seconds=61)
            await client.status(TOKEN, T0 + timedelta(seconds=61), None)
            assert sim.requests == 3
            sim.clock = lambda: T0
            # Two entries at most: the least recently used goes first.
            await client.status(OnlineToken(REGION, "bjhc", "thirdcode0001"), T0, None)
            assert client.cached(revoked, T0) is None
            sim.max_age = 0
            await client.status(OnlineToken(REGION, "bjhc", "thirdcode0002"), T0, None)
            await client.status(OnlineToken(REGION, "bjhc", "thirdcode0002"), T0, None)
            assert sim.requests == 6  # max_age 0: never cached
            await client.close()

    run(scenario())


def test_the_deadline_is_cut_to_a_share_of_the_checkpoints_remaining_time(pki: Pki) -> None:
    client = _client(_sim(), pki, "https://127.0.0.1:9", deadline_ms=800)
    assert client.deadline(None) == 0.8
    assert client.deadline(10.0) == 0.8
    assert client.deadline(1.0) == pytest.approx(0.45)


@pytest.mark.parametrize(
    ("events", "state"),
    [
        pytest.param([("fail", 0)], BreakerState.CLOSED, id="one-failure-stays-closed"),
        pytest.param([("fail", 0), ("fail", 1)], BreakerState.OPEN, id="n-failures-open"),
        pytest.param(
            [("fail", 0), ("ok", 1), ("fail", 2)],
            BreakerState.CLOSED,
            id="success-resets-the-count",
        ),
        pytest.param(
            [("fail", 0), ("fail", 1), ("at", 10.9)], BreakerState.OPEN, id="still-cooling"
        ),
        pytest.param(
            [("fail", 0), ("fail", 1), ("at", 11)], BreakerState.HALF_OPEN, id="half-open"
        ),
        pytest.param(
            [("fail", 0), ("fail", 1), ("at", 11), ("fail", 11)],
            BreakerState.OPEN,
            id="failed-probe-reopens",
        ),
        pytest.param(
            [("fail", 0), ("fail", 1), ("at", 11), ("ok", 11)],
            BreakerState.CLOSED,
            id="probe-success-closes",
        ),
    ],
)
def test_breaker_transitions_with_an_injected_clock(
    events: list[tuple[str, float]], state: BreakerState
) -> None:
    breaker = CircuitBreaker(failures=2, cooldown=10)
    now = 0.0
    for event, at in events:
        now = at
        if event == "fail":
            breaker.failed(at)
        elif event == "ok":
            breaker.succeeded()
        else:
            breaker.allow(at)
    assert breaker.state(now) is state


def test_a_half_open_breaker_lets_one_probe_through_at_a_time() -> None:
    breaker = CircuitBreaker(failures=1, cooldown=5)
    breaker.failed(0)
    assert not breaker.allow(4.9)
    assert breaker.allow(5)
    assert not breaker.allow(5.1)  # the probe is in flight
