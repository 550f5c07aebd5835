"""Fuzz the certificate path: the tolerant DER reader, the key funnel, HC1 signer loading.

python fuzz/fuzz_der.py -max_total_time=60
"""

from __future__ import annotations

import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]
from _harness import PROJECT, guarded, run

with atheris.instrument_imports(include=PROJECT):
    from _seeds import CERT

    from adapters.credentials import hc1
    from keys.crypto import load_public_key
    from keys.der import read_certificate


def test_one_input(data: bytes) -> None:
    guarded(lambda: read_certificate(data))
    guarded(lambda: load_public_key(data))
    guarded(lambda: hc1.Signer.from_certificate(data))
    try:  # a trust file is a usage error: ValueError, never anything else
        hc1.DccTrust.from_bytes(data)
    except ValueError:
        pass


if __name__ == "__main__":
    run("der", test_one_input, [CERT, CERT[:200], b"\x30\x03\x02\x01\x01"])
