"""What an arrival declaration costs per call, without gRPC.

    python bench/declare.py            # a few seconds; last line is one JSON object
    python bench/declare.py --count 1000

One process on one core (pinned when possible), SQLite store. Median wall µs and mean CPU µs
per :meth:`gateway.declaration.Declarations.declare`: the form's checks, the holder's
pseudonym, the plan's rules, the home code's signature and one write transaction (supersede and
insert) — for a new holder without a partner code, a new holder with a green partner code
(verified as ``Recognise`` verifies it: one more signature check and pseudonym), and the same
declaration again (a duplicate: signed, then the stored code returned); then one ``Recognise``
decision of a repeated green code of the same gateway, as the reference. Ratios are against
that reference, in the same run, so that a loaded machine shifts both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adapters.base import Colour  # noqa: E402
from adapters.fields import id_check_digit  # noqa: E402
from adapters.simulator import PartnerSimulator  # noqa: E402
from gateway.declaration import DeclarationForm, Declarations  # noqa: E402
from gateway.runtime.config import GatewayConfig  # noqa: E402
from gateway.runtime.gateway import Gateway  # noqa: E402
from keys.timeutil import utcnow  # noqa: E402

REGION = "110000"


def _ids(seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    while True:
        first17 = "110101" + f"{rng.randrange(10**11):011d}"
        yield first17 + id_check_digit(first17)


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


async def measure(count: int) -> dict[str, Any]:
    from gateway.demo import prepare

    now = utcnow()
    simulator = PartnerSimulator.generate()
    issuer = simulator.issuer(REGION)
    arrival = (now - timedelta(days=2)).date().isoformat()
    with tempfile.TemporaryDirectory(prefix="trustgw-declare-") as tmp:
        data_dir = Path(tmp)
        await prepare(data_dir, simulator, now)
        gateway = await Gateway.open(GatewayConfig(data_dir=data_dir))
        try:
            declarations = Declarations(
                gateway.store,
                gateway,
                gateway.pseudonymiser,
                gateway.recogniser,
                lambda: gateway.registry.snapshot,
            )
            ids = _ids(5)
            # Partner codes made ahead, one per new holder: issuing is the partner's cost.
            holders = [next(ids) for _ in range(count + 1)]
            codes = iter(
                [
                    issuer.issue(
                        holder_id=h, holder_name="x", colour=Colour.GREEN,
                        issued_at=now - timedelta(hours=1),
                        expires_at=now + timedelta(hours=20),
                    )
                    for h in holders
                ]
            )  # fmt: skip
            partner_holders = iter(holders)

            def form(id_number: str, code: str = "") -> DeclarationForm:
                return DeclarationForm(
                    id_number=id_number, origin=REGION, arrival_date=arrival, places=(REGION,),
                    temperature=36.6, partner_code=code,
                )  # fmt: skip

            async def plain() -> object:
                return await declarations.declare(form(next(ids)), utcnow())

            async def with_code() -> object:
                return await declarations.declare(
                    form(next(partner_holders), next(codes)), utcnow()
                )

            same = form(next(ids))

            async def again() -> object:
                return await declarations.declare(same, utcnow())

            green = issuer.issue(
                holder_id=next(ids), holder_name="y", colour=Colour.GREEN,
                issued_at=now - timedelta(hours=1), expires_at=now + timedelta(hours=20),
            )  # fmt: skip

            async def recognise() -> object:
                return await gateway.recogniser.recognise(green, utcnow())

            return {
                "new_without_code": await _per_call(plain, count),
                "new_with_green_code": await _per_call(with_code, count - 1),
                "repeated": await _per_call(again, count),
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
    results = asyncio.run(measure(opts.count))
    print(f"Declare without gRPC, per call (wall median / CPU mean, µs; {opts.count} calls)")
    for what, (wall, cpu) in results.items():
        print(f"{what:22}{wall:9.0f}{cpu:7.0f}")
    reference = results["recognise_repeat"][1]
    print(
        json.dumps(
            {
                "per_call": {
                    w: {"wall_us": round(v[0], 1), "cpu_us": round(v[1], 1)}
                    for w, v in results.items()
                },
                **{
                    f"{w}_cpu_vs_recognise": round(v[1] / reference, 2)
                    for w, v in results.items()
                    if w != "recognise_repeat"
                },
            },
            sort_keys=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
