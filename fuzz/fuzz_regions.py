"""Fuzz the 14 partner region adapters through the offline verification path.

The first byte picks the region; the rest is the code text.

    python fuzz/fuzz_regions.py -max_total_time=60
"""

from __future__ import annotations

from datetime import timedelta

import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]
from _harness import PROJECT, guarded, run

with atheris.instrument_imports(include=PROJECT):
    from _seeds import ISSUERS, REGION_AT, REGION_CODES

    from adapters.credentials import region

REGIONS = sorted(REGION_CODES)
KEYS = {
    code: region.PartnerKeys(
        (issuer.region_key(REGION_AT - timedelta(days=9), REGION_AT + timedelta(days=9)),)
    )
    for code, issuer in ISSUERS.items()
}


def test_one_input(data: bytes) -> None:
    if not data:
        return
    code = REGIONS[data[0] % len(REGIONS)]
    text = data[1:].decode("utf-8", errors="replace")
    guarded(lambda: region.verify(code, text, KEYS[code], REGION_AT))


SEEDS = [bytes([i]) + REGION_CODES[code].encode() for i, code in enumerate(REGIONS)]

if __name__ == "__main__":
    run("regions", test_one_input, SEEDS)
