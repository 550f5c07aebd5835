"""What every fuzz target shares: the import path, seeds, and the one property checked.

The property is the one tests/test_properties.py checks with hypothesis: a decoder returns or
raises a :class:`keys.errors.GatewayError`; anything else (a KeyError, an IndexError, a
RecursionError ...) is a crash for libFuzzer to report. Seeds are real codes made with fixed TEST
keys, written to a temporary corpus when none is given on the command line.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# atheris is not a test dependency: pip install atheris
import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

PROJECT = ["adapters", "keys", "gateway", "_seeds"]

with atheris.instrument_imports(include=PROJECT):
    from keys.errors import GatewayError


def guarded(decode: Callable[[], Any]) -> None:
    """Run one decode; a project error is an answer, any other exception propagates (a crash)."""
    try:
        decode()
    except GatewayError:
        pass


def run(name: str, test_one_input: Callable[[bytes], None], seeds: Iterable[bytes]) -> None:
    """Start libFuzzer on ``test_one_input``; add a seed corpus unless one is given."""
    argv = list(sys.argv)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        corpus = Path(tempfile.mkdtemp(prefix=f"trustgw-fuzz-{name}-"))
        for index, seed in enumerate(seeds):
            (corpus / f"seed-{index}").write_bytes(seed)
        argv.append(str(corpus))
        print(f"trustgw fuzz {name}: corpus {corpus}", file=sys.stderr)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
