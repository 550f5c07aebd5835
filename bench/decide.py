"""The decision path without gRPC: CPU per call of the gateway's recogniser against the ideal's.

    python bench/decide.py              # µs per call, per region and overall
    python bench/decide.py --profile    # plus a cProfile of the gateway's mixed workload

Runs in one process on one core (pinned when possible): a development data directory with the 14
simulated partners, the gateway opened in process (``Gateway.open``), and for each region the time
of ``Recogniser.recognise`` + ``decision_to_proto`` + serialisation for a repeated green code, a
new green code (for convert mode: a new conversion, committed to SQLite) and a yellow one; then
the ideal server's whole handler on its own codes. What gRPC adds on top is what ``bench/run.py``
measures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nacl.signing import SigningKey  # noqa: E402

from adapters.simulator import PartnerSimulator  # noqa: E402
from bench import ideal_server  # noqa: E402
from bench.workload import GatewayCodes, Mix  # noqa: E402
from gateway.api.v1 import recognition_pb2 as pb  # noqa: E402
from gateway.demo import prepare  # noqa: E402
from gateway.grpc.recognition import decision_to_proto  # noqa: E402
from gateway.runtime.config import GatewayConfig  # noqa: E402
from gateway.runtime.gateway import Gateway  # noqa: E402
from keys.timeutil import utcnow  # noqa: E402


async def _time_each(items: Sequence[str], call: Callable[[str], Awaitable[object]]) -> float:
    """Median µs of CPU-bound calls (wall time on an otherwise idle pinned core)."""
    samples = []
    for item in items:
        t = time.perf_counter()
        await call(item)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


async def main_async(opts: argparse.Namespace) -> int:
    now = utcnow()
    simulator = PartnerSimulator.generate()
    with tempfile.TemporaryDirectory(prefix="trustgw-decide-") as tmp:
        data_dir = Path(tmp)
        await prepare(data_dir, simulator, now)
        gateway = await Gateway.open(GatewayConfig(data_dir=data_dir))
        try:
            recogniser = gateway.recogniser

            async def gateway_call(code: str) -> bytes:
                decision = await recogniser.recognise(code, utcnow())
                return decision_to_proto("r1", decision).SerializeToString()

            n = opts.count
            print(
                f"{'region':8}{'name':14}{'mode':9}{'alg':7}{'chars':>6}"
                f"{'repeat':>9}{'new':>9}{'yellow':>9}   µs per call (median of {n})"
            )
            all_repeat, all_new, all_yellow = [], [], []
            for issuer in simulator.issuers():
                codes = GatewayCodes(
                    PartnerSimulator({issuer.spec.code: issuer}), now, mix=Mix(non_green=0.0)
                )
                green = [_code(r.data) for r in codes.take(n, fresh=True)]
                for code in green:  # first sight: converts (convert mode) and caches
                    await gateway_call(code)
                repeat = await _time_each(green, gateway_call)
                new = await _time_each(
                    [_code(r.data) for r in codes.take(n, fresh=True)], gateway_call
                )
                codes.mix = Mix(non_green=1.0)
                yellow = await _time_each(
                    [_code(r.data) for r in codes.take(n, fresh=True)], gateway_call
                )
                all_repeat.append(repeat)
                all_new.append(new)
                all_yellow.append(yellow)
                spec = issuer.spec
                print(
                    f"{spec.code:8}{spec.name:14}{spec.mode.value:9}{spec.signing_alg.value:7}"
                    f"{len(green[0]):6}{repeat:9.0f}{new:9.0f}{yellow:9.0f}"
                )
            print(
                f"{'mean of the 14 regions':44}{statistics.mean(all_repeat):9.0f}"
                f"{statistics.mean(all_new):9.0f}{statistics.mean(all_yellow):9.0f}"
            )

            key = SigningKey.generate()
            service = ideal_server.IdealService(key.verify_key, SigningKey.generate())
            ideal_codes = [
                c
                for c, _ in ideal_server.make_codes(
                    key, n, 300, int(now.timestamp()), non_green=0.0
                )
            ]

            async def ideal_call(code: str) -> bytes:
                return service._decide(
                    pb.RecogniseRequest(request_id="r1", code=code)
                ).SerializeToString()

            print(
                f"{'ideal server (IDL1, Ed25519, green)':44}"
                f"{await _time_each(ideal_codes, ideal_call):9.0f}"
            )

            # The mix bench/run.py sends: 14 regions round robin, 10 % yellow or red; all repeats,
            # then with 20 % new codes. Mean CPU per call of this process (all threads).
            codes = GatewayCodes(simulator, now, seed=5)
            pool = [_code(r.data) for r in codes.take(n * 7, fresh=False)]
            for code in pool:
                await gateway_call(code)
            fresh = [_code(r.data) for r in codes.take(len(pool) // 4, fresh=True)]
            mixed_new = [
                c for i, c in enumerate(pool) for c in ([c] if i % 4 else [c, fresh[i // 4]])
            ]
            ideal_mix = [
                c for c, _ in ideal_server.make_codes(key, n * 7, 283, int(now.timestamp()))
            ]
            print("\nmixed workloads, mean CPU µs per call (process time, all threads):")
            print(f"  gateway, repeats only        {await _cpu_per_call(pool, gateway_call):7.0f}")
            print(
                "  gateway, 20 % new codes      "
                f"{await _cpu_per_call(mixed_new, gateway_call):7.0f}"
            )
            print(
                f"  ideal, 10 % yellow/red       {await _cpu_per_call(ideal_mix, ideal_call):7.0f}"
            )

            if opts.profile:
                codes = GatewayCodes(simulator, now)
                mixed = [_code(r.data) for r in codes.take(opts.count * 14, fresh=True)]
                mixed = mixed + mixed[: len(mixed) * 4 // 5]  # 20 % new codes, as bench/run.py
                profiler = cProfile.Profile()
                profiler.enable()
                for code in mixed:
                    await gateway_call(code)
                profiler.disable()
                out = io.StringIO()
                stats = pstats.Stats(profiler, stream=out).sort_stats(opts.sort)
                stats.print_stats(opts.top)
                print(
                    f"\ncProfile of {len(mixed)} gateway decisions (20 % new codes), "
                    f"by {opts.sort}:"
                )
                print(out.getvalue())
        finally:
            await gateway.close()
    return 0


async def _cpu_per_call(items: Sequence[str], call: Callable[[str], Awaitable[object]]) -> float:
    t = time.process_time()
    for item in items:
        await call(item)
    return (time.process_time() - t) / len(items) * 1e6


def _code(data: bytes) -> str:
    return pb.RecogniseRequest.FromString(data).code


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=300, help="codes per region and kind")
    p.add_argument("--profile", action="store_true", help="cProfile the mixed workload")
    p.add_argument("--sort", default="tottime", help="pstats sort key (default %(default)s)")
    p.add_argument("--top", type=int, default=35, help="rows of the profile to print")
    opts = p.parse_args(argv)
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {allowed[-1]})
    return asyncio.run(main_async(opts))


if __name__ == "__main__":
    sys.exit(main())
