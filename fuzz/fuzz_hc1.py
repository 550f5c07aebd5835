"""Fuzz EU DCC verification: COSE_Sign1 parsing and the whole HC1 path.

The first byte picks the layer the rest of the input replaces: the code text, the base45 payload
(zlib-compressed then), or the COSE message.

    python fuzz/fuzz_hc1.py -max_total_time=60
"""

from __future__ import annotations

import zlib

import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]
from _harness import PROJECT, guarded, run

with atheris.instrument_imports(include=PROJECT):
    from _seeds import AT, DCC_TRUST, HC1_CODE, HC1_COSE

    from adapters.codecs.encoding import b45encode
    from adapters.credentials import hc1


def test_one_input(data: bytes) -> None:
    if not data:
        return
    which, body = data[0] % 3, data[1:]
    if which == 0:
        text = body.decode("latin-1")
    elif which == 1:
        text = "HC1:" + b45encode(zlib.compress(body))
    else:
        guarded(lambda: hc1.CODEC.open_message(body))
        text = "HC1:" + b45encode(zlib.compress(body))
    guarded(lambda: hc1.verify(text, DCC_TRUST, AT))


SEEDS = [b"\x00" + HC1_CODE.encode(), b"\x01" + HC1_COSE, b"\x02" + HC1_COSE]

if __name__ == "__main__":
    run("hc1", test_one_input, SEEDS)
