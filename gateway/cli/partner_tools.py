"""``trustgw partner-tools``: onboarding a partner region with commands only.

For a partner region's engineer: make anchor and code-signing keys, the partner file, sign key
sets, key revocations and revocation batches with a threshold of the anchors, check them
offline and publish them over gRPC with the partner's certificate. For a home-province
operator: make test codes of any region and try them on the gateway. The walkthrough that uses
every one of them is docs/onboarding.md; the pure parts are :mod:`gateway.partner_kit` and
:mod:`keys.keyfile`.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from adapters.base import Colour
from adapters.fields import valid_id_number
from adapters.regions import ADAPTERS, REGION_ALGORITHMS, spec_for
from adapters.simulator import fake_holder
from gateway import partner_kit
from gateway.cli import _partner_rpc
from gateway.cli._common import (
    EXIT_OK,
    add_json,
    int_type,
    kid_type,
    path_type,
    print_json,
    read_input,
    text_type,
    time_type,
)
from gateway.cli._store import region_arg
from gateway.cli.keys import _duration as duration_type
from keys.anchors import ANCHOR_ALGORITHMS, Anchor, AnchorSet, PartnerFile
from keys.crypto import Algorithm, PrivateKey
from keys.errors import AlreadyExistsError, MalformedError, PassphraseError, UsageError
from keys.keyfile import MAX_KEY_FILE_BYTES, KeyFileRole, PartnerKeyFile, read_public_jwk
from keys.keystore import passphrase_from_env
from keys.model import Mode, Region, check_key_algorithm
from keys.pseudonym import holder_hash
from keys.signed import MAX_ENVELOPE_BYTES, Envelope
from keys.statements import (
    BATCH_ID_PATTERN,
    MAX_BATCH_ENTRIES,
    KeyRevocation,
    KeySet,
    KeySetKey,
    RevocationBatch,
    code_hash,
)
from keys.timeutil import to_iso, utcnow

MAX_LIST_FILE_BYTES = 4 * 1024 * 1024
DEFAULT_KEY_VALIDITY = timedelta(days=365)
DEFAULT_KEYSET_EXPIRY = timedelta(days=7)
DEFAULT_CODE_VALIDITY = timedelta(days=1)


# --- shared -----------------------------------------------------------------------------------


def _passphrase_for_new_keys(dev: bool) -> bytes | None:
    if dev:
        return None
    passphrase = passphrase_from_env()
    if not passphrase:
        raise PassphraseError(
            "no passphrase for the new private keys: set TRUSTGW_PASSPHRASE_FILE (or "
            "TRUSTGW_PASSPHRASE), or make development keys with --dev"
        )
    return passphrase


def _key_file(path: Path) -> PartnerKeyFile:
    data = read_input(path, "key file", MAX_KEY_FILE_BYTES)
    return PartnerKeyFile.from_bytes(data, passphrase_from_env(), str(path))


def _signers(paths: list[Path], region: str) -> list[tuple[str, PrivateKey]]:
    """The anchors of ``region`` to sign with, from their key files (decrypted)."""
    return partner_kit.anchor_signers([_key_file(p) for p in paths], region)


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` by an atomic rename (a reader sees old or new bytes)."""
    temp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    with open(temp, "xb") as handle:
        handle.write(data)
    try:
        os.replace(temp, path)
    except OSError:
        temp.unlink(missing_ok=True)
        raise


def _envelope(path: Path) -> bytes:
    return read_input(path, "statement file", MAX_ENVELOPE_BYTES)


def _print_statement(info: dict[str, Any], digest: str) -> None:
    kind = info["kind"]
    if kind == "keyset":
        print(
            f"key set version {info['version']} of region {info['region']}, "
            f"expires {info['expires']} (applied only before then)"
        )
        for key in info["keys"]:
            print(
                f"  {key['kid']}  {key['alg']}  key {key['fingerprint']}  "
                f"{key['not_before']} .. {key['not_after']}"
            )
        if not info["keys"]:
            print("  (no keys: every code of the region stops verifying)")
        if info["new_anchors"]:
            new = info["new_anchors"]
            print(
                f"  new anchors {', '.join(new['kids'])}, threshold {new['threshold']}, "
                f"fingerprint {new['fingerprint']}"
            )
    elif kind == "key_revocation":
        print(
            f"key revocation of region {info['region']}: {info['kid']} compromised at "
            f"{info['compromised_at']}"
        )
    else:
        print(
            f"revocation batch {info['batch_id']} of region {info['region']}: "
            f"{info['codes']} code(s), {info['holders']} holder(s) from {info['effective_at']}"
        )
    print(f"  digest {digest}")


def _signed(opts: argparse.Namespace, statement: KeySet | KeyRevocation | RevocationBatch) -> int:
    signers = _signers(opts.sign, statement.region)
    envelope = partner_kit.sign(statement, signers)
    _write(opts.out, envelope)
    info = partner_kit.describe(statement)
    digest = Envelope.from_bytes(envelope).digest
    kids = [kid for kid, _ in signers]
    if opts.json:
        print_json({**info, "digest": digest, "out": str(opts.out), "signed_by": kids})
        return EXIT_OK
    _print_statement(info, digest)
    print(f"  signed by {', '.join(kids)}: {opts.out}")
    return EXIT_OK


# --- keygen -----------------------------------------------------------------------------------


def _default_alg(region: str, role: KeyFileRole) -> Algorithm:
    algs = REGION_ALGORITHMS.get(region)
    if algs is None:
        if role is KeyFileRole.SIGNING:
            raise UsageError(f"region {region} has no code format known here: give --alg")
        return Algorithm.EDDSA
    usable = sorted(a for a in algs if role is KeyFileRole.SIGNING or a in ANCHOR_ALGORITHMS)
    return usable[0] if usable else Algorithm.EDDSA


def cmd_keygen(opts: argparse.Namespace) -> int:
    role = KeyFileRole(opts.role)
    alg = Algorithm(opts.alg) if opts.alg else _default_alg(opts.region, role)
    if len(set(opts.kid)) != len(opts.kid):
        raise UsageError("--kid: the same key id is given twice")
    for kid in opts.kid:
        if "/" in kid or "\\" in kid or kid.startswith("."):
            raise UsageError(f"--kid {kid!r} names the key's files: no '/', '\\' or leading '.'")
        if role is KeyFileRole.SIGNING:
            check_key_algorithm(opts.region, kid, alg, REGION_ALGORITHMS)
        elif alg not in ANCHOR_ALGORITHMS:
            raise UsageError(f"--alg {alg}: anchors are EdDSA, ES256 or SM2")
    passphrase = _passphrase_for_new_keys(opts.dev)
    for kid in opts.kid:  # refuse before writing anything
        for suffix in (".key", ".jwk", ".pem"):
            if os.path.lexists(opts.out_dir / f"{kid}{suffix}"):
                path = opts.out_dir / f"{kid}{suffix}"
                raise AlreadyExistsError(f"{path} exists: a key file is never overwritten")
    made = []
    for kid in opts.kid:
        key = PartnerKeyFile(opts.region, role, kid, PrivateKey.generate(alg), not opts.dev)
        key_path, jwk_path, pem_path = key.write(opts.out_dir, passphrase)
        made.append(
            {
                "kid": kid,
                "alg": alg.value,
                "role": role.value,
                "region": opts.region,
                "private": str(key_path),
                "jwk": str(jwk_path),
                "pem": str(pem_path),
                "encrypted": not opts.dev,
                "fingerprint": key.public_key.fingerprint(),
            }
        )
    if opts.dev:
        print(
            f"WARNING: development keys: {', '.join(m['private'] for m in made)} NOT encrypted; "
            "never use them in production",
            file=sys.stderr,
        )
    if opts.json:
        print_json(made)
        return EXIT_OK
    what = "anchor" if role is KeyFileRole.ANCHOR else "code-signing"
    for item in made:
        state = "encrypted" if item["encrypted"] else "NOT encrypted"
        print(
            f"made {what} key {item['kid']} ({item['alg']}) of region {item['region']}: "
            f"{item['private']} (private, {state}), public {item['jwk']} and {item['pem']}"
        )
    return EXIT_OK


# --- partner file -----------------------------------------------------------------------------


def cmd_partner_file(opts: argparse.Namespace) -> int:
    anchors = []
    for path in opts.anchor:
        kid, key = read_public_jwk(read_input(path, "anchor key", MAX_KEY_FILE_BYTES), str(path))
        anchors.append(Anchor(kid, key))
    if opts.threshold > len(anchors):
        raise UsageError(f"--threshold {opts.threshold} is more than the {len(anchors)} anchors")
    try:
        anchor_set = AnchorSet(tuple(anchors), opts.threshold)
    except ValueError as exc:
        raise MalformedError(f"the anchors: {exc}") from None
    spec = spec_for(opts.region) if opts.region in ADAPTERS else None
    if spec is None and None in (opts.name, opts.mode, opts.max_age):
        raise UsageError(
            f"region {opts.region} is not a known partner: give --name, --mode, --max-age"
        )
    region = Region(
        opts.region,
        opts.name or (spec.name if spec else ""),
        Mode(opts.mode) if opts.mode else (spec.mode if spec else Mode.SHOW),
        opts.max_age or (spec.max_age if spec else timedelta(days=1)),
    )
    partner = PartnerFile(region, anchor_set)
    _write(opts.out, partner.to_bytes())
    result = {**partner.to_json(), "fingerprint": anchor_set.fingerprint(), "out": str(opts.out)}
    if opts.json:
        print_json(result)
        return EXIT_OK
    print(
        f"partner file {opts.out}: region {region.code} {region.name}, mode {region.mode.value}, "
        f"max age {int(region.max_age.total_seconds())} s, {opts.threshold} of {len(anchors)} "
        "anchors"
    )
    print(f"  anchor fingerprint {result['fingerprint']}")
    print("  read it out to the operator over a second channel: trustgw partner add prints it")
    return EXIT_OK


# --- key set, key revocation, revocation batch --------------------------------------------------


def cmd_keyset(opts: argparse.Namespace) -> int:
    if (opts.version is None) == (opts.previous is None):
        raise UsageError("give --version N (the first key set: 1) or --previous FILE (n+1)")
    now = utcnow().replace(microsecond=0)  # what the statement can state (unix seconds)
    keys: list[KeySetKey] = []
    region, version = opts.region, opts.version
    if opts.previous is not None:
        previous = partner_kit.parse_statement(Envelope.from_bytes(_envelope(opts.previous)))
        if not isinstance(previous, KeySet):
            raise UsageError(f"--previous {opts.previous} is not a key set")
        if region is not None and region != previous.region:
            raise UsageError(f"--region {region}, but --previous is of region {previous.region}")
        region, version = previous.region, previous.version + 1
        keys = list(previous.keys)
    if region is None:
        raise UsageError("give --region (or --previous)")
    for kid in opts.drop or ():
        if not any(k.kid == kid for k in keys):
            raise UsageError(f"--drop {kid}: the previous key set does not list it")
        keys = [k for k in keys if k.kid != kid]
    if not opts.key and (opts.not_before or opts.not_after):
        raise UsageError("--not-before/--not-after apply to the keys given with --key")
    not_before = opts.not_before or now
    not_after = opts.not_after or not_before + DEFAULT_KEY_VALIDITY
    if not_after <= not_before:
        raise UsageError(f"--not-after {to_iso(not_after)} is not after {to_iso(not_before)}")
    for path in opts.key or ():
        kid, public = read_public_jwk(read_input(path, "key", MAX_KEY_FILE_BYTES), str(path))
        if any(k.kid == kid for k in keys):
            raise UsageError(f"key {kid} is listed already (--drop it to list it anew)")
        check_key_algorithm(region, kid, public.alg, REGION_ALGORITHMS)
        keys.append(KeySetKey(kid, public, not_before, not_after))
    expires = opts.expires or now + DEFAULT_KEYSET_EXPIRY
    if expires <= now:
        raise UsageError(f"--expires {to_iso(expires)} is not in the future")
    anchors = None
    if opts.new_anchors is not None:
        data = read_input(opts.new_anchors, "partner file", MAX_KEY_FILE_BYTES)
        anchors = partner_kit.new_anchors_from(PartnerFile.from_bytes(data), region)
    try:
        statement = KeySet(region, version, expires, tuple(keys), anchors)
    except ValueError as exc:
        raise MalformedError(f"the key set: {exc}") from None
    return _signed(opts, statement)


def cmd_revoke_key(opts: argparse.Namespace) -> int:
    return _signed(opts, KeyRevocation(opts.region, opts.kid, opts.compromised_at))


def _lines(path: Path, what: str) -> list[str]:
    """The entries of a list file: one a line; blank lines and lines starting with # skipped."""
    data = read_input(path, what, MAX_LIST_FILE_BYTES)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"the {what} {path} is not UTF-8 text") from None
    entries = [s for s in (line.strip() for line in text.splitlines()) if s and s[0] != "#"]
    if not entries:
        raise UsageError(f"the {what} {path} holds no entry (one a line)")
    return entries


def cmd_revocations(opts: argparse.Namespace) -> int:
    if BATCH_ID_PATTERN.fullmatch(opts.batch_id) is None:
        raise UsageError("--batch-id is 1 to 64 of A-Z a-z 0-9 . _ : -")
    code_ids = list(opts.code_id or ())
    if opts.code_ids is not None:
        code_ids += _lines(opts.code_ids, "code id file")
    holders = []
    if opts.holder_ids is not None:
        for number, value in enumerate(_lines(opts.holder_ids, "holder id file"), 1):
            if not valid_id_number(value):  # the value itself is personal: never shown
                raise UsageError(f"entry {number} of {opts.holder_ids} is not an ID number")
            holders.append(holder_hash(opts.region, value))
    for code_id in code_ids:
        if len(code_id) > 128 or not code_id.isprintable():
            raise UsageError(f"code id {code_id[:40]!r} is not 1 to 128 printable characters")
    codes = list(dict.fromkeys(code_hash(opts.region, c) for c in code_ids))
    holders = list(dict.fromkeys(holders))
    if not codes and not holders:
        raise UsageError("name at least one code (--code-id, --code-ids) or holder (--holder-ids)")
    if len(codes) + len(holders) > MAX_BATCH_ENTRIES:
        raise UsageError(f"a batch holds at most {MAX_BATCH_ENTRIES} entries: split it")
    effective_at = opts.effective_at or utcnow()
    batch = RevocationBatch(opts.region, opts.batch_id, effective_at, tuple(codes), tuple(holders))
    return _signed(opts, batch)


# --- verify-statement ------------------------------------------------------------------


def cmd_verify_statement(opts: argparse.Namespace) -> int:
    partner = PartnerFile.from_bytes(
        read_input(opts.partner_file, "partner file", MAX_KEY_FILE_BYTES)
    )
    checked = partner_kit.check_statement(_envelope(opts.statement), partner, opts.at or utcnow())
    info = partner_kit.describe(checked.statement)
    needed = partner.anchors.threshold
    if opts.json:
        print_json(
            {
                **info,
                "digest": checked.digest,
                "valid": True,
                "signers": sorted(checked.signers),
                "threshold": needed,
                "new_anchor_signers": sorted(checked.new_signers),
            }
        )
        return EXIT_OK
    print(
        f"valid: signed by {len(checked.signers)} of the anchors "
        f"({', '.join(sorted(checked.signers))}; {needed} needed)"
    )
    if checked.new_signers:
        print(f"  and by the new anchors {', '.join(sorted(checked.new_signers))}")
    _print_statement(info, checked.digest)
    return EXIT_OK


# --- test codes ---------------------------------------------------------------------


def cmd_code(opts: argparse.Namespace) -> int:
    key_file = _key_file(opts.signing_key)
    if opts.expires_at is not None and opts.valid_for is not None:
        raise UsageError("give --expires-at or --valid-for, not both")
    issued_at = opts.issued_at or utcnow().replace(microsecond=0)
    expires_at = opts.expires_at or issued_at + (opts.valid_for or DEFAULT_CODE_VALIDITY)
    made_id, made_name = fake_holder(random.SystemRandom())
    code = partner_kit.make_test_code(
        key_file,
        colour=Colour(opts.colour),
        issued_at=issued_at,
        expires_at=expires_at,
        holder_id=opts.holder_id or made_id,
        holder_name=opts.holder_name or made_name,
        code_id=opts.code_id,
    )
    if opts.out is not None:
        _write(opts.out, (code.code + "\n").encode("utf-8"))
    if opts.json:
        print_json({**code.to_json(), "out": None if opts.out is None else str(opts.out)})
    elif opts.out is None:
        print(code.code)
    else:
        print(
            f"made a {code.colour.value} code of region {code.region} (key {code.kid}): {opts.out}"
        )
        print(f"  issued {to_iso(code.issued_at)}, expires {to_iso(code.expires_at)}")
        print(f"  code id {code.code_id} (revocation hash {code.code_hash})")
    return EXIT_OK


# --- the parser ----------------------------------------------------------------------------------


def _sign_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sign",
        required=True,
        action="append",
        type=path_type,
        metavar="ANCHOR.key",
        help="an anchor's private key file (repeat for a threshold of them)",
    )
    p.add_argument(
        "--out", required=True, type=path_type, help="where to write the signed statement"
    )
    add_json(p)


def register(sub: Any) -> None:
    tools = sub.add_parser(
        "partner-tools",
        help="a partner's keys, partner file, signed key sets and revocations; test codes",
        description="Onboarding with commands only: docs/onboarding.md walks through every one.",
    )
    tsub = tools.add_subparsers(dest="tools_command", metavar="ACTION", required=True)

    p = tsub.add_parser("keygen", help="make anchor or code-signing keys of a region (files)")
    p.add_argument("--region", required=True, type=region_arg)
    p.add_argument(
        "--role",
        required=True,
        choices=[r.value for r in KeyFileRole],
        help="anchor: signs key sets and revocations; signing: signs codes",
    )
    p.add_argument(
        "--kid",
        required=True,
        action="append",
        type=kid_type,
        help="the key id, also the files' name (repeat for several keys)",
    )
    p.add_argument("--out-dir", required=True, type=path_type, help="where to write the files")
    p.add_argument(
        "--alg",
        choices=[Algorithm.EDDSA.value, Algorithm.ES256.value, Algorithm.SM2.value],
        help="default: the algorithm of the region's codes",
    )
    p.add_argument("--dev", action="store_true", help="development: private keys NOT encrypted")
    add_json(p)
    p.set_defaults(func=cmd_keygen)

    p = tsub.add_parser(
        "partner-file", help="the partner file an operator installs (anchors, k of n)"
    )
    p.add_argument("--region", required=True, type=region_arg)
    p.add_argument(
        "--anchor",
        required=True,
        action="append",
        type=path_type,
        metavar="ANCHOR.jwk",
        help="an anchor's public key file (repeat for each anchor)",
    )
    p.add_argument("--threshold", required=True, type=int_type(1, 16), help="k: signatures needed")
    p.add_argument("--out", required=True, type=path_type)
    p.add_argument("--name", type=text_type(64), help="default: the region's name")
    p.add_argument("--mode", choices=[m.value for m in Mode], help="default: the region's mode")
    p.add_argument("--max-age", type=duration_type, help="default: the region's, e.g. 1d")
    add_json(p)
    p.set_defaults(func=cmd_partner_file)

    p = tsub.add_parser("keyset", help="sign a key set: version 1, or the previous one's n+1")
    p.add_argument("--region", type=region_arg, help="(taken from --previous when given)")
    p.add_argument("--version", type=int_type(1, 2**53 - 1), help="for the first key set: 1")
    p.add_argument(
        "--previous", type=path_type, help="the last key set: version n+1, its keys kept"
    )
    p.add_argument(
        "--key",
        action="append",
        type=path_type,
        metavar="SIGNING.jwk",
        help="a code-signing key to list (repeatable)",
    )
    p.add_argument("--not-before", type=time_type, help="validity of the --key keys (default now)")
    p.add_argument("--not-after", type=time_type, help="(default --not-before + 365 days)")
    p.add_argument(
        "--drop",
        action="append",
        type=kid_type,
        metavar="KID",
        help="a key of --previous to list no more: its codes stop verifying",
    )
    p.add_argument(
        "--new-anchors",
        type=path_type,
        metavar="PARTNER.json",
        help="rotate the anchors to this partner file's (sign with old and new)",
    )
    p.add_argument("--expires", type=time_type, help="apply before (default now + 7 days)")
    _sign_options(p)
    p.set_defaults(func=cmd_keyset)

    p = tsub.add_parser("revoke-key", help="sign a key revocation with a compromise time")
    p.add_argument("--region", required=True, type=region_arg)
    p.add_argument("--kid", required=True, type=kid_type)
    p.add_argument(
        "--compromised-at",
        required=True,
        type=time_type,
        help="the earliest moment the key may have been in other hands",
    )
    _sign_options(p)
    p.set_defaults(func=cmd_revoke_key)

    p = tsub.add_parser("revocations", help="sign a batch revoking codes and holders")
    p.add_argument("--region", required=True, type=region_arg)
    p.add_argument("--batch-id", required=True, type=text_type(64), help="unique per region")
    p.add_argument("--effective-at", type=time_type, help="(default now)")
    p.add_argument(
        "--code-id", action="append", type=text_type(128), help="a code's id (repeatable)"
    )
    p.add_argument("--code-ids", type=path_type, metavar="FILE", help="code ids, one a line")
    p.add_argument(
        "--holder-ids",
        type=path_type,
        metavar="FILE",
        help="holders' ID numbers, one a line (hashed here; never written out)",
    )
    _sign_options(p)
    p.set_defaults(func=cmd_revocations)

    p = tsub.add_parser("verify-statement", help="check a signed statement offline against anchors")
    p.add_argument("--partner-file", required=True, type=path_type, help="the region's anchors")
    p.add_argument("--at", type=time_type, help="judge expiry at this time (default now)")
    add_json(p)
    p.add_argument("statement", type=path_type, metavar="STATEMENT", help="the signed file")
    p.set_defaults(func=cmd_verify_statement)

    p = tsub.add_parser("code", help="make a test code of a region, signed with a signing key file")
    p.add_argument("--signing-key", required=True, type=path_type, metavar="SIGNING.key")
    p.add_argument("--colour", choices=[c.value for c in Colour], default=Colour.GREEN.value)
    p.add_argument("--issued-at", type=time_type, help="(default now)")
    p.add_argument("--expires-at", type=time_type, help="(default --issued-at + --valid-for)")
    p.add_argument("--valid-for", type=duration_type, help="(default 1d)")
    p.add_argument(
        "--holder-id", type=text_type(18), help="an 18-character ID number (default random)"
    )
    p.add_argument("--holder-name", type=text_type(64), help="(default a random name)")
    p.add_argument("--code-id", type=text_type(128), help="(default random; derived regions: none)")
    p.add_argument("--out", type=path_type, help="write the code here (default: print it)")
    add_json(p)
    p.set_defaults(func=cmd_code)

    _partner_rpc.register(tsub)
