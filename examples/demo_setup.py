"""Prepare a development gateway for the examples: ``python examples/demo_setup.py DIR``.

Creates in DIR what ``trustgw demo`` uses — unencrypted development keys, the 14 simulated
partner regions, a development CA with a server certificate — plus a verifier and a partner
client certificate, and ``DIR/codes.txt``: sample partner codes (one green code per region,
then a yellow one), valid for the next 22 hours. Then prints the commands to run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from datetime import timedelta
from pathlib import Path

from adapters.base import Colour
from adapters.simulator import PartnerSimulator, fake_holder
from gateway.demo import prepare
from gateway.pki import DevCA
from gateway.runtime.datadir import DataDir
from keys.timeutil import utcnow

PARTNER_REGION = "110000"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="a new directory")
    opts = parser.parse_args(argv)
    data_dir: Path = opts.data_dir.resolve()
    paths = DataDir(data_dir)
    if paths.keys.exists():
        print(f"{data_dir} is already prepared", file=sys.stderr)
        return 2
    data_dir.mkdir(parents=True, exist_ok=True)
    now = utcnow()
    simulator = PartnerSimulator.generate()
    asyncio.run(prepare(data_dir, simulator, now))

    ca = DevCA.create(paths.pki, now)
    ca.issue("server", server=True, now=now)
    ca.issue("verifier", uri="trustgw://verifier/example-checkpoint", now=now)
    ca.issue("partner", uri=f"trustgw://partner/{PARTNER_REGION}", now=now)

    rng = random.Random(5)  # noqa: S311 - made-up holders, not secrets
    lines = []
    for issuer in sorted(simulator.issuers(), key=lambda i: i.spec.code):
        holder_id, name = fake_holder(rng)
        lines.append(
            issuer.issue(
                holder_id=holder_id,
                holder_name=name,
                colour=Colour.GREEN,
                issued_at=now - timedelta(hours=1),
                expires_at=now + timedelta(hours=22),
            )
        )
    issuer = simulator.issuer(PARTNER_REGION)
    holder_id, name = fake_holder(rng)
    lines.append(
        issuer.issue(
            holder_id=holder_id,
            holder_name=name,
            colour=Colour.YELLOW,
            issued_at=now - timedelta(hours=1),
            expires_at=now + timedelta(hours=22),
        )
    )
    (data_dir / "codes.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    pki = paths.pki
    print(f"prepared {data_dir} (development mode: keys NOT encrypted)")
    print("run the gateway:")
    print(f"  trustgw serve --data-dir {data_dir} --listen 127.0.0.1:50051")
    print("check a code as a verifier:")
    print(
        f"  python examples/verifier.py --target localhost:50051 --cert {pki}/verifier.pem"
        f' --key {pki}/verifier.key --ca {pki}/ca.pem "$(head -1 {data_dir}/codes.txt)"'
    )
    print("fetch the gateway's keys as a partner:")
    print(
        f"  python examples/partner.py --target localhost:50051 --cert {pki}/partner.pem"
        f" --key {pki}/partner.key --ca {pki}/ca.pem --out trustgw-keys.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
