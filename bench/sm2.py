"""What SM2 costs: per call, against Ed25519 and ES256 measured in the same run.

    python bench/sm2.py            # about half a minute; last line is one JSON object
    python bench/sm2.py --count 2000

Runs in one process on one core (pinned when possible). Two parts:

1. **primitives** (keys.crypto, the gateway's one funnel): median µs of one signature and one
   verification for EdDSA (pynacl), ES256 (pyca/cryptography) and SM2 (tongsuopy), over the same
   200-byte message;
2. **the decision path** without gRPC (as bench/decide.py): median µs of
   ``Recogniser.recognise`` + ``decision_to_proto`` + serialisation for three convert-mode
   regions of different algorithms — 230000 Heilongjiang (compact, SM2), 500000 Chongqing
   (compact, Ed25519), 120000 Tianjin (JWS, ES256) — for *yellow codes seen once* (the partner's
   signature is verified, the gateway signs nothing: the partner algorithm's cost) and *repeated
   green codes* (the verified code is cached, the gateway signs an attestation: the gateway
   algorithm's cost); once with the gateway's own keys Ed25519 (the default) and once with
   ``--gateway-algorithm SM2``.

Every figure is reported with its ratio to the Ed25519 figure of the same run, so that a loaded
machine shifts both. bench/run.py's workload (14 regions round robin) includes the SM2 region.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adapters.simulator import PartnerSimulator  # noqa: E402
from bench.workload import GatewayCodes, Mix  # noqa: E402
from gateway.api.v1 import recognition_pb2 as pb  # noqa: E402
from gateway.demo import prepare  # noqa: E402
from gateway.grpc.recognition import decision_to_proto  # noqa: E402
from gateway.runtime.config import GatewayConfig  # noqa: E402
from gateway.runtime.gateway import Gateway  # noqa: E402
from keys.crypto import Algorithm, PrivateKey  # noqa: E402
from keys.timeutil import utcnow  # noqa: E402

ALGORITHMS = (Algorithm.EDDSA, Algorithm.ES256, Algorithm.SM2)
REGIONS = {"230000": "SM2", "500000": "EdDSA", "120000": "ES256"}  # partner's algorithm


def _median_us(call: Callable[[], object], count: int) -> float:
    call()
    samples = []
    for _ in range(count):
        t = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


def primitives(count: int) -> dict[str, dict[str, float]]:
    message = bytes(range(200))
    out: dict[str, dict[str, float]] = {}
    for alg in ALGORITHMS:
        key = PrivateKey.generate(alg)
        public = key.public_key()
        signature = key.sign(message)
        out[alg.value] = {
            "sign_us": _median_us(lambda k=key: k.sign(message), count),
            "verify_us": _median_us(lambda p=public, s=signature: p.verify(message, s), count),
        }
    return out


async def _time_each(items: Sequence[str], call: Callable[[str], Awaitable[object]]) -> float:
    samples = []
    for item in items:
        t = time.perf_counter()
        await call(item)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


async def decisions(count: int, gateway_algorithm: Algorithm) -> dict[str, dict[str, float]]:
    now = utcnow()
    simulator = PartnerSimulator.generate()
    with tempfile.TemporaryDirectory(prefix="trustgw-sm2-") as tmp:
        data_dir = Path(tmp)
        await prepare(data_dir, simulator, now, gateway_algorithm=gateway_algorithm)
        gateway = await Gateway.open(GatewayConfig(data_dir=data_dir))
        try:

            def caller(expect: str) -> Callable[[str], Awaitable[bytes]]:
                async def call(code: str) -> bytes:
                    decision = await gateway.recogniser.recognise(code, utcnow())
                    if decision.reason != expect:
                        raise SystemExit(f"unexpected {decision.reason} for {code[:16]}")
                    return decision_to_proto("r1", decision).SerializeToString()

                return call

            out: dict[str, dict[str, float]] = {"verify": {}, "sign": {}}
            for region in REGIONS:
                issuer = simulator.issuer(region)
                codes = GatewayCodes(PartnerSimulator({region: issuer}), now, mix=Mix(1.0))
                yellow = [_code(r.data) for r in codes.take(count, fresh=False)]
                codes.mix = Mix(non_green=0.0)
                green = [_code(r.data) for r in codes.take(count, fresh=False)]
                out["verify"][region] = await _time_each(yellow, caller("NOT_GREEN"))
                for code in green:  # first sight converts and caches
                    await caller("RECOGNISED")(code)
                out["sign"][region] = await _time_each(green, caller("RECOGNISED"))
            return out
        finally:
            await gateway.close()


def _code(data: bytes) -> str:
    return pb.RecogniseRequest.FromString(data).code


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=500, help="calls per figure (median)")
    opts = p.parse_args(argv)
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {allowed[-1]})

    prim = primitives(opts.count)
    base = prim["EdDSA"]
    print(f"{'primitive':10}{'sign µs':>10}{'x EdDSA':>9}{'verify µs':>11}{'x EdDSA':>9}")
    for alg, f in prim.items():
        print(
            f"{alg:10}{f['sign_us']:10.0f}{f['sign_us'] / base['sign_us']:9.1f}"
            f"{f['verify_us']:11.0f}{f['verify_us'] / base['verify_us']:9.1f}"
        )

    path: dict[str, dict[str, dict[str, float]]] = {}
    for gw_alg in (Algorithm.EDDSA, Algorithm.SM2):
        path[gw_alg.value] = asyncio.run(decisions(opts.count // 2, gw_alg))
    print(f"\ndecision path, µs per call (median of {opts.count // 2}); x ref: against 500000")
    print("(an Ed25519 region) on an Ed25519 gateway, in this run")
    print(f"{'':30}{'gateway EdDSA':>15}{'x ref':>7}{'gateway SM2':>13}{'x ref':>7}")
    for part, what in (("verify", "yellow, first sight"), ("sign", "green, repeated")):
        ref = path["EdDSA"][part]["500000"]
        for region, alg in REGIONS.items():
            ed, sm = path["EdDSA"][part][region], path["SM2"][part][region]
            label = f"{region} {alg} {what}"
            print(f"{label:30}{ed:15.0f}{ed / ref:7.2f}{sm:13.0f}{sm / ref:7.2f}")

    summary: dict[str, Any] = {
        "primitives_us": prim,
        "sm2_verify_vs_eddsa": round(prim["SM2"]["verify_us"] / base["verify_us"], 2),
        "sm2_verify_vs_es256": round(prim["SM2"]["verify_us"] / prim["ES256"]["verify_us"], 2),
        "sm2_sign_vs_eddsa": round(prim["SM2"]["sign_us"] / base["sign_us"], 2),
        "decision_us": path,
        # a first-sight code of the SM2 region against one of the Ed25519 region
        "sm2_region_verify_vs_eddsa_region": round(
            path["EdDSA"]["verify"]["230000"] / path["EdDSA"]["verify"]["500000"], 2
        ),
        # a recognised (attested) repeat on an SM2 gateway against one on an Ed25519 gateway
        "sm2_gateway_attest_vs_eddsa_gateway": round(
            path["SM2"]["sign"]["230000"] / path["EdDSA"]["sign"]["230000"], 2
        ),
    }
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
