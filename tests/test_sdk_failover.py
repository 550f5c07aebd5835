"""The SDK over several gateways (docs/api.md "Several gateways"): a list of addresses, round
robin over the replicas that report SERVING, idempotent calls retried on another replica, one
clear error where a setting cannot work.

The replicas here are two gateways in this process, each with its own data directory (so its own
`attest` key: the key id on a decision says which replica answered). The failover of real
`trustgw serve` processes on one PostgreSQL database is tests/test_failover.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2
from support.aio import run
from support.clock import REAL_NOW

from adapters.regions import REGION_SPECS
from gateway.limits import REQUEST_LIMITS
from gateway.pki import DevCA, TlsFiles
from gateway.sdk import AsyncGatewayClient, Decision, RetryPolicy
from gateway.sdk.targets import IDEMPOTENT_METHODS, resolve_target, service_config
from keys.model import Mode

NOW = REAL_NOW  # a serving gateway reads the real clock
SHOW = next(s.code for s in REGION_SPECS if s.mode is Mode.SHOW)
FAST = RetryPolicy(attempts=50, initial_backoff=0.01, max_backoff=0.05)
# Methods the service config does not retry, and why (every method must be in one list or the
# other, so a new method is a decision, not an accident).
NOT_RETRIED_BY_GRPC = {
    # The SDK resends a stream's unanswered requests itself (recognise_many); gRPC would resend
    # every request of the stream, answered or not.
    "/gateway.api.v1.RecognitionService/RecogniseStream",
    # A long-lived stream: the caller reconnects from its last version.
    "/gateway.api.v1.TrustListService/WatchTrustList",
}


# --- the target and the service config ------------------------------------------------------


@pytest.mark.doc('api.md "Several gateways"')
@pytest.mark.parametrize(
    ("addresses", "tls", "server_name", "uri"),
    [
        pytest.param("gw.example:50051", True, None, "gw.example:50051", id="one-dns-name"),
        pytest.param(["gw.example:50051"], True, None, "gw.example:50051", id="a-list-of-one"),
        pytest.param(
            ["10.0.0.1:50051", "10.0.0.2:50051"],
            False,
            None,
            "ipv4:10.0.0.1:50051,10.0.0.2:50051",
            id="plaintext-list",
        ),
        pytest.param(
            ("10.0.0.1:50051", "10.0.0.2:50052"),
            True,
            "gw.example",
            "ipv4:10.0.0.1:50051,10.0.0.2:50052",
            id="tls-list-with-server-name",
        ),
        pytest.param(
            ["[::1]:50051", "[fd00::2]:50051"],
            False,
            None,
            "ipv6:[::1]:50051,[fd00::2]:50051",
            id="ipv6-list",
        ),
    ],
)
def test_a_target_names_one_gateway_or_several(addresses, tls, server_name, uri) -> None:
    target = resolve_target(addresses, tls=tls, server_name=server_name)
    assert target.uri == uri
    assert target.server_name == server_name


@pytest.mark.doc('api.md "Several gateways"')
@pytest.mark.parametrize(
    ("addresses", "tls", "server_name", "message"),
    [
        pytest.param(
            ["10.0.0.1:50051", "10.0.0.2:50051"], True, None, "server_name=", id="tls-list-no-name"
        ),
        pytest.param(["a.example:1", "b.example:1"], False, None, "IP addresses", id="host-names"),
        pytest.param(["10.0.0.1:1", "[::1]:1"], False, None, "all IPv4 or", id="mixed-families"),
        pytest.param(["10.0.0.1:1", "10.0.0.1:1"], False, None, "twice", id="duplicate"),
        pytest.param(["10.0.0.1:1", "10.0.0.2"], False, None, "HOST:PORT", id="no-port"),
        pytest.param(["10.0.0.1:1", "10.0.0.2:99999"], False, None, "HOST:PORT", id="bad-port"),
        pytest.param([], False, None, "at least one", id="empty"),
        pytest.param("gw.example:1", True, " ", "server_name", id="blank-server-name"),
    ],
)
def test_a_target_that_cannot_work_is_refused_before_connecting(
    addresses, tls, server_name, message
) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_target(addresses, tls=tls, server_name=server_name)


def test_the_client_refuses_a_tls_list_without_server_name(tmp_path: Path) -> None:
    tls = TlsFiles(tmp_path / "c.pem", tmp_path / "c.key", tmp_path / "ca.pem")
    with pytest.raises(ValueError, match="server_name="):
        AsyncGatewayClient(["127.0.0.1:1", "127.0.0.1:2"], tls)


@pytest.mark.doc('api.md "Several gateways"')
def test_the_service_config_balances_checks_health_and_retries_only_idempotent_methods() -> None:
    config = json.loads(service_config())
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": ""}
    (method_config,) = config["methodConfig"]
    retried = {f"/{n['service']}/{n['method']}" for n in method_config["name"]}
    assert retried == {f"/{s}/{m}" for s, m in IDEMPOTENT_METHODS}
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert 2 <= method_config["retryPolicy"]["maxAttempts"] <= 5  # gRPC caps it at 5
    # Every method of the API is classified: retried by gRPC, or named with its reason.
    assert retried | NOT_RETRIED_BY_GRPC == set(REQUEST_LIMITS)
    assert not retried & NOT_RETRIED_BY_GRPC


# --- two replicas in this process -----------------------------------------------------------


@dataclass
class Replica:
    """A gateway on its own port and data directory; ``kids`` are its attest key ids."""

    name: str
    data_dir: Path
    tls: TlsFiles | None
    port: int = 0
    gateway: Any = None
    running: Any = None
    kids: frozenset[str] = frozenset()

    async def start(self) -> None:
        from gateway.grpc.server import build_server
        from gateway.runtime.config import GatewayConfig
        from gateway.runtime.gateway import Gateway

        self.gateway = await Gateway.open(GatewayConfig(data_dir=self.data_dir, tls=self.tls))
        self.running = await build_server(self.gateway, f"127.0.0.1:{self.port}", self.tls)
        self.port = self.running.port

    async def stop(self, grace: float = 0.5) -> None:
        await self.running.stop(grace)
        await self.gateway.close()

    async def set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.running.health.set("", status)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def replicas(tmp_path: Path, simulator) -> Callable[[dict[str, TlsFiles] | None], list[Replica]]:
    """``replicas(pki)`` -> two prepared replicas (not started), over mTLS when ``pki``."""
    from gateway.demo import prepare

    def make(pki: dict[str, TlsFiles] | None) -> list[Replica]:
        made = []
        for name in ("a", "b"):
            data_dir = tmp_path / name
            data_dir.mkdir()
            run(prepare(data_dir, simulator, NOW))
            made.append(Replica(name, data_dir, None if pki is None else pki["server"]))
        return made

    return make


@asynccontextmanager
async def started(replicas: list[Replica]) -> AsyncIterator[list[Replica]]:
    for replica in replicas:
        await replica.start()
    try:
        for replica in (r for r in replicas if r.tls is None):
            async with AsyncGatewayClient(replica.address, insecure=True) as one:
                keys = await one.gateway_keys()
            replica.kids = frozenset(k.kid for k in keys.keys if k.role == "attest")
        yield replicas
    finally:
        for replica in replicas:
            if replica.running is not None:
                await replica.stop()


def answered_by(decision: Decision, replicas: list[Replica]) -> str:
    assert decision.recognised and decision.attestation is not None, decision
    (name,) = [r.name for r in replicas if decision.attestation.kid in r.kids]
    return name


@pytest.mark.integration
@pytest.mark.doc('api.md "Several gateways"')
def test_calls_are_spread_over_every_replica(codes, replicas) -> None:
    code = codes(SHOW, NOW)()
    made = replicas(None)

    async def scenario() -> set[str]:
        async with started(made) as both:
            async with AsyncGatewayClient(
                [r.address for r in both], insecure=True, retry=FAST
            ) as client:
                seen: set[str] = set()
                # Round robin alternates once both connections are up: within a few calls.
                for _ in range(200):
                    seen.add(answered_by(await client.recognise(code), both))
                    if len(seen) == 2:
                        break
                return seen

    assert run(scenario()) == {"a", "b"}


@pytest.mark.integration
@pytest.mark.doc('api.md "Several gateways"', 'api.md "Health"')
def test_a_replica_that_reports_not_serving_gets_no_calls_until_it_serves_again(
    codes, replicas
) -> None:
    code = codes(SHOW, NOW)()

    async def only(client: AsyncGatewayClient, name: str, both: list[Replica]) -> None:
        """Call until ``name`` answered 20 calls in a row: with round robin over two healthy
        replicas that cannot happen, so it shows the client left the other one out."""
        in_a_row = 0
        for _ in range(500):
            by = answered_by(await client.recognise(code), both)
            in_a_row = in_a_row + 1 if by == name else 0
            if in_a_row == 20:
                return
        raise AssertionError(f"calls kept reaching the replica other than {name}")

    made = replicas(None)

    async def scenario() -> set[str]:
        async with started(made) as (a, b):
            async with AsyncGatewayClient([a.address, b.address], insecure=True) as client:
                await a.set_health(False)
                await only(client, "b", [a, b])
                await a.set_health(True)
                await b.set_health(False)
                await only(client, "a", [a, b])
                await b.set_health(True)
                seen: set[str] = set()
                for _ in range(200):
                    seen.add(answered_by(await client.recognise(code), [a, b]))
                    if len(seen) == 2:
                        break
                return seen

    assert run(scenario()) == {"a", "b"}


@pytest.mark.integration
@pytest.mark.doc('api.md "Several gateways"', 'api.md "Shutdown, as seen by a client"')
def test_a_replica_stopped_under_load_fails_no_call_and_serves_again_after_restart(
    codes, replicas
) -> None:
    issue = codes(SHOW, NOW)
    pool = [issue() for _ in range(8)]
    made = replicas(None)

    async def scenario() -> tuple[int, int, set[str], set[str]]:
        async with started(made) as (a, b):
            async with AsyncGatewayClient(
                [a.address, b.address], insecure=True, retry=FAST, timeout=10
            ) as client:
                failures: list[BaseException] = []
                done = 0
                stopping = asyncio.Event()
                progressed = asyncio.Event()  # set on every answered call
                during: set[str] = set()

                async def load() -> None:
                    nonlocal done
                    i = 0
                    while not stopping.is_set():
                        i += 1
                        try:
                            decision = await client.recognise(pool[i % len(pool)])
                            during.add(answered_by(decision, [a, b]))
                            done += 1
                            progressed.set()
                        except Exception as exc:  # every failure is counted
                            failures.append(exc)

                workers = [asyncio.create_task(load()) for _ in range(4)]
                await a.stop(grace=0.5)  # drains: refuses new calls UNAVAILABLE, then closes
                before_restart = done
                while done < before_restart + 50:  # b alone carries the load
                    progressed.clear()
                    await progressed.wait()
                await a.start()  # the same port
                after: set[str] = set()
                while "a" not in after:  # the restarted replica is picked again
                    after.add(answered_by(await client.recognise(pool[0]), [a, b]))
                stopping.set()
                await asyncio.gather(*workers)
                return len(failures), done, during, after

    failures, done, during, after = run(scenario())
    assert failures == 0
    assert done >= 50 and during == {"a", "b"} and "a" in after


@pytest.mark.integration
@pytest.mark.doc('api.md "Several gateways"')
def test_a_list_over_mutual_tls_checks_every_replica_against_server_name(
    codes, replicas, tmp_path: Path
) -> None:
    ca = DevCA.create(tmp_path / "pki", NOW)
    pki = {
        "server": TlsFiles(*ca.issue("server", server=True, now=NOW), ca.cert_path),
        "verifier": TlsFiles(
            *ca.issue("verifier", uri="trustgw://verifier/c1", now=NOW), ca.cert_path
        ),
    }
    code = codes(SHOW, NOW)()
    made = replicas(pki)

    async def scenario() -> tuple[bool, str]:
        async with started(made) as both:
            addresses = [r.address for r in both]
            async with AsyncGatewayClient(
                addresses, pki["verifier"], server_name="localhost"
            ) as client:
                decision = await client.recognise(code)
            # A name the certificates do not hold: refused (not connected), never trusted.
            async with AsyncGatewayClient(
                addresses, pki["verifier"], server_name="elsewhere.example", retry=FAST
            ) as wrong:
                from gateway.sdk import GatewayRpcError

                with pytest.raises(GatewayRpcError) as info:
                    await wrong.recognise(code, timeout=2)
            return decision.recognised, info.value.status

    recognised, status = run(scenario())
    assert recognised
    assert status in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
