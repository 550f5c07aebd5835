"""Fuzz the shared decoders: base45, zlib and raw DEFLATE, CBOR, JSON.

python fuzz/fuzz_encoding.py -max_total_time=60
"""

from __future__ import annotations

import zlib

import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]
from _harness import PROJECT, guarded, run

with atheris.instrument_imports(include=PROJECT):
    from _seeds import HC1_CODE, HC1_COSE, SHC_JWS

    from adapters.codecs.encoding import b45decode, inflate, parse_cbor, parse_json
    from adapters.credentials import json_safe


def test_one_input(data: bytes) -> None:
    if not data:
        return
    which, body = data[0] % 5, data[1:]
    if which == 0:
        guarded(lambda: b45decode(body.decode("latin-1"), limit=8192))
    elif which == 1:
        guarded(lambda: inflate(body, raw=False, limit=64 * 1024))
    elif which == 2:
        guarded(lambda: inflate(body, raw=True, limit=64 * 1024))
    elif which == 3:
        guarded(lambda: json_safe(parse_cbor(body)))
    else:
        guarded(lambda: parse_json(body))


SEEDS = [
    b"\x00" + HC1_CODE[4:].encode(),
    b"\x01" + zlib.compress(HC1_COSE),
    b"\x02" + zlib.compress(SHC_JWS.encode())[2:-4],
    b"\x03" + HC1_COSE,
    b'\x04{"a":[1,2.5,{"b":null}],"c":"\\u00e9"}',
]

if __name__ == "__main__":
    run("encoding", test_one_input, SEEDS)
