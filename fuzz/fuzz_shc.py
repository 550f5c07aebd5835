"""Fuzz SMART Health Card verification: input forms (numeric, chunks, file), JWS, payload.

The first byte picks what the rest is: the input text, or a payload that the TEST issuer signs
(raw-DEFLATE-compressed) so that the steps after the signature are reached too.

    python fuzz/fuzz_shc.py -max_total_time=60
"""

from __future__ import annotations

import json
import zlib

import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]
from _harness import PROJECT, guarded, run

with atheris.instrument_imports(include=PROJECT):
    from _seeds import AT, SHC_CRL, SHC_JWK, SHC_JWS, SHC_KEY, SHC_KEYS, SHC_NUMERIC

    from adapters.codecs.encoding import b64url_encode
    from adapters.credentials import shc


def _signed(payload: bytes) -> str:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = b64url_encode(deflater.compress(payload) + deflater.flush())
    header = b64url_encode(
        json.dumps({"zip": "DEF", "alg": "ES256", "kid": SHC_JWK["kid"]}).encode()
    )
    signing_input = f"{header}.{body}"
    return f"{signing_input}.{b64url_encode(SHC_KEY.sign(signing_input.encode()))}"


def test_one_input(data: bytes) -> None:
    if not data:
        return
    which, body = data[0] % 2, data[1:]
    text = body.decode("latin-1") if which == 0 else _signed(body)
    guarded(lambda: shc.cards(text))
    guarded(lambda: shc.verify(text, SHC_KEYS, [SHC_CRL], AT))


SEEDS = [
    b"\x00" + SHC_JWS.encode(),
    b"\x00" + SHC_NUMERIC.encode(),
    b"\x00" + json.dumps({"verifiableCredential": [SHC_JWS]}).encode(),
    b"\x01" + json.dumps({"iss": "x", "nbf": 1, "vc": {"rid": "r1"}}).encode(),
]

if __name__ == "__main__":
    run("shc", test_one_input, SEEDS)
