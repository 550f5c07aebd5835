"""``trustgw verify``: offline verification of a code or of what the gateway signs.

Formats: ``hc1`` (EU DCC), ``shc`` (SMART Health Cards), a partner region's 6-digit code, and the
gateway's own ``attestation``, ``home`` and ``receipt`` outputs. The checks live in
:mod:`adapters.credentials` and :mod:`gateway.tokens`; this module reads files, calls them and
prints the verdict.
Exit status: 0 accepted, 1 rejected, 2 usage or input-file error (docs/conformance.md).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from adapters.credentials import Verdict, check
from gateway.cli._common import (
    EXIT_OK,
    EXIT_REJECTED,
    add_json,
    kid_type,
    path_type,
    time_type,
)
from keys.errors import ForeignDataError, UsageError
from keys.timeutil import from_unix, utcnow

MAX_INPUT_BYTES = 1024 * 1024
_FRACTIONAL_UNIX = re.compile(r"[0-9]{1,12}\.[0-9]{1,9}")
GATEWAY_FORMATS = ("attestation", "home", "receipt", "place")
CREDENTIAL_FORMATS = ("hc1", "shc")


def _format(value: str) -> str:
    from adapters.regions import ADAPTERS

    if value in GATEWAY_FORMATS or value in CREDENTIAL_FORMATS or value in ADAPTERS:
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r} is not one of {', '.join(GATEWAY_FORMATS + CREDENTIAL_FORMATS)} "
        "or a partner region's 6-digit code"
    )


def _time(value: str) -> Any:
    """ISO 8601 with a UTC offset, or unix seconds (fractional seconds allowed here)."""
    text = value.strip()
    if _FRACTIONAL_UNIX.fullmatch(text):
        try:
            return from_unix(float(text))
        except ValueError:
            pass
    return time_type(value)


def _read_input(value: str) -> str:
    """The text itself, a file holding it, or ``-`` for standard input."""
    if value == "-":
        return sys.stdin.read(MAX_INPUT_BYTES + 1).lstrip("\ufeff")
    path = Path(value)
    try:
        is_file = len(value) < 4096 and "\n" not in value and path.is_file()
    except (OSError, ValueError):  # not a usable file name: the value is the input itself
        is_file = False
    if not is_file:
        return value
    try:
        with path.open("rb") as handle:
            return handle.read(MAX_INPUT_BYTES + 1).decode("utf-8-sig", errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read {value}: {exc.strerror}") from None


def _read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise UsageError(f"the {what} {path} is larger than {MAX_INPUT_BYTES} bytes")
    return data


def _loaded(load: Callable[[], Any], path: str) -> Any:
    try:
        return load()
    except (ValueError, ForeignDataError) as exc:
        raise UsageError(f"{path}: {exc}") from None


def _verdict(opts: argparse.Namespace) -> Verdict:
    at = opts.at or utcnow()
    trust = _read_file(opts.trust, "trust file")
    if opts.crl and opts.format != "shc":
        raise UsageError("--crl applies to --format shc")
    if opts.kid and opts.format in GATEWAY_FORMATS + CREDENTIAL_FORMATS:
        raise UsageError("--kid applies to a partner region's format")
    if len(opts.code) > 1 and opts.format != "shc":
        raise UsageError("one CODE, except for shc:/i/n/ chunks")
    text = "\n".join(_read_input(value) for value in opts.code)
    if opts.format == "hc1":
        from adapters.credentials import hc1

        signers = _loaded(lambda: hc1.DccTrust.from_bytes(trust), opts.trust)
        return check(
            lambda seen: hc1.verify(hc1.code_of(text), signers, at, seen), "HC1 code verified"
        )
    if opts.format == "shc":
        from adapters.credentials import shc

        issuer = _loaded(lambda: shc.IssuerKeys.from_jwks(trust), opts.trust)
        crls = [_crl(path) for path in opts.crl or ()]
        return check(
            lambda seen: shc.verify(text, issuer, crls, at, seen), "SMART Health Card verified"
        )
    if opts.format in GATEWAY_FORMATS:
        return _gateway_output(opts.format, text, trust, opts.trust, at)
    from adapters.credentials import region

    keys = _loaded(lambda: region.PartnerKeys.from_bytes(opts.format, trust, opts.kid), opts.trust)
    return check(
        lambda seen: region.verify(opts.format, text.strip(), keys, at, seen),
        f"region {opts.format} code verified",
    )


def _crl(path: str) -> Any:
    from adapters.credentials import shc

    data = _read_file(path, "CRL")
    return _loaded(lambda: shc.RevocationList.from_json(data), path)


def _gateway_output(fmt: str, text: str, trust: bytes, path: str, at: Any) -> Verdict:
    from adapters.credentials import step
    from gateway import tokens
    from gateway.cli import _signed_input

    gateway_trust = _loaded(lambda: tokens.GatewayTrust.from_json(trust), path)

    def verify(_: dict[Any, Any]) -> Mapping[str, Any]:
        # The input forms of docs/verifying.md: our JSON, proto3 JSON, text format, wrapped.
        if fmt == "attestation":
            with step("INPUT"):
                attestation = _signed_input.read_attestation(text)
            return tokens.verify_attestation(attestation, gateway_trust, at)
        if fmt == "receipt":
            with step("INPUT"):
                receipt = _signed_input.read_receipt(text)
            return tokens.verify_receipt(receipt, gateway_trust, at)
        if fmt == "place":
            from gateway.places.code import verify_place_code

            return verify_place_code(text.strip(), gateway_trust, at).to_json()
        with step("INPUT"):
            code = _signed_input.read_home_code(text)
        return tokens.verify_home_code(code, gateway_trust, at)

    return check(verify, "signature and validity verified")


def cmd_verify(opts: argparse.Namespace) -> int:
    result = _verdict(opts).to_json()
    if opts.json:
        print(json.dumps(result, ensure_ascii=False, sort_keys=True))
    else:
        print(f"{result['verdict']}: {result['reason']}: {result['detail']}")
        for name, value in sorted(result["claims"].items()):
            shown = value if isinstance(value, (str, int, float)) else json.dumps(value)
            print(f"  {name}: {shown}")
    return EXIT_OK if result["verdict"] == "accept" else EXIT_REJECTED


def register(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="verify a code (HC1, SMART Health Card, partner region) or a gateway output offline",
        description=(
            "Exit 0 when accepted, 1 when rejected, 2 on a usage or input-file error. "
            "See docs/conformance.md and docs/verifying.md."
        ),
    )
    p.add_argument(
        "--format",
        required=True,
        type=_format,
        metavar="FORMAT",
        help=(
            "hc1: an EU DCC 'HC1:' code; shc: a SMART Health Card (shc:/ numeric, chunks one "
            "per line, compact JWS or a .smart-health-card file); a 6-digit region code: that "
            "partner's own format; attestation / home / receipt / place: what the gateway signs "
            "(a decision's attestation, a home-province code, a partner submission's receipt, "
            "a venue's place code)"
        ),
    )
    p.add_argument(
        "--trust",
        required=True,
        type=path_type,
        help=(
            "hc1: signer certificate(s), PEM/DER; shc: the issuer's JWKS; region: the partner's "
            "public key (PEM/DER/certificate/JWK/JWKS); attestation/home/receipt/place: "
            "trustgw keys export"
        ),
    )
    p.add_argument(
        "--crl",
        action="append",
        type=path_type,
        help="shc: an issuer revocation list (repeatable)",
    )
    p.add_argument(
        "--kid", type=kid_type, help="region: the key id of the --trust key (default: JWK kid)"
    )
    p.add_argument(
        "--at",
        type=_time,
        help="verification time: ISO 8601 with a UTC offset (2021-05-03T18:00:00Z, "
        "2026-03-11T16:00:00+08:00) or unix seconds (default now)",
    )
    add_json(p)
    p.add_argument("code", nargs="+", help="the input text, a file, or - for standard input")
    p.set_defaults(func=cmd_verify)
