"""``trustgw partner-tools publish``, ``recognise`` and ``code-status``: the ones that call a
gateway over mTLS.

``publish`` sends a signed statement with a partner certificate (``PartnerService``) and prints
the gateway's receipt; ``recognise`` asks about a code with a verifier certificate
(``RecognitionService.Recognise``); ``code-status`` asks about a home-province code with a
partner certificate (``PartnerService.GetCodeStatus``) and verifies the signed answer. All go
through the typed client, :mod:`gateway.sdk`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

from adapters.regions import detect
from gateway import partner_kit
from gateway.cli._common import (
    EXIT_OK,
    EXIT_REJECTED,
    add_json,
    float_type,
    path_type,
    print_json,
    read_input,
    text_type,
)
from gateway.pki import TlsFiles
from keys.errors import AlreadyExistsError, UsageError
from keys.signed import MAX_ENVELOPE_BYTES, Envelope
from keys.statusdoc import VALID, check_code_id, check_nonce
from keys.timeutil import to_iso, utcnow

DEFAULT_TIMEOUT = 10.0
MAX_CODE_FILE_BYTES = 16 * 1024
MAX_CODE_ARG_CHARS = 4096  # a home code (gateway.tokens.MAX_TOKEN_BYTES)
_ADDRESS = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
)


def address_type(value: str) -> str:
    """HOST:PORT of a gateway: a DNS name, IPv4 or [IPv6] address, and a port 1 to 65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not _ADDRESS.fullmatch(host) or not port.isascii() or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value[:60]!r} is not HOST:PORT")
    if not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{value[:60]!r}: the port is 1 to 65535")
    return value


def _tls(opts: argparse.Namespace) -> TlsFiles:
    """The caller's certificate, key and the gateway's CA, each file checked (CONFIGURATION,
    naming the file) before anything connects."""
    tls = TlsFiles(opts.cert, opts.key, opts.ca)
    tls.read()
    return tls


def _client(opts: argparse.Namespace, tls: TlsFiles) -> Any:
    """A blocking SDK client with the caller's certificate (the one place that connects)."""
    from gateway.sdk import GatewayClient

    return GatewayClient(opts.gateway, tls, timeout=opts.timeout)


def cmd_publish(opts: argparse.Namespace) -> int:
    data = read_input(opts.statement, "statement file", MAX_ENVELOPE_BYTES)
    envelope = Envelope.from_bytes(data)
    kind = partner_kit.statement_kind(envelope)
    if opts.receipt_out is not None:  # refuse before sending, not after the gateway applied it
        if os.path.lexists(opts.receipt_out):
            raise AlreadyExistsError(
                f"{opts.receipt_out} exists: a receipt file is never overwritten"
            )
        if not opts.receipt_out.parent.is_dir():
            raise UsageError(f"--receipt-out {opts.receipt_out}: no such directory to write in")
    tls = _tls(opts)
    with _client(opts, tls) as client:
        call = {
            "keyset": client.publish_key_set,
            "key_revocation": client.revoke_key,
            "revocations": client.publish_revocations,
        }[kind]
        receipt = call(data)
    result = {
        "kind": receipt.kind,
        "region": receipt.region,
        "digest": receipt.digest,
        "accepted_at": to_iso(receipt.accepted_at),
        "duplicate": receipt.duplicate,
        "request_id": receipt.server_request_id,
    }
    if kind == "keyset":
        result.update(
            version=receipt.version,
            keys_added=list(receipt.keys_added),
            keys_removed=list(receipt.keys_removed),
            keys_kept=list(receipt.keys_kept),
            anchors_rotated=receipt.anchors_rotated,
        )
    elif kind == "key_revocation":
        result.update(
            kid=receipt.key_id, revoked_at=receipt.revoked_at and to_iso(receipt.revoked_at)
        )
    else:
        result.update(
            batch_id=receipt.batch_id,
            codes=receipt.codes,
            holders=receipt.holders,
            conversions_revoked=receipt.conversions_revoked,
        )
    # The receipt signed by the gateway's attest key (trustgw/receipt/v1, docs/verifying.md
    # "Submission receipts"): the partner's proof; the fields above are an unsigned copy.
    signed = getattr(receipt, "attestation", None)
    result["signed_receipt"] = None if signed is None else signed.to_json()
    if opts.receipt_out is not None and signed is not None:
        _write_new(opts.receipt_out, (json.dumps(signed.to_json(), indent=2) + "\n").encode())
    if opts.json:
        print_json(result)
        return EXIT_OK
    again = " (a duplicate: accepted before, nothing changed)" if receipt.duplicate else ""
    print(
        f"accepted {kind} of region {receipt.region}{again}, request id {receipt.server_request_id}"
    )
    if kind == "keyset":
        changes = [
            f"{what} {', '.join(kids) or '-'}"
            for what, kids in (
                ("added", receipt.keys_added),
                ("kept", receipt.keys_kept),
                ("removed", receipt.keys_removed),
            )
        ]
        rotated = "; anchors rotated" if receipt.anchors_rotated else ""
        print(f"  version {receipt.version}: {'; '.join(changes)}{rotated}")
    elif kind == "key_revocation":
        print(f"  {receipt.key_id} revoked from {result['revoked_at']}")
    else:
        print(
            f"  batch {receipt.batch_id}: {receipt.codes} code(s), {receipt.holders} holder(s), "
            f"{receipt.conversions_revoked} converted code(s) revoked with them"
        )
    print(f"  digest {receipt.digest}, accepted at {result['accepted_at']}")
    if signed is None:
        print("  the gateway sent no signed receipt")
    else:
        kept = f", kept in {opts.receipt_out}" if opts.receipt_out is not None else ""
        print(f"  signed receipt (attest key {signed.kid}, {signed.alg}){kept}:")
        print(f"  {json.dumps(signed.to_json(), separators=(',', ':'))}")
    return EXIT_OK


def _write_new(path: Path, data: bytes) -> None:
    """Write a new file (a receipt is proof: an existing file is never overwritten)."""
    try:
        with open(path, "xb") as handle:
            handle.write(data)
    except FileExistsError:
        raise AlreadyExistsError(f"{path} exists: a receipt file is never overwritten") from None


def cmd_recognise(opts: argparse.Namespace) -> int:
    text = (
        read_input(opts.code_file, "code file", MAX_CODE_FILE_BYTES)
        .decode("utf-8-sig", "replace")
        .strip()
    )
    if not text:
        raise UsageError(f"the code file {opts.code_file} is empty")
    detect(text)  # REGION_UNKNOWN here, rather than a round trip for a file that holds no code
    tls = _tls(opts)
    with _client(opts, tls) as client:
        decision = client.recognise(text)
    result = {
        "recognised": decision.recognised,
        "reason": decision.reason,
        "message": decision.message,
        "region": decision.region,
        "mode": decision.mode,
        "colour": decision.colour,
        "valid_until": decision.valid_until and to_iso(decision.valid_until),
        "attestation": decision.attestation and decision.attestation.to_json(),
        "converted": decision.converted and decision.converted.code,
        "request_id": decision.server_request_id,
    }
    if opts.json:
        print_json(result)
    else:
        print(f"{decision.reason}: {decision.message}")
        print(
            f"  region {decision.region or '-'}, mode {decision.mode or '-'}, colour "
            f"{decision.colour or '-'}, valid until {result['valid_until'] or '-'}"
        )
        if decision.converted is not None:
            print(f"  home-province code {decision.converted.code}")
        print(f"  request id {decision.server_request_id}")
    return EXIT_OK if decision.recognised else EXIT_REJECTED


def cmd_code_status(opts: argparse.Namespace) -> int:
    from gateway.tokens import HOME_CODE_PREFIX, MAX_TRUST_FILE_BYTES, GatewayTrust

    text = opts.code.strip()
    if text.startswith(HOME_CODE_PREFIX):
        code, code_id = text, ""
    else:
        code, code_id = "", check_code_id(text)  # MALFORMED before anything connects
    if opts.nonce is not None:
        check_nonce(opts.nonce)
    trust = None
    if opts.trust is not None:  # a trust file (keys export); else the gateway's published keys
        trust = GatewayTrust.from_json(read_input(opts.trust, "trust file", MAX_TRUST_FILE_BYTES))
    tls = _tls(opts)
    with _client(opts, tls) as client:
        answer = client.code_status(code, code_id=code_id, nonce=opts.nonce)
        if trust is None:
            trust = client.gateway_keys()
    claims = answer.verify(trust, utcnow(), code_id=code_id or None)
    result = {
        "status": claims.status,
        "code_id": claims.code_id,
        "colour": claims.colour,
        "holder_ref": claims.holder_ref,
        "valid_from": claims.valid_from and to_iso(claims.valid_from),
        "valid_until": claims.valid_until and to_iso(claims.valid_until),
        "checked_at": to_iso(claims.checked_at),
        "max_age": claims.max_age,
        "nonce": claims.nonce,
        "status_document": answer.document,
        "request_id": answer.server_request_id,
    }
    if opts.json:
        print_json(result)
    else:
        print(f"{claims.status}: home code {claims.code_id} (signature verified)")
        if claims.status != "unknown":
            print(
                f"  colour {claims.colour}, valid {result['valid_from']} to "
                f"{result['valid_until']}, holder {claims.holder_ref}"
            )
        print(f"  checked at {result['checked_at']}, may be kept {claims.max_age} s")
        print(f"  request id {answer.server_request_id}")
    return EXIT_OK if claims.status == VALID else EXIT_REJECTED


def _rpc_options(p: argparse.ArgumentParser, role: str) -> None:
    p.add_argument("--gateway", required=True, type=address_type, metavar="HOST:PORT")
    p.add_argument("--cert", required=True, type=path_type, help=f"the {role} certificate (PEM)")
    p.add_argument("--key", required=True, type=path_type, help="its private key (PEM)")
    p.add_argument(
        "--ca", required=True, type=path_type, help="the CA of the gateway's certificate"
    )
    p.add_argument(
        "--timeout",
        type=float_type(0.1, 600),
        default=DEFAULT_TIMEOUT,
        help="seconds (default %(default)s)",
    )
    add_json(p)


def register(tsub: Any) -> None:
    """Add ``publish``, ``recognise`` and ``code-status`` to the ``partner-tools``
    subcommands."""
    p = tsub.add_parser(
        "publish", help="send a signed statement to a gateway (partner certificate)"
    )
    _rpc_options(p, "partner")
    p.add_argument(
        "--receipt-out",
        type=path_type,
        metavar="FILE",
        help="keep the signed receipt here (a new file; verify it with trustgw verify --format "
        "receipt)",
    )
    p.add_argument("statement", type=path_type, metavar="STATEMENT", help="the signed file")
    p.set_defaults(func=cmd_publish)

    p = tsub.add_parser("recognise", help="ask a gateway about a code (verifier certificate)")
    _rpc_options(p, "verifier")
    p.add_argument("code_file", type=path_type, metavar="CODE_FILE", help="a file holding the code")
    p.set_defaults(func=cmd_recognise)

    p = tsub.add_parser(
        "code-status",
        help="ask a gateway the status of a home-province code and verify the signed answer "
        "(partner certificate)",
    )
    _rpc_options(p, "partner")
    p.add_argument(
        "--trust",
        type=path_type,
        metavar="FILE",
        help="verify with this trust file (trustgw keys export); default: the keys the gateway "
        "publishes (GetGatewayKeys)",
    )
    p.add_argument(
        "--nonce",
        type=text_type(64),
        help="16-32 base64url characters (default: a fresh random one)",
    )
    p.add_argument(
        "code",
        type=text_type(MAX_CODE_ARG_CHARS),
        metavar="CODE",
        help="the SD1: code as shown, or its code id",
    )
    p.set_defaults(func=cmd_code_status)
