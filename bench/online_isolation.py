"""Isolation of online partners: does one partner's outage change the other regions' answers or
their latency? (issue 14; docs/partners.md §9.6)

    python bench/online_isolation.py               # 4 phases of 20 s, about two minutes
    python bench/online_isolation.py --phase 10    # shorter

Starts ``trustgw serve`` (a fresh development data directory with the 14 simulated partners, the
two online regions' simulated endpoints configured over HTTPS with mutual TLS) and the endpoints
in a process of their own, then drives the gateway with unary calls over every region: the 14
regions' offline codes, Chongqing's online codes (healthy endpoint) and Beijing's online codes.
Phases alternate *baseline* (Beijing's endpoint answers) and *outage* (it accepts connections
and never answers); between phases only the endpoints' process is restarted. For every request
other than Beijing's online ones it checks the answer is the expected one, and reports their p50
and p99 in both conditions and the outage/baseline ratio, with the gateway's CPU per call. The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import statistics
import sys
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from adapters.base import Colour  # noqa: E402
from adapters.simulator import PartnerSimulator  # noqa: E402
from bench.loadgen import _proc_cpu  # noqa: E402
from bench.run import spawn, stop  # noqa: E402
from bench.workload import GatewayCodes, Request  # noqa: E402
from gateway.api.v1 import recognition_pb2 as pb  # noqa: E402
from gateway.demo import prepare  # noqa: E402
from gateway.partner_sim import Fault, PartnerServer, PartnerSim, SimCode, server_context  # noqa: E402
from gateway.pki import DevCA  # noqa: E402
from keys.crypto import PrivateKey  # noqa: E402
from keys.model import RegionKey  # noqa: E402
from keys.registry import KeyRegistry  # noqa: E402
from keys.statusdoc import VALID  # noqa: E402
from keys.store.factory import open_store  # noqa: E402
from keys.timeutil import utcnow  # noqa: E402

DOWN, HEALTHY = "110000", "500000"
ISSUERS = {DOWN: "bjhc", HEALTHY: "cqjkm"}
PREFIXES = {DOWN: "BJ1:", HEALTHY: "CQJKM:"}


def _key(region: str, n: int) -> PrivateKey:
    # Fixed per region so that the endpoints' process can be restarted with the same keys.
    return PrivateKey.from_ed25519_seed(
        hashlib.sha256(f"bench-online-{region}-{n}".encode()).digest()
    )


def _sim(region: str) -> PartnerSim:
    now = utcnow()
    sim = PartnerSim(
        region,
        ISSUERS[region],
        _key(region, 1),
        f"bench-{region}-1",
        _key(region, 2),
        f"bench-{region}-2",
    )
    sim.any_code = SimCode(
        VALID, Colour.GREEN, "bench-holder", now - timedelta(hours=1), now + timedelta(days=1)
    )
    return sim


async def serve_endpoints(pki: Path, ports: list[int], down: bool) -> None:
    """The endpoints' process: both online regions, Beijing's hanging when ``down``."""
    servers = []
    for region, port in zip((DOWN, HEALTHY), ports, strict=True):
        sim = _sim(region)
        if region == DOWN and down:
            sim.fault = Fault.HANG
        context = server_context(
            str(pki / f"partner-{region}.pem"),
            str(pki / f"partner-{region}.key"),
            str(pki / "ca.pem"),
        )
        server = PartnerServer(sim, context)
        await server.start(port=port)
        servers.append(server)
    print(f"serving on 127.0.0.1:{ports[0]}", flush=True)
    await asyncio.Event().wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _setup(
    data_dir: Path, ports: list[int], simulator: PartnerSimulator, breaker_failures: int
) -> Path:
    now = utcnow()
    await prepare(data_dir, simulator, now)
    store = await open_store(data_dir / "trustgw.db")
    try:
        registry = KeyRegistry(store)
        await registry.load()
        for region in (DOWN, HEALTHY):
            for n in (1, 2):
                await registry.add_key(
                    RegionKey(
                        region,
                        f"bench-{region}-{n}",
                        _key(region, n).public_key(),
                        now - timedelta(days=1),
                        now + timedelta(days=30),
                    )
                )
    finally:
        await store.close()
    pki = data_dir / "pki"
    ca = DevCA.create(pki, now)
    for region in (DOWN, HEALTHY):
        ca.issue(f"partner-{region}", server=True, now=now)
    ca.issue("online-client", uri="trustgw://gateway/370000", now=now)
    online = data_dir / "online.toml"
    lines = ['client_cert = "pki/online-client.pem"', 'client_key = "pki/online-client.key"']
    for region, port in zip((DOWN, HEALTHY), ports, strict=True):
        lines += [
            f"[region.{region}]",
            f'endpoint = "https://127.0.0.1:{port}"',
            'ca = "pki/ca.pem"',
            f"breaker_failures = {breaker_failures}",
        ]
    online.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return online


def _requests(offline: Sequence[Request], tag: str) -> list[tuple[str, bytes, str]]:
    """(kind, request bytes, expected reason) round robin: 14 offline regions, Chongqing online,
    Beijing online ("down"); the online codes' ids carry ``tag`` (one per phase: never cached
    from an earlier phase)."""
    out: list[tuple[str, bytes, str]] = []
    for n, request in enumerate(offline):
        out.append((request.region, request.data, request.expect))
        if n % 14 == 13:
            for region, kind in ((HEALTHY, "online-" + HEALTHY), (DOWN, "down")):
                code = f"{PREFIXES[region]}ON1.{ISSUERS[region]}.g{tag}{n:012d}"
                data = pb.RecogniseRequest(request_id=f"o{n}", code=code).SerializeToString()
                out.append((kind, data, "RECOGNISED"))
    return out


async def _drive(
    address: str,
    requests: list[tuple[str, bytes, str]],
    seconds: float,
    concurrency: int,
    pid: int,
    rate: float = 0.0,
) -> dict[str, object]:
    """Closed loop with ``concurrency`` calls in flight, or (``rate`` > 0) open loop: requests
    sent at a fixed rate whatever is in flight, each latency counted from its scheduled time
    (no coordinated omission), so both conditions get the same offered load."""
    latencies: dict[str, list[float]] = {"other": [], "down": []}
    unexpected: dict[str, int] = {}
    reasons_down: dict[str, int] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(
            "/gateway.api.v1.RecognitionService/Recognise",
            request_serializer=lambda b: b,
            response_deserializer=pb.RecogniseResponse.FromString,
        )
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        cursor = iter(range(10**12))

        async def one(n: int, started: float) -> None:
            kind, data, expect = requests[n % len(requests)]
            try:
                reply = await call(data, timeout=2.0)
                reason = reply.reason
            except grpc.aio.AioRpcError as exc:
                reason = f"rpc:{exc.code().name}"
            elapsed = loop.time() - started
            if kind == "down":
                latencies["down"].append(elapsed)
                reasons_down[reason] = reasons_down.get(reason, 0) + 1
                return
            latencies["other"].append(elapsed)
            if reason != expect:
                unexpected[f"{kind}:{reason}"] = unexpected.get(f"{kind}:{reason}", 0) + 1

        async def worker() -> None:
            while loop.time() < end:
                await one(next(cursor), loop.time())

        async def paced() -> None:
            start = loop.time()
            tasks = []
            for n in range(int(seconds * rate)):
                due = start + n / rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(one(n, due)))
            await asyncio.gather(*tasks)

        cpu0 = _proc_cpu(pid)
        if rate > 0:
            await paced()
        else:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu = _proc_cpu(pid) - cpu0
    other = sorted(latencies["other"])
    calls = len(other) + len(latencies["down"])

    def q(values: Sequence[float], share: float) -> float:
        return values[min(len(values) - 1, int(share * len(values)))] * 1000 if values else 0.0

    return {
        "other_calls": len(other),
        "other_p50_ms": round(q(other, 0.5), 2),
        "other_p99_ms": round(q(other, 0.99), 2),
        "other_unexpected": unexpected,
        "down_calls": len(latencies["down"]),
        "down_reasons": reasons_down,
        "cpu_us_per_call": round(cpu / calls * 1e6, 1) if calls else 0.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2, help="baseline+outage pairs")
    parser.add_argument("--concurrency", type=int, default=32, help="closed loop: calls in flight")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="open loop: requests per second (0: closed loop)"
    )
    parser.add_argument(
        "--breaker-failures",
        type=int,
        default=5,
        help="the online regions' breaker_failures (1000: effectively no breaker, every call "
        "to the down partner waits for its deadline)",
    )
    parser.add_argument(
        "--serve-endpoints", nargs=3, metavar=("PKI", "PORTS", "DOWN"), help=argparse.SUPPRESS
    )
    opts = parser.parse_args(argv)
    if opts.serve_endpoints:
        pki, ports, down = opts.serve_endpoints
        asyncio.run(serve_endpoints(Path(pki), [int(p) for p in ports.split(",")], down == "down"))
        return 0
    with tempfile.TemporaryDirectory(prefix="trustgw-online-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        ports = [_free_port(), _free_port()]
        simulator = PartnerSimulator.generate()
        online = asyncio.run(_setup(data_dir, ports, simulator, opts.breaker_failures))
        py = sys.executable
        me = str(Path(__file__).resolve())

        def endpoints(down: bool) -> object:
            return spawn(
                "endpoints",
                [
                    py,
                    me,
                    "--serve-endpoints",
                    str(data_dir / "pki"),
                    ",".join(map(str, ports)),
                    "down" if down else "up",
                ],
                None,
                Path(tmp),
            )

        sims = endpoints(False)
        gateway = spawn(
            "gateway",
            [
                py,
                "-m",
                "gateway.cli",
                "serve",
                "--data-dir",
                str(data_dir),
                "--insecure",
                "--listen",
                "127.0.0.1:0",
                "--online-file",
                str(online),
                "--log-level",
                "warning",
            ],
            None,
            Path(tmp),
        )
        offline = GatewayCodes(simulator, utcnow()).take(1400, fresh=False)
        results: dict[str, list[dict[str, object]]] = {"baseline": [], "outage": []}
        load = os.getloadavg()
        try:
            asyncio.run(
                _drive(
                    gateway.address,
                    _requests(offline, "w"),
                    min(5.0, opts.phase),
                    opts.concurrency,
                    gateway.proc.pid,
                )
            )  # warm-up: every pool code seen
            for round_ in range(opts.rounds):
                for condition in ("baseline", "outage"):
                    requests = _requests(offline, f"{condition[0]}{round_}")
                    stop(sims)  # type: ignore[arg-type]
                    sims = endpoints(condition == "outage")
                    result = asyncio.run(
                        _drive(
                            gateway.address,
                            requests,
                            opts.phase,
                            opts.concurrency,
                            gateway.proc.pid,
                            opts.rate,
                        )
                    )
                    results[condition].append(result)
                    print(condition, json.dumps(result), flush=True)
        finally:
            stop(gateway)
            stop(sims)  # type: ignore[arg-type]

    def med(condition: str, key: str) -> float:
        return float(statistics.median(float(r[key]) for r in results[condition]))  # type: ignore[arg-type]

    summary = {
        "phase_s": opts.phase,
        "rounds": opts.rounds,
        "concurrency": opts.concurrency,
        "rate": opts.rate,
        "breaker_failures": opts.breaker_failures,
        "loadavg_1m_at_start": round(load[0], 2),
        "baseline_other_p50_ms": med("baseline", "other_p50_ms"),
        "baseline_other_p99_ms": med("baseline", "other_p99_ms"),
        "outage_other_p50_ms": med("outage", "other_p50_ms"),
        "outage_other_p99_ms": med("outage", "other_p99_ms"),
        "baseline_cpu_us_per_call": med("baseline", "cpu_us_per_call"),
        "outage_cpu_us_per_call": med("outage", "cpu_us_per_call"),
        "other_unexpected_answers": sum(
            sum(r["other_unexpected"].values())
            for rs in results.values()
            for r in rs  # type: ignore[attr-defined]
        ),
        "down_reasons": [r["down_reasons"] for r in results["outage"]],
    }
    summary["p99_ratio_outage_to_baseline"] = round(
        summary["outage_other_p99_ms"] / summary["baseline_other_p99_ms"],
        2,  # type: ignore[operator]
    )
    print(json.dumps(summary))
    return 0 if summary["other_unexpected_answers"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
