"""A partner system: fetch the gateway's public keys and the current signed trust list, and
ask the status of a home-province code.

    python examples/partner.py --target HOST:PORT --cert C --key K --ca CA --out keys.json
    python examples/partner.py ... --out keys.json --code-status SD1:...   # or a code id

Writes the gateway's keys as a trust file (the format of ``trustgw keys export``, for verifying
attestations and home-province codes offline) and prints the trust list's version and expiry.
With ``--code-status``, asks ``GetCodeStatus`` and verifies the signed answer with those keys
(docs/partners.md §10). Exit status 0, or 2 when the gateway refuses or cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from gateway.pki import TlsFiles
from gateway.sdk import GatewayClient, GatewayRpcError
from keys.errors import GatewayError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fetch the gateway's keys and trust list")
    parser.add_argument("--target", required=True, help="the gateway, HOST:PORT")
    parser.add_argument("--cert", type=Path, help="this partner's certificate (partner role)")
    parser.add_argument("--key", type=Path, help="its private key")
    parser.add_argument("--ca", type=Path, help="the CA that issued the gateway's certificate")
    parser.add_argument("--insecure", action="store_true", help="plaintext (development only)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the trust file")
    parser.add_argument("--code-status", metavar="CODE", help="an SD1: code (or its id) to ask")
    opts = parser.parse_args(argv)
    tls = None
    if not opts.insecure:
        if not (opts.cert and opts.key and opts.ca):
            parser.error("give --cert, --key and --ca (or --insecure)")
        tls = TlsFiles(opts.cert, opts.key, opts.ca)

    try:
        with GatewayClient(opts.target, tls, insecure=opts.insecure) as gw:
            trust = gw.gateway_keys()
            signed = gw.trust_list()
            answer = None
            if opts.code_status:
                text = opts.code_status.strip()
                by_text = text.startswith("SD1:")
                answer = gw.code_status(text if by_text else "", code_id="" if by_text else text)
    except GatewayRpcError as exc:
        print(f"gateway refused the call: {exc.status} {exc.reason}: {exc}", file=sys.stderr)
        return 2
    if answer is not None:
        try:
            status = answer.verify(trust, datetime.now(UTC))
        except GatewayError as exc:
            print(f"the status answer does not verify: {exc.reason}: {exc}", file=sys.stderr)
            return 2
        print(
            f"home code {status.code_id}: {status.status} (colour {status.colour or '-'}, "
            f"checked {status.checked_at.isoformat()}, keep {status.max_age} s; signature verified)"
        )
    opts.out.write_text(json.dumps(trust.to_json(), indent=2) + "\n", encoding="utf-8")
    for key in trust.keys:
        valid = f"{key.not_before:%Y-%m-%d} .. {key.not_after:%Y-%m-%d}"
        print(f"gateway {key.role} key {key.kid} valid {valid}")
    print(f"wrote {opts.out}")
    print(
        f"trust list version {signed.version}, signed {signed.issued_at.isoformat()},"
        f" expires {signed.expires.isoformat()} ({len(signed.envelope)} bytes; verify it with"
        " keys.trustlist.TrustListVerifier before use)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
