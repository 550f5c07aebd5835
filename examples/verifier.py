"""A checkpoint: ask the gateway about a scanned code, then verify what it signed, offline.

    python examples/verifier.py --target HOST:PORT --cert C --key K --ca CA CODE
    python examples/verifier.py --target HOST:PORT --insecure - < code.txt
    python examples/verifier.py ... --place "$(cat venue-code.txt)" CODE   # at a venue

With ``--place``, the venue's place code (``trustgw place qr``) is verified offline first, then
sent with the holder's code: the gateway records the visit and says so (``place_reason``).

The gateway's keys come from ``--trust FILE`` (``trustgw keys export``) or, without it, from the
gateway itself (``GetGatewayKeys``). Exit status: 0 recognised and the signed result verified,
1 not recognised, 2 an error (unreachable gateway, refused call, bad signature).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from gateway import tokens
from gateway.pki import TlsFiles
from gateway.sdk import GatewayClient, GatewayRpcError, verify_place_code
from keys.errors import GatewayError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="check a code with the gateway")
    parser.add_argument("code", help="the scanned code, or - to read it from stdin")
    parser.add_argument("--target", required=True, help="the gateway, HOST:PORT")
    parser.add_argument("--cert", type=Path, help="this checkpoint's certificate (verifier role)")
    parser.add_argument("--key", type=Path, help="its private key")
    parser.add_argument("--ca", type=Path, help="the CA that issued the gateway's certificate")
    parser.add_argument("--insecure", action="store_true", help="plaintext (development only)")
    parser.add_argument("--trust", type=Path, help="trust file from `trustgw keys export`")
    parser.add_argument("--region-hint", help="the 6-digit region the code should be from")
    parser.add_argument("--place", help="the venue's place code (SDP1:...), scanned with it")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    opts = parser.parse_args(argv)
    code = sys.stdin.read().strip() if opts.code == "-" else opts.code
    tls = None
    if not opts.insecure:
        if not (opts.cert and opts.key and opts.ca):
            parser.error("give --cert, --key and --ca (or --insecure)")
        tls = TlsFiles(opts.cert, opts.key, opts.ca)

    try:
        with GatewayClient(opts.target, tls, insecure=opts.insecure, timeout=opts.timeout) as gw:
            if opts.trust:
                trust = tokens.GatewayTrust.from_json(opts.trust.read_bytes())
            else:
                trust = gw.gateway_keys()
            if opts.place:  # offline: a checkpoint can tell a forged place code on its own
                try:
                    venue = verify_place_code(opts.place, trust, datetime.now(UTC))
                except GatewayError as exc:
                    print(f"place code does NOT verify: {exc.reason}: {exc}", file=sys.stderr)
                    return 2
                print(f"  place code verified: venue {venue.venue} {venue.name} ({venue.division})")
            decision = gw.recognise(code, region_hint=opts.region_hint, place=opts.place)
            print(f"request {decision.server_request_id}: {decision.reason}: {decision.message}")
            print(f"  region {decision.region} mode {decision.mode} colour {decision.colour}")
            if decision.place_reason:
                print(f"  visit: {decision.place_reason} (venue {decision.venue_id})")
            if not decision.recognised:
                return 1
    except GatewayRpcError as exc:
        print(f"gateway refused the call: {exc.status} {exc.reason}: {exc}", file=sys.stderr)
        return 2

    # Offline from here: only the gateway's public keys are needed.
    now = datetime.now(UTC)
    try:
        assert decision.attestation is not None  # a recognised decision always carries one
        claims = tokens.verify_attestation(decision.attestation, trust, now)
        print(
            f"  attestation verified (key {decision.attestation.kid}): holder {claims['holder']},"
            f" valid until {datetime.fromtimestamp(claims['exp'], UTC).isoformat()}"
        )
        if decision.converted is not None:
            home = tokens.verify_home_code(decision.converted.code, trust, now)
            print(f"  home-province code {home['id']} verified (key {decision.converted.kid})")
    except GatewayError as exc:
        print(f"signed result does NOT verify: {exc.reason}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
