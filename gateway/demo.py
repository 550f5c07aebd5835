"""``trustgw demo``: the whole gateway, end to end, on loopback.

A real gRPC server over an embedded SQLite store in a temporary directory; 14 simulated partner
regions with their own keys; for every region a green, a yellow, a red, an expired and a forged
code sent over gRPC; for the two online regions (Beijing, Chongqing) also online codes whose
status the gateway asks of a simulated partner endpoint over HTTPS with mutual TLS (green,
yellow, revoked, unknown, a badly signed answer, an endpoint that never answers); every
attestation and converted code checked offline with the gateway's published keys. Exits 0 when
every decision is the expected one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

from adapters.base import Colour
from adapters.regions import REGION_SPECS
from adapters.simulator import PartnerIssuer, PartnerSimulator, fake_holder
from gateway import tokens
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.grpc.server import build_server
from gateway.online.config import OnlineSettings, PartnerSettings
from gateway.partner_sim import Fault, PartnerServer, PartnerSim, server_context
from gateway.pki import DevCA, TlsFiles
from gateway.runtime.config import GatewayConfig
from gateway.runtime.datadir import DataDir
from gateway.runtime.gateway import Gateway
from gateway.sdk import trust_from_proto
from gateway.sdk.channel import aio_channel
from keys.crypto import Algorithm, PrivateKey
from keys.gatewaykeys import create_or_join
from keys.model import Region, RegionKey
from keys.registry import KeyRegistry
from keys.statusdoc import REVOKED, VALID
from keys.store.factory import open_store
from keys.timeutil import utcnow


@dataclass(frozen=True)
class Case:
    kind: str
    code: str
    expect: str  # expected reason
    fault: Fault = Fault.NONE  # what the online partner's endpoint does for this case


def online_cases(sim: PartnerSim, prefix: str, rng: random.Random) -> list[Case]:
    """The online codes the demo sends for an online region (docs/partners.md §9)."""

    def token(colour: Colour = Colour.GREEN, status: str = VALID) -> str:
        return prefix + sim.add(f"{rng.getrandbits(64):016x}", colour, status=status)

    return [
        Case("online green", token(), "RECOGNISED"),
        Case("online yellow", token(Colour.YELLOW), "NOT_GREEN"),
        Case("online revoked", token(status=REVOKED), "CODE_REVOKED"),
        Case(
            "online unknown", f"{prefix}ON1.{sim.issuer}.{rng.getrandbits(64):016x}", "CODE_UNKNOWN"
        ),
        Case("online forged", token(), "SIGNATURE_INVALID", Fault.BAD_SIGNATURE),
        Case("online down", token(), "PARTNER_TIMEOUT", Fault.HANG),
    ]


def online_sims(now: datetime) -> list[PartnerSim]:
    """Simulated endpoints of the online regions, each with two fresh Ed25519 keys."""
    sims = []
    for spec in REGION_SPECS:
        if spec.online is None:
            continue
        sims.append(
            PartnerSim(
                region=spec.code,
                issuer=sorted(spec.online.issuers)[0],
                key=PrivateKey.generate(Algorithm.EDDSA),
                kid=f"status-{spec.code}-1",
                other_key=PrivateKey.generate(Algorithm.EDDSA),
                other_kid=f"status-{spec.code}-2",
            )
        )
    return sims


async def prepare_online(
    data_dir: Path, sims: list[PartnerSim], now: datetime, database: str | Path | None = None
) -> None:
    """Register the simulated online endpoints' signing keys with the gateway's registry."""
    store = await open_store(DataDir(data_dir).database if database is None else database)
    try:
        registry = KeyRegistry(store)
        await registry.load()
        for sim in sims:
            for kid, key in ((sim.kid, sim.key), (sim.other_kid, sim.other_key)):
                await registry.add_key(
                    RegionKey(
                        sim.region,
                        kid,
                        key.public_key(),
                        now - timedelta(days=30),
                        now + timedelta(days=365),
                    )
                )
    finally:
        await store.close()


@asynccontextmanager
async def online_endpoints(
    sims: list[PartnerSim], ca: DevCA, now: datetime
) -> AsyncIterator[OnlineSettings]:
    """Serve each simulated endpoint over HTTPS with mutual TLS (certificates from ``ca``); yield
    the gateway's settings for them, with its own client certificate from the same CA."""
    client_cert, client_key = ca.issue("online-client", uri="trustgw://gateway/370000", now=now)
    servers = []
    try:
        for sim in sims:
            cert, key = ca.issue(f"partner-{sim.region}", server=True, now=now)
            server = PartnerServer(sim, server_context(str(cert), str(key), str(ca.cert_path)))
            await server.start()
            servers.append(server)
        yield OnlineSettings(
            {
                s.sim.region: PartnerSettings(s.sim.region, s.endpoint, ca=ca.cert_path)
                for s in servers
            },
            client_cert,
            client_key,
        )
    finally:
        for server in servers:
            await server.close()


def demo_cases(issuer: PartnerIssuer, now: datetime, rng: random.Random) -> list[Case]:
    """The five kinds of code the demo sends for a region."""
    holder_id, name = fake_holder(rng)
    fresh = (now - timedelta(hours=2), now + timedelta(hours=22))
    stale = (now - timedelta(hours=30), now - timedelta(hours=6))

    def code(colour: Colour, times: tuple[datetime, datetime], forged: bool = False) -> str:
        make = issuer.forge if forged else issuer.issue
        return make(
            holder_id=holder_id,
            holder_name=name,
            colour=colour,
            issued_at=times[0],
            expires_at=times[1],
        )

    return [
        Case("green", code(Colour.GREEN, fresh), "RECOGNISED"),
        Case("yellow", code(Colour.YELLOW, fresh), "NOT_GREEN"),
        Case("red", code(Colour.RED, fresh), "NOT_GREEN"),
        Case("expired", code(Colour.GREEN, stale), "CODE_EXPIRED"),
        Case(
            "forged",
            code(Colour.GREEN, fresh, forged=True),
            "SIGNATURE_INVALID",
        ),
    ]


async def prepare(
    data_dir: Path,
    simulator: PartnerSimulator,
    now: datetime,
    *,
    gateway_algorithm: Algorithm = Algorithm.EDDSA,
    database: str | Path | None = None,
) -> None:
    """Initialise a development data directory with the simulated partners' keys; the
    gateway's own keys are of ``gateway_algorithm`` (``trustgw init --gateway-algorithm``), the
    store the ``database`` given (a PostgreSQL URL or a SQLite file; default
    ``DATA_DIR/trustgw.db``)."""
    paths = DataDir(data_dir)
    # What marks a data directory whose store is elsewhere as initialised (DataDir.is_initialised).
    paths.pki.mkdir(mode=0o700, exist_ok=True)
    store = await open_store(paths.database if database is None else database)
    try:
        # The gateway's keys in the store's keyring (development: unsealed, and said so).
        await create_or_join(
            store,
            dev=True,
            passphrase=None,
            now=now - timedelta(days=1),
            algorithm=gateway_algorithm,
            actor="operator:demo",
        )
        registry = KeyRegistry(store)
        for issuer in simulator.issuers():
            spec = issuer.spec
            await registry.add_region(Region(spec.code, spec.name, spec.mode, spec.max_age))
            await registry.add_key(
                issuer.region_key(now - timedelta(days=30), now + timedelta(days=365))
            )
    finally:
        await store.close()


def _envelope(issuer: PartnerIssuer) -> str:
    family = getattr(issuer.spec.codec, "family", "?")
    return f"{family}/{issuer.spec.signing_alg}"


def _offline_check(
    response: pb.RecogniseResponse, trust: tokens.GatewayTrust, now: datetime
) -> str:
    """Verify what the gateway signed, as a checkpoint would, with only its public keys."""
    if not response.HasField("attestation"):
        return "-"
    att = response.attestation
    tokens.verify_attestation(
        tokens.Attestation(att.payload, att.key_id, att.alg, att.signature), trust, now
    )
    if response.HasField("converted"):
        claims = tokens.verify_home_code(response.converted.code, trust, now)
        return f"attestation ok; home code {claims['id'][:12]}… ok"
    return "attestation ok"


def _scrape(port: int | None) -> list[str]:
    """Recognitions by decision and reason, and conversions, as the metrics endpoint shows them."""
    if port is None:
        return []
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("trustgw_recognitions_total{"):
            labels = dict(
                part.split("=", 1)
                for part in line[line.index("{") + 1 : line.index("}")].split(",")
            )
            decision, reason = labels["decision"], labels["reason"]
            key = f"trustgw_recognitions_total{{decision={decision},reason={reason}}}"
            totals[key] = totals.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        elif line.startswith("trustgw_conversions_total{"):
            key = "trustgw_conversions_total (all regions)"
            totals[key] = totals.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return [f"{name} {value:g}" for name, value in sorted(totals.items())]


def make_pki(directory: Path, now: datetime) -> tuple[TlsFiles, TlsFiles]:
    """A development CA, the server's certificate and a checkpoint's verifier certificate."""
    ca = DevCA(directory) if DevCA(directory).exists else DevCA.create(directory, now)
    server_cert, server_key = ca.issue("server", server=True, now=now)
    client_cert, client_key = ca.issue(
        "verifier-demo-checkpoint", uri="trustgw://verifier/demo-checkpoint", now=now
    )
    return (
        TlsFiles(server_cert, server_key, ca.cert_path),
        TlsFiles(client_cert, client_key, ca.cert_path),
    )


async def run_demo(out: TextIO, keep: Path | None = None) -> int:
    # The demo announces development mode itself, once; the key directory's own warning
    # (meant for operators' logs) would repeat it on every open.
    logging.getLogger("trustgw.keys").setLevel(logging.ERROR)
    now = utcnow()
    rng = random.Random(20200311)  # the work plan's date: the same holders every run
    simulator = PartnerSimulator.generate()
    with tempfile.TemporaryDirectory(prefix="trustgw-demo-") as tmp:
        data_dir = keep or Path(tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        print(
            f"trustgw demo: data directory {data_dir} (development mode, keys NOT encrypted)",
            file=out,
        )
        await prepare(data_dir, simulator, now)
        sims = online_sims(now)
        await prepare_online(data_dir, sims, now)
        server_tls, client_tls = make_pki(DataDir(data_dir).pki, now)
        endpoints = online_endpoints(sims, DevCA(DataDir(data_dir).pki), now)
        online = await endpoints.__aenter__()
        try:
            gateway = await Gateway.open(
                GatewayConfig(data_dir=data_dir, tls=server_tls, online=online)
            )
        except BaseException:
            await endpoints.__aexit__(None, None, None)
            raise
        running = await build_server(
            gateway, "127.0.0.1:0", server_tls, metrics_listen="127.0.0.1:0"
        )
        print(
            f"gateway listening on 127.0.0.1:{running.port} over mutual TLS (the checkpoint "
            "presents a verifier certificate); 14 partner regions onboarded; online regions "
            + ", ".join(
                f"{s.region} at {p.endpoint}"
                for s, p in zip(sims, online.partners.values(), strict=True)
            )
            + " (HTTPS, mutual TLS)\n",
            file=out,
        )
        failures = 0
        rows: list[tuple[str, ...]] = []
        try:
            async with aio_channel(f"localhost:{running.port}", client_tls) as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                trust = trust_from_proto(await stub.GetGatewayKeys(pb.GetGatewayKeysRequest()))
                by_region = {sim.region: sim for sim in sims}
                for issuer in sorted(simulator.issuers(), key=lambda i: i.spec.code):
                    cases = demo_cases(issuer, now, rng)
                    sim = by_region.get(issuer.spec.code)
                    if sim is not None:
                        cases += online_cases(sim, issuer.spec.prefix, rng)
                    for n, case in enumerate(cases):
                        request_id = f"{issuer.spec.code}-{n}"
                        if sim is not None:
                            sim.fault = case.fault
                        response = await stub.Recognise(
                            pb.RecogniseRequest(request_id=request_id, code=case.code), timeout=10
                        )
                        offline = _offline_check(response, trust, utcnow())
                        ok = response.reason == case.expect and response.request_id == request_id
                        failures += not ok
                        rows.append(
                            (
                                issuer.spec.code,
                                issuer.spec.name,
                                "online/" + str(issuer.spec.signing_alg)
                                if case.kind.startswith("online")
                                else _envelope(issuer),
                                pb.Mode.Name(response.mode).removeprefix("MODE_").lower() or "-",
                                case.kind,
                                "yes" if response.recognised else "no",
                                response.reason,
                                offline,
                                "" if ok else f"  <-- expected {case.expect}",
                            )
                        )
            metrics = await asyncio.to_thread(_scrape, running.metrics_port)
        finally:
            await running.stop(1.0)
            await gateway.close()
            await endpoints.__aexit__(None, None, None)
    widths = [6, 12, 13, 7, 14, 10, 22, 36]
    head = (
        "region",
        "name",
        "format",
        "mode",
        "code",
        "recognised",
        "reason",
        "signed result (checked offline)",
    )
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in rows:
        line = "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)).rstrip()
        print(line + row[-1], file=out)
    print("\nPrometheus counters scraped from the gateway's metrics endpoint:", file=out)
    for line in metrics:
        print(f"  {line}", file=out)
    total = len(rows)
    print(f"\n{total - failures} of {total} decisions as expected", file=out)
    return 0 if failures == 0 else 1
