"""``trustgw pki``: a development CA and the certificates for mutual TLS."""

from __future__ import annotations

import argparse
import re
from typing import Any

from gateway.cli._common import (
    EXIT_OK,
    UsageError,
    add_data_dir,
    add_json,
    int_type,
    print_json,
)
from gateway.pki import DevCA, Peer, Role
from keys.timeutil import utcnow

_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.:-]{0,251}[A-Za-z0-9])?")


def host_type(value: str) -> str:
    """A DNS name or IP address for the server certificate (ASCII: an IDN in its xn-- form)."""
    if _HOST.fullmatch(value) is None:
        raise argparse.ArgumentTypeError(
            f"{value[:60]!r} is not a DNS name or IP address (ASCII letters, digits, . : -)"
        )
    return value


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def name_type(value: str) -> str:
    """A certificate's name: 1 to 64 of ``A-Z a-z 0-9 . _ -`` (it names a URI and a file)."""
    if _NAME.fullmatch(value) is None:
        raise argparse.ArgumentTypeError(
            f"{value[:60]!r} is not 1 to 64 of A-Z a-z 0-9 . _ - (starting with a letter or digit)"
        )
    return value


def cmd_pki_init(opts: argparse.Namespace) -> int:
    now = utcnow()
    ca = DevCA.create(opts.data_dir / "pki", now)
    hosts = tuple(opts.host or ("localhost", "127.0.0.1"))
    cert, key = ca.issue("server", server=True, now=now, hosts=hosts)
    result = {"ca": str(ca.cert_path), "server_cert": str(cert), "server_key": str(key)}
    if opts.json:
        print_json(result)
    else:
        print(f"created a development CA {result['ca']} and server certificate {cert}")
    return EXIT_OK


def cmd_pki_issue(opts: argparse.Namespace) -> int:
    role = Role(opts.role)
    peer = Peer.from_uri(f"trustgw://{role.value}/{opts.name}")
    if peer is None:
        hint = "a 6-digit region code" if role is Role.PARTNER else "1-64 characters, no '/'"
        raise UsageError(f"--name for a {role.value} must be {hint}")
    ca = DevCA(opts.data_dir / "pki")
    file_name = f"{role.value}-{opts.name}"
    cert, key = ca.issue(file_name, uri=peer.uri, now=utcnow(), days=opts.days)
    result = {"uri": peer.uri, "cert": str(cert), "key": str(key), "ca": str(ca.cert_path)}
    if opts.json:
        print_json(result)
    else:
        print(f"issued {peer.uri}: certificate {cert}, key {key} (trust {ca.cert_path})")
    return EXIT_OK


def register(sub: Any) -> None:
    pki = sub.add_parser("pki", help="development CA and certificates for mutual TLS")
    psub = pki.add_subparsers(dest="pki_command", metavar="ACTION", required=True)
    p = psub.add_parser("init", help="create a CA and a server certificate in DATA_DIR/pki")
    add_data_dir(p, existing=False)
    p.add_argument(
        "--host",
        type=host_type,
        action="append",
        default=None,
        help="a DNS name or IP the server certificate names (repeatable; default localhost, "
        "127.0.0.1)",
    )
    add_json(p)
    p.set_defaults(func=cmd_pki_init)
    p = psub.add_parser(
        "issue", help="issue a client certificate for a partner, verifier or operator"
    )
    add_data_dir(p, existing=False)
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument(
        "--name", required=True, type=name_type, help="the region code (partner) or a name"
    )
    p.add_argument(
        "--days",
        type=int_type(1, 3650),
        default=90,
        help="validity in days, 1 to 3650 (default %(default)s)",
    )
    add_json(p)
    p.set_defaults(func=cmd_pki_issue)
