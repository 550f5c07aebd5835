"""``trustgw verify``: offline verification of what the gateway signs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.cli._common import EXIT_OK, EXIT_REJECTED, UsageError, add_json, time_type
from keys.errors import ForeignDataError
from keys.timeutil import utcnow

# --- verify (offline) -------------------------------------------------------------------------


def _read_input(value: str) -> str:
    if value == "-":
        return sys.stdin.read(1024 * 1024)
    try:
        if len(value) < 4096 and Path(value).is_file():
            return Path(value).read_text()
    except OSError:  # not a usable file name: the value is the input itself
        pass
    return value


def cmd_verify(opts: argparse.Namespace) -> int:
    from gateway import tokens

    try:
        trust = tokens.GatewayTrust.from_json(Path(opts.trust).read_bytes())
        text = _read_input(opts.code)
    except OSError as exc:
        raise UsageError(f"cannot read input: {exc.strerror}: {exc.filename}") from None
    except ForeignDataError as exc:
        raise UsageError(f"{opts.trust}: {exc.message}") from None
    at = opts.at or utcnow()
    try:
        if opts.format == "attestation":
            claims = tokens.verify_attestation(tokens.Attestation.from_json(text), trust, at)
        else:
            claims = tokens.verify_home_code(text, trust, at)
    except ForeignDataError as exc:
        result = {"verdict": "reject", "reason": exc.reason, "detail": exc.message, "claims": {}}
    else:
        result = {
            "verdict": "accept",
            "reason": "OK",
            "detail": "signature and validity verified",
            "claims": claims,
        }
    if opts.json:
        print(json.dumps(result, ensure_ascii=False, sort_keys=True))
    else:
        print(f"{result['verdict']}: {result['reason']}: {result['detail']}")
        for name, value in sorted(result["claims"].items()):
            print(f"  {name}: {value}")
    return EXIT_OK if result["verdict"] == "accept" else EXIT_REJECTED


def register(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="verify an attestation or a converted home-province code offline",
        description="Exit 0 when accepted, 1 when rejected, 2 on a usage or input-file error.",
    )
    p.add_argument(
        "--format",
        required=True,
        choices=["attestation", "home"],
        help="attestation: the JSON of an attestation; home: an SD1: code",
    )
    p.add_argument("--trust", required=True, help="the gateway's public keys (trustgw keys export)")
    p.add_argument("--at", type=time_type, help="verification time (default now)")
    add_json(p)
    p.add_argument("code", help="the input text, a file, or - for standard input")
    p.set_defaults(func=cmd_verify)
