"""The engine's online path without sockets: the partner's endpoint is the simulator's document
builder behind an in-process transport, the verification and the decision are the real ones
(docs/partners.md §9.1, §9.5). Time is passed in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from support.aio import run
from support.clock import T0
from support.keyring import open_stored_keys
from support.online import sim_for, sim_keys
from support.wait import eventually

from adapters.base import Colour
from adapters.online import OnlineToken, StatusQuestion, answer_body
from gateway.engine import Conversions, Recogniser, Recognition
from gateway.online.client import OnlineStatus, PartnerClient
from gateway.online.config import PartnerSettings
from gateway.partner_sim import Fault, PartnerSim
from keys.errors import PartnerBusyError
from keys.model import Mode, Region
from keys.pseudonym import Pseudonymiser
from keys.records import CodeRevocation
from keys.registry import RegistrySnapshot
from keys.revocations import RevocationIndex
from keys.store import SQLiteStore

pytestmark = pytest.mark.doc("partners.md §9.1", "partners.md §9.5")


class InProcess:
    """The transport of a :class:`PartnerClient`, answering from a simulated region directly."""

    def __init__(self, sim: PartnerSim) -> None:
        self.sim = sim
        self.bodies: list[bytes] = []

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        self.bodies.append(body)
        self.sim.requests += 1
        if self.sim.fault is Fault.HTTP_503:
            return 503, b""
        return 200, answer_body(self.sim.document(StatusQuestion.parse(body), self.sim.fault))

    async def close(self) -> None:
        return None


async def _decide(
    data_dir: Path, sim: PartnerSim, codes: list[str], *, revoked: tuple[str, ...] = ()
) -> tuple[list[Recognition], InProcess]:
    keys = await open_stored_keys(data_dir)
    pseudonymiser = Pseudonymiser(keys.pseudonym_secret())
    region = Region("110000", "Beijing", Mode.SHOW, timedelta(days=1))
    revocations = RevocationIndex(
        [
            CodeRevocation("110000", pseudonymiser.code_key("110000", c), T0 - timedelta(days=1))
            for c in revoked
        ]
    )
    snapshot = RegistrySnapshot.build(1, [region], sim_keys(sim, T0), revocations)
    transport = InProcess(sim)
    client = PartnerClient(
        PartnerSettings("110000", "https://bj.example"), transport, lambda: snapshot
    )
    store = await SQLiteStore.open(data_dir / "trustgw.db")
    conversions = Conversions(store)
    conversions.start()
    recogniser = Recogniser(
        lambda: snapshot, keys, pseudonymiser, conversions, online=OnlineStatus({"110000": client})
    )
    try:
        return [await recogniser.recognise(code, T0) for code in codes], transport
    finally:
        await conversions.stop()
        await store.close()


def test_an_online_code_is_attested_with_the_documents_colour_validity_and_holder(
    prepared_dir: Callable[[datetime], Path],
) -> None:
    sim = sim_for("110000", T0)
    code = "BJ1:" + sim.add("bjgreen000001", holder_ref="bj-h-42")
    (decision,), transport = run(_decide(prepared_dir(T0), sim, [code]))
    assert (decision.recognised, decision.reason, decision.mode) == (True, "RECOGNISED", Mode.SHOW)
    assert decision.colour is Colour.GREEN and decision.kid == sim.kid
    assert decision.valid_until == T0 + timedelta(days=1)  # never past valid_until
    assert decision.holder.startswith("h1-") and "bj-h-42" not in decision.holder  # keyed only
    assert b'"code_id":"bjgreen000001"' in transport.bodies[0]


def test_a_code_the_gateway_revoked_by_code_id_is_refused_however_the_partner_answers(
    prepared_dir: Callable[[datetime], Path],
) -> None:
    sim = sim_for("110000", T0)
    revoked = "BJ1:" + sim.add("bjrevokedhere")
    kept = "BJ1:" + sim.add("bjnotrevoked1")
    decisions, _ = run(_decide(prepared_dir(T0), sim, [revoked, kept], revoked=("bjrevokedhere",)))
    assert [d.reason for d in decisions] == ["CODE_REVOKED", "RECOGNISED"]
    assert decisions[0].colour is Colour.GREEN  # refused after verification: it says its colour


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"fault": Fault.HTTP_503}, "PARTNER_UNAVAILABLE", id="unavailable"),
        pytest.param({"fault": Fault.WRONG_NONCE}, "PARTNER_ANSWER_INVALID", id="wrong-nonce"),
        pytest.param({"fault": Fault.BAD_SIGNATURE}, "SIGNATURE_INVALID", id="bad-signature"),
        pytest.param({"max_age": 0}, "RECOGNISED", id="valid"),
    ],
)
def test_a_lookups_failure_is_a_refusal_with_its_reason_never_an_exception(
    prepared_dir: Callable[[datetime], Path], changes: dict[str, object], reason: str
) -> None:
    sim = sim_for("110000", T0)
    for name, value in changes.items():
        setattr(sim, name, value)
    code = "BJ1:" + sim.add("bjlookup00001")
    (decision,), _ = run(_decide(prepared_dir(T0), sim, [code]))
    assert (decision.reason, decision.region) == (reason, "110000")
    assert decision.mode is Mode.SHOW


class Blocking(InProcess):
    """Holds every call until :attr:`release` is set."""

    def __init__(self, sim: PartnerSim) -> None:
        super().__init__(sim)
        self.release = asyncio.Event()

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        await self.release.wait()
        return await super().post(url, body)


@pytest.mark.doc("partners.md §9.7")
def test_the_online_cache_is_emptied_when_the_registry_changes() -> None:
    sim = sim_for("110000", T0)
    token = OnlineToken("110000", "bjhc", "bjcached00001")
    sim.add(token.code_id)
    region = Region("110000", "Beijing", Mode.SHOW, timedelta(days=1))
    snapshots = [RegistrySnapshot.build(1, [region], sim_keys(sim, T0))]
    client = PartnerClient(
        PartnerSettings("110000", "https://bj.example"), InProcess(sim), lambda: snapshots[-1]
    )

    async def scenario() -> None:
        await client.status(token, T0, None)
        await client.status(token, T0, None)
        assert sim.requests == 1
        snapshots.append(RegistrySnapshot.build(2, [region], sim_keys(sim, T0)))
        await client.status(token, T0, None)
        assert sim.requests == 2

    run(scenario())


@pytest.mark.doc("partners.md §9.6")
def test_a_busy_refusal_does_not_take_the_half_open_breakers_probe() -> None:
    sim = sim_for("110000", T0)
    region = Region("110000", "Beijing", Mode.SHOW, timedelta(days=1))
    snapshot = RegistrySnapshot.build(1, [region], sim_keys(sim, T0))
    now = [0.0]
    transport = Blocking(sim)
    settings = PartnerSettings(
        "110000", "https://bj.example", concurrency=2, breaker_failures=1, breaker_cooldown_s=5
    )
    client = PartnerClient(settings, transport, lambda: snapshot, clock=lambda: now[0])

    async def scenario() -> None:
        tokens = [OnlineToken("110000", "bjhc", f"bjheld{n:08d}") for n in range(3)]
        held = [asyncio.ensure_future(client.status(t, T0, None)) for t in tokens[:2]]
        await eventually(lambda: client.in_flight == 2, what="two calls in flight")
        client.breaker.failed(now[0])  # opened meanwhile (by another failure)
        now[0] = 6.0  # past the cool-down: half-open
        with pytest.raises(PartnerBusyError):
            await client.status(tokens[2], T0, None)
        assert client.breaker.allow(now[0])  # the probe is still there to take
        transport.release.set()
        await asyncio.gather(*held, return_exceptions=True)

    run(scenario())
