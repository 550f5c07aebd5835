"""``trustgw pki``: a development CA and the certificates for mutual TLS, through their life.

``init`` makes the CA and the server certificate; ``issue`` issues (or re-issues) a server or
client certificate; ``renew`` re-issues one with the same names; ``list`` / ``show`` print each
certificate's subject, names, role, serial, fingerprint, expiry and days left. Re-issuing a name
replaces its files atomically and keeps the previous pair in ``pki/retired/`` (docs/operations.md
"TLS certificates").
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from pathlib import Path
from typing import Any

from gateway.cli._common import (
    EXIT_OK,
    add_data_dir,
    add_json,
    data_dir_type,
    int_type,
    path_type,
    print_json,
    print_table,
    text_type,
)
from gateway.denylist import (
    DENY_FILE,
    DeniedCertificate,
    DenyList,
    normal_fingerprint,
    normal_serial,
)
from gateway.pki import (
    CA_DAYS,
    CLIENT_DAYS,
    DEFAULT_HOSTS,
    MAX_DAYS,
    SERVER_DAYS,
    CertInfo,
    DevCA,
    Issued,
    Peer,
    Role,
    read_certificate,
)
from gateway.runtime.datadir import DataDir
from keys.errors import AlreadyExistsError, ConfigurationError, UsageError
from keys.timeutil import to_iso, utcnow

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _is_dns_name(value: str) -> bool:
    """RFC 1123 host name (ASCII; an IDN in its xn-- form), optionally ``*.`` leftmost."""
    labels = value.removeprefix("*.").split(".")
    return len(value) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def host_type(value: str) -> str:
    """A DNS name or IP address the server certificate names."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _is_dns_name(value):
        raise argparse.ArgumentTypeError(
            f"{value[:60]!r} is not a DNS name (ASCII letters, digits and '-' in labels of at "
            "most 63, an IDN in its xn-- form) or an IP address"
        )
    return value


def ip_type(value: str) -> str:
    """An IPv4 or IPv6 address the server certificate names."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value[:60]!r} is not an IP address") from None


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def name_type(value: str) -> str:
    """A certificate's name: 1 to 64 of ``A-Z a-z 0-9 . _ -`` (it names a URI and a file)."""
    if _NAME.fullmatch(value) is None or len(value) > 64:
        raise argparse.ArgumentTypeError(
            f"{value[:60]!r} is not 1 to 64 of A-Z a-z 0-9 . _ - (starting with a letter or digit)"
        )
    return value


def _ca(data_dir: Path) -> DevCA:
    ca = DevCA(DataDir(data_dir).pki)
    if not ca.exists:
        raise ConfigurationError(
            f"there is no CA in {ca.directory}: make one with trustgw pki init --data-dir "
            f"{data_dir} (or trustgw init)"
        )
    return ca


def _hosts(opts: argparse.Namespace) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*(opts.host or ()), *(opts.ip or ())]))


def _issued_json(issued: Issued, ca: DevCA, now: Any) -> dict[str, Any]:
    info = issued.info
    replaced = issued.replaced
    return {
        "name": info.name,
        "role": info.role,
        "uri": info.uri,
        "cert": str(issued.cert_path),
        "key": str(issued.key_path),
        "ca": str(ca.cert_path),
        "dns_names": list(info.dns_names),
        "ip_addresses": list(info.ip_addresses),
        "serial": info.serial,
        "fingerprint_sha256": info.fingerprint,
        "not_after": to_iso(info.not_after),
        "days_left": info.days_left(now),
        "clamped_to_ca": issued.clamped,
        "replaced": None
        if replaced is None
        else {
            "serial": replaced.serial,
            "fingerprint_sha256": replaced.fingerprint,
            "not_after": to_iso(replaced.not_after),
            "kept_as": str(replaced.path),
        },
    }


def _print_issued(result: dict[str, Any], what: str) -> None:
    names = [
        *(f"DNS:{n}" for n in result["dns_names"]),
        *(f"IP:{n}" for n in result["ip_addresses"]),
    ]
    if result["uri"]:
        names.append(f"URI:{result['uri']}")
    print(f"issued {what} {result['cert']} (key {result['key']})")
    print(f"  names {', '.join(names) or '-'}")
    print(f"  serial {result['serial']}")
    print(f"  sha256 {result['fingerprint_sha256']}")
    print(f"  not after {result['not_after']} ({result['days_left']} days)")
    if result["clamped_to_ca"]:
        print("  cut to the CA's own expiry: renew the CA (trustgw pki renew ... ca)")
    old = result["replaced"]
    if old is not None:
        print(
            f"  replaced serial {old['serial']} (kept as {old['kept_as']}; it stays valid until "
            f"{old['not_after']})"
        )
    if result["role"] == "server":
        print("  restart the gateway to serve it (systemctl restart trustgw drains first)")


def cmd_pki_init(opts: argparse.Namespace) -> int:
    now = utcnow()
    ca = DevCA(DataDir(opts.data_dir).pki)
    hosts = _hosts(opts)
    created = not ca.exists
    if created:
        ca = DevCA.create(ca.directory, now, days=opts.ca_days)
    elif not hosts:
        info = ca.info()
        raise AlreadyExistsError(
            f"{ca.directory} already holds a CA (serial {info.serial}, not after "
            f"{to_iso(info.not_after)}); to re-issue the server certificate run: trustgw pki "
            f"issue --data-dir {opts.data_dir} --role server --host NAME [--ip ADDRESS]"
        )
    issued = ca.issue_cert(
        "server", server=True, now=now, days=opts.days, hosts=hosts or DEFAULT_HOSTS
    )
    result = _issued_json(issued, ca, now)
    ca_info = ca.info()
    result.update(
        server_cert=result["cert"],
        server_key=result["key"],
        ca_created=created,
        ca_serial=ca_info.serial,
        ca_not_after=to_iso(ca_info.not_after),
    )
    if opts.json:
        print_json(result)
        return EXIT_OK
    if created:
        print(
            f"created a development CA {ca.cert_path}: serial {ca_info.serial}, not after "
            f"{to_iso(ca_info.not_after)}"
        )
    else:
        print(f"the CA {ca.cert_path} exists: re-issued the server certificate")
    _print_issued(result, "server certificate")
    return EXIT_OK


def cmd_pki_issue(opts: argparse.Namespace) -> int:
    now = utcnow()
    hosts = _hosts(opts)
    if opts.role == "server":
        if not hosts:
            raise UsageError("a server certificate needs --host NAME and/or --ip ADDRESS")
        ca = _ca(opts.data_dir)
        name = opts.name or "server"
        issued = ca.issue_cert(name, server=True, now=now, days=opts.days, hosts=hosts)
        what = "server certificate"
    else:
        role = Role(opts.role)
        if hosts:
            raise UsageError(
                f"--host/--ip name a server; a {role.value} certificate has a role URI"
            )
        if opts.name is None:
            raise UsageError(f"a {role.value} certificate needs --name")
        peer = Peer.from_uri(f"trustgw://{role.value}/{opts.name}")
        if peer is None:
            hint = "a 6-digit region code" if role is Role.PARTNER else "1-64 characters, no '/'"
            raise UsageError(f"--name for a {role.value} must be {hint}")
        ca = _ca(opts.data_dir)
        issued = ca.issue_cert(f"{role.value}-{opts.name}", uri=peer.uri, now=now, days=opts.days)
        what = f"{role.value} certificate"
    result = _issued_json(issued, ca, now)
    if opts.json:
        print_json(result)
    else:
        _print_issued(result, what)
        print(f"  peers trust {ca.cert_path}")
    return EXIT_OK


def cmd_pki_renew(opts: argparse.Namespace) -> int:
    now = utcnow()
    ca = _ca(opts.data_dir)
    issued = ca.renew(opts.certificate, now, opts.days)
    result = _issued_json(issued, ca, now)
    if opts.json:
        print_json(result)
        return EXIT_OK
    if opts.certificate == "ca":
        print(f"renewed the CA certificate {issued.cert_path} (same key and name)")
        print(f"  serial {result['serial']}, not after {result['not_after']}")
        print("  hand the new ca.pem to every peer; what the CA issued keeps verifying")
        return EXIT_OK
    _print_issued(result, "renewed certificate")
    return EXIT_OK


def serial_type(value: str) -> str:
    """A certificate serial number in hex (``pki list``'s form, colons allowed)."""
    try:
        return normal_serial(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def fingerprint_type(value: str) -> str:
    """A SHA-256 certificate fingerprint in hex (``pki list``'s form, colons allowed)."""
    try:
        return normal_fingerprint(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _deny(opts: argparse.Namespace, entry: DeniedCertificate) -> int:
    path = DataDir(opts.data_dir).pki / DENY_FILE
    before = DenyList.load(path)
    after = before.with_entry(entry)
    if after is not before:
        after.save(path)
    result = {"deny_list": str(path), "added": after is not before, **entry.to_json()}
    if opts.json:
        print_json(result)
        return EXIT_OK
    what = " ".join(
        f"{label} {value}"
        for label, value in (("serial", entry.serial), ("sha256", entry.fingerprint))
        if value
    )
    verb = "denied" if result["added"] else "already denied"
    print(f"{verb}: {entry.name or 'client certificate'} ({what}) in {path}")
    print("  a running gateway refuses it after SIGHUP: systemctl reload trustgw")
    return EXIT_OK


def cmd_pki_deny(opts: argparse.Namespace) -> int:
    entry = DeniedCertificate(opts.serial, opts.fingerprint, None, opts.reason or "", utcnow())
    return _deny(opts, entry)


def cmd_pki_revoke(opts: argparse.Namespace) -> int:
    ca = _ca(opts.data_dir)
    path = ca.directory / f"{opts.certificate}.pem"
    if not path.is_file():
        raise UsageError(
            f"no certificate {opts.certificate!r} in {ca.directory} (see trustgw pki list; "
            "a certificate from elsewhere: pki deny --serial or --fingerprint)"
        )
    info = read_certificate(path)
    if info.role not in {r.value for r in Role}:
        raise UsageError(
            f"{opts.certificate} is a {info.role} certificate: only client certificates are "
            "revoked (re-issue a server certificate with pki issue --role server)"
        )
    entry = DeniedCertificate(info.serial, info.fingerprint, info.name, opts.reason or "", utcnow())
    return _deny(opts, entry)


def _names(info: CertInfo) -> str:
    names = [*info.dns_names, *info.ip_addresses, *([info.uri] if info.uri else [])]
    return ",".join(names) or "-"


def cmd_pki_list(opts: argparse.Namespace) -> int:
    now = utcnow()
    certs = _ca(opts.data_dir).certificates(retired=opts.retired)
    if opts.json:
        print_json([c.to_json(now) for c in certs])
        return EXIT_OK
    rows = [
        [
            c.name + (" (retired)" if c.retired else ""),
            c.role,
            c.subject,
            _names(c),
            c.serial,
            c.fingerprint,
            to_iso(c.not_after),
            c.days_left(now) if now < c.not_after else "EXPIRED",
        ]
        for c in certs
    ]
    print_table(
        ("name", "role", "subject", "names", "serial", "sha256", "not_after", "days_left"), rows
    )
    return EXIT_OK


def cmd_pki_show(opts: argparse.Namespace) -> int:
    now = utcnow()
    path: Path = opts.certificate
    if opts.data_dir is not None and not DataDir(opts.data_dir).pki.is_dir():
        raise UsageError(f"--data-dir {opts.data_dir} has no pki/ directory")
    if opts.data_dir is not None and len(path.parts) == 1:
        candidate = DataDir(opts.data_dir).pki / f"{path.name}.pem"
        if candidate.is_file():
            path = candidate
    info = read_certificate(path)
    result = info.to_json(now)
    if opts.json:
        print_json(result)
        return EXIT_OK
    print(f"{info.path}")
    for label, value in [
        ("subject", info.subject),
        ("issuer", info.issuer),
        ("role", info.role),
        ("names", _names(info)),
        ("serial", info.serial),
        ("sha256", info.fingerprint),
        ("not before", to_iso(info.not_before)),
        ("not after", f"{to_iso(info.not_after)} ({result['days_left']} days left)"),
    ]:
        print(f"  {label:11} {value}")
    if result["expired"]:
        print("  EXPIRED")
    return EXIT_OK


def _days(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--days",
        type=int_type(1, MAX_DAYS),
        default=None,
        help=f"validity in days, 1 to {MAX_DAYS} (default {default}; never past the CA's own)",
    )


def _host_options(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--host",
        type=host_type,
        action="append",
        help=f"a DNS name (or IP) the server certificate names (repeatable{default})",
    )
    parser.add_argument(
        "--ip", type=ip_type, action="append", help="an IP address it names (repeatable)"
    )


def register(sub: Any) -> None:
    pki = sub.add_parser("pki", help="development CA and certificates for mutual TLS")
    psub = pki.add_subparsers(dest="pki_command", metavar="ACTION", required=True)
    p = psub.add_parser(
        "init",
        help="create a CA and a server certificate in DATA_DIR/pki (with --host/--ip on an "
        "existing CA: re-issue the server certificate)",
    )
    add_data_dir(p, existing=False)
    _host_options(p, "; default localhost, 127.0.0.1")
    _days(p, f"{SERVER_DAYS}")
    p.add_argument(
        "--ca-days",
        type=int_type(1, MAX_DAYS),
        default=CA_DAYS,
        help="validity of a new CA in days (default %(default)s)",
    )
    add_json(p)
    p.set_defaults(func=cmd_pki_init)

    p = psub.add_parser(
        "issue",
        help="issue (or re-issue) a server certificate or a partner, verifier or operator "
        "client certificate",
    )
    add_data_dir(p, existing=False)
    p.add_argument("--role", required=True, choices=["server", *(r.value for r in Role)])
    p.add_argument(
        "--name",
        type=name_type,
        help="the region code (partner) or a name (verifier, operator; server: the file name, "
        "default 'server', the one serve uses)",
    )
    _host_options(p, "; a server needs at least one --host or --ip")
    _days(p, f"{SERVER_DAYS} for a server, {CLIENT_DAYS} for a client")
    add_json(p)
    p.set_defaults(func=cmd_pki_issue)

    p = psub.add_parser(
        "renew", help="re-issue a certificate with the same names and role (or 'ca': the CA)"
    )
    add_data_dir(p, existing=False)
    p.add_argument(
        "certificate",
        type=name_type,
        metavar="NAME",
        help="as trustgw pki list names it: ca, server, verifier-checkpoint-1, partner-110000 ...",
    )
    _days(p, f"{CA_DAYS} for the CA, {SERVER_DAYS} for a server, {CLIENT_DAYS} for a client")
    add_json(p)
    p.set_defaults(func=cmd_pki_renew)

    p = psub.add_parser(
        "list", help="every certificate in DATA_DIR/pki: role, names, serial, expiry, days left"
    )
    add_data_dir(p, existing=False)
    p.add_argument(
        "--retired", action="store_true", help="also the replaced ones kept in pki/retired/"
    )
    add_json(p)
    p.set_defaults(func=cmd_pki_list)

    p = psub.add_parser(
        "deny",
        help="refuse a client certificate by serial or SHA-256 fingerprint (DATA_DIR/pki/"
        "denied.json; a running gateway after SIGHUP)",
    )
    add_data_dir(p, existing=False)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--serial", type=serial_type, help="the serial in hex (pki list)")
    which.add_argument(
        "--fingerprint", type=fingerprint_type, help="the SHA-256 fingerprint in hex (pki list)"
    )
    p.add_argument("--reason", type=text_type(), help="why (kept in the deny list)")
    add_json(p)
    p.set_defaults(func=cmd_pki_deny)

    p = psub.add_parser(
        "revoke",
        help="refuse a client certificate this CA issued, by name (its serial and fingerprint "
        "join the deny list)",
    )
    add_data_dir(p, existing=False)
    p.add_argument(
        "certificate",
        type=name_type,
        metavar="NAME",
        help="as trustgw pki list names it: verifier-checkpoint-1, partner-110000 ...",
    )
    p.add_argument("--reason", type=text_type(), help="why (kept in the deny list)")
    add_json(p)
    p.set_defaults(func=cmd_pki_revoke)

    p = psub.add_parser("show", help="one certificate: a name in DATA_DIR/pki, or any PEM file")
    p.add_argument(
        "--data-dir",
        type=data_dir_type,
        help="look NAME up in this data directory's pki/",
    )
    p.add_argument(
        "certificate", type=path_type, metavar="CERT", help="a name (with --data-dir) or a file"
    )
    add_json(p)
    p.set_defaults(func=cmd_pki_show)
