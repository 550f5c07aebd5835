"""What the gateway's own status call (GetCodeStatus) costs per call, without gRPC.

    python bench/code_status.py            # a few seconds; last line is one JSON object
    python bench/code_status.py --count 1000

One process on one core (pinned when possible). For a gateway whose keys are Ed25519 (the
default) and one that signs with SM2 (``--gateway-algorithm SM2``): median wall µs and CPU µs
per :meth:`gateway.codestatus.CodeStatus.answer` — a store read by code id (SQLite, a point read
on each of the two conversion tables at most), the status rules, the holder reference (HMAC) and
the attest key's signature — for a known code asked by its text, by its id, and an unknown id;
then one ``Recognise`` decision of a repeated green code of the same gateway, as the reference.
Ratios are against that reference, in the same run, so that a loaded machine shifts both.
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adapters.simulator import PartnerSimulator  # noqa: E402
from bench.workload import GatewayCodes, Mix  # noqa: E402
from gateway.api.v1 import recognition_pb2 as pb  # noqa: E402
from gateway.codestatus import RateLimiter  # noqa: E402
from gateway.runtime.config import GatewayConfig  # noqa: E402
from gateway.runtime.gateway import Gateway  # noqa: E402
from keys.crypto import Algorithm  # noqa: E402
from keys.timeutil import utcnow  # noqa: E402

REGION = "230000"  # convert mode: its green codes become home codes
NONCE = "bench-nonce-0123456789"


async def _per_call(call: Callable[[], Awaitable[object]], count: int) -> tuple[float, float]:
    """(median wall µs, mean CPU µs) of ``count`` calls after a warm-up."""
    await call()
    walls = []
    cpu_start = time.process_time()
    for _ in range(count):
        t = time.perf_counter()
        await call()
        walls.append(time.perf_counter() - t)
    cpu = (time.process_time() - cpu_start) / count
    return statistics.median(walls) * 1e6, cpu * 1e6


async def measure(count: int, algorithm: Algorithm) -> dict[str, Any]:
    from gateway.demo import prepare

    now = utcnow()
    simulator = PartnerSimulator.generate()
    with tempfile.TemporaryDirectory(prefix="trustgw-status-") as tmp:
        data_dir = Path(tmp)
        await prepare(data_dir, simulator, now, gateway_algorithm=algorithm)
        gateway = await Gateway.open(GatewayConfig(data_dir=data_dir))
        try:
            gateway.code_status.limiter = RateLimiter(1e9, 10**9)  # measure the work, not the cap
            codes = GatewayCodes(PartnerSimulator({REGION: simulator.issuer(REGION)}), now,
                                 mix=Mix(non_green=0.0))  # fmt: skip
            code = pb.RecogniseRequest.FromString(codes.take(1, fresh=False)[0].data).code
            decision = await gateway.recogniser.recognise(code, utcnow())
            assert decision.converted is not None, decision.reason
            home = decision.converted

            def asking(**question: str) -> Callable[[], Awaitable[object]]:
                async def call() -> object:
                    return await gateway.code_status.answer(
                        nonce=NONCE, asker="110000", now=utcnow(), **question
                    )

                return call

            async def recognise() -> object:
                return await gateway.recogniser.recognise(code, utcnow())

            return {
                "by_code": await _per_call(asking(code=home.code, code_id=""), count),
                "by_id": await _per_call(asking(code="", code_id=home.code_id), count),
                "unknown": await _per_call(asking(code="", code_id="SD" + "0" * 30), count),
                "recognise_repeat": await _per_call(recognise, count),
            }
        finally:
            await gateway.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=500, help="calls per figure")
    opts = p.parse_args(argv)
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {allowed[-1]})
    results = {
        a.value: asyncio.run(measure(opts.count, a)) for a in (Algorithm.EDDSA, Algorithm.SM2)
    }
    print(f"GetCodeStatus without gRPC, per call (wall median / CPU mean, µs; {opts.count} calls)")
    print(f"{'':22}{'EdDSA wall':>11}{'cpu':>7}{'SM2 wall':>10}{'cpu':>7}")
    for what in ("by_code", "by_id", "unknown", "recognise_repeat"):
        ed, sm = results["EdDSA"][what], results["SM2"][what]
        print(f"{what:22}{ed[0]:11.0f}{ed[1]:7.0f}{sm[0]:10.0f}{sm[1]:7.0f}")
    summary = {
        alg: {what: {"wall_us": round(v[0], 1), "cpu_us": round(v[1], 1)} for what, v in r.items()}
        for alg, r in results.items()
    }
    ratios = {
        f"{alg}_by_code_cpu_vs_recognise": round(r["by_code"][1] / r["recognise_repeat"][1], 2)
        for alg, r in results.items()
    }
    ratios["sm2_vs_eddsa_by_code_cpu"] = round(
        results["SM2"]["by_code"][1] / results["EdDSA"]["by_code"][1], 2
    )
    print(json.dumps({"per_call": summary, **ratios}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
