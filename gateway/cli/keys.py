"""``trustgw keys``: the gateway's keys and partners' code-signing keys."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from gateway.cli._common import (
    EXIT_OK,
    add_json,
    kid_type,
    path_type,
    print_json,
    print_table,
    read_input,
    time_type,
)
from gateway.cli._keys import gateway_keys
from gateway.cli._store import OPERATOR, add_store_args, connect, region_arg
from keys import gatewaykeys
from keys.crypto import Algorithm
from keys.errors import GatewayError, UsageError
from keys.jsonutil import loads_strict
from keys.keylabels import labelled
from keys.keystore import (
    DEFAULT_ACTIVATION_DELAY,
    GATEWAY_ALGORITHMS,
    GatewayKeys,
    KeyRole,
    passphrase_from_env,
)
from keys.model import HOME_REGION
from keys.store import Store
from keys.timeutil import to_iso, utcnow

MAX_KEY_FILE_BYTES = 64 * 1024
_T = TypeVar("_T")

# --- keys -------------------------------------------------------------------------------------


async def _all_keys(opts: argparse.Namespace) -> tuple[GatewayKeys, list[Any]]:
    store = await connect(opts)
    try:
        return await gateway_keys(store, opts.data_dir), await store.list_keys()
    finally:
        await store.close()


async def _gateway_keys(opts: argparse.Namespace) -> GatewayKeys:
    return (await _all_keys(opts))[0]


def cmd_keys_list(opts: argparse.Namespace) -> int:
    now = opts.at or utcnow()
    key_dir, registry_keys = asyncio.run(_all_keys(opts))
    rows: list[dict[str, Any]] = [
        {
            "owner": "gateway",
            "role": info.role.value,
            "kid": info.kid,
            "alg": str(info.public_key.alg),
            "not_before": to_iso(info.not_before),
            "not_after": to_iso(info.not_after),
            "status": label.value,
            **({"revoked_at": to_iso(info.revoked_at)} if info.revoked_at else {}),
        }
        for info, label in labelled(key_dir.public_keys(), now)
    ]
    for key in registry_keys:
        rows.append(
            {
                "owner": key.region,
                "role": "code-signing",
                "kid": key.kid,
                "alg": str(key.alg),
                "not_before": to_iso(key.not_before),
                "not_after": to_iso(key.not_after),
                "status": key.status.value,
                **({"revoked_at": to_iso(key.revoked_at)} if key.revoked_at else {}),
            }
        )
    if opts.json:
        print_json(rows)
        return EXIT_OK
    columns = ("owner", "role", "kid", "alg", "not_before", "not_after", "status")
    print_table(columns, [[row[c] for c in columns] for row in rows])  # kids are never cut
    return EXIT_OK


def _trust_from_key_dir(key_dir: GatewayKeys, now: datetime) -> Any:
    from gateway.tokens import GatewayTrust

    return GatewayTrust.from_key_infos(key_dir.public_keys(), now=now)


def cmd_keys_export(opts: argparse.Namespace) -> int:
    key_dir = asyncio.run(_gateway_keys(opts))
    trust = _trust_from_key_dir(key_dir, opts.at or utcnow())
    text = json.dumps(trust.to_json(), indent=2) + "\n"
    if opts.out:
        Path(opts.out).write_text(text)
        print(f"wrote the gateway's public keys to {opts.out}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


async def _keys_add(opts: argparse.Namespace) -> dict[str, Any]:
    from adapters.regions import REGION_ALGORITHMS
    from keys.crypto import load_public_key
    from keys.errors import NotFoundError
    from keys.keywindow import default_not_before
    from keys.model import RegionKey, check_key_algorithm
    from keys.registry import KeyRegistry

    raw = read_input(opts.public_key, "public key file", MAX_KEY_FILE_BYTES)
    material: Any = raw
    if raw.lstrip().startswith(b"{"):
        try:
            material = loads_strict(raw, max_bytes=MAX_KEY_FILE_BYTES, max_depth=8)
        except GatewayError as exc:
            raise UsageError(f"{opts.public_key}: {exc}") from None
    # A raw SM2 point (04 || X || Y) says no algorithm: the region's says it (crypto.md §1.2).
    raw_sm2 = len(raw) == 65 and raw[0] == 0x04
    sm2_only = REGION_ALGORITHMS.get(opts.region) == frozenset({Algorithm.SM2})
    public_key = load_public_key(material, Algorithm.SM2 if raw_sm2 and sm2_only else None)
    kid = opts.kid or public_key.fingerprint()
    check_key_algorithm(opts.region, kid, public_key.alg, REGION_ALGORITHMS)
    now = utcnow()
    store = await connect(opts)
    try:
        trust = await store.region_trust(opts.region)
        if trust.region is None:
            raise NotFoundError(f"region {opts.region} is not registered", region=opts.region)
        stored = next((k for k in trust.keys if k.kid == kid), None)
        defaults = opts.not_before is None and opts.not_after is None
        if defaults and stored is not None and stored.public_key == public_key:
            key, inserted = stored, False  # a retry: the defaults would differ by the clock
        else:
            # Not "now": the partner's codes issued before the key was added must verify too.
            not_before = opts.not_before or default_not_before(trust.region, now)
            not_before = not_before.replace(microsecond=0)
            start = opts.not_before or now  # the year runs from the start given, or from now
            not_after = opts.not_after or start.replace(microsecond=0) + timedelta(days=365)
            if not_after <= not_before:
                raise UsageError(
                    f"--not-after {to_iso(not_after)} is not after {to_iso(not_before)}"
                )
            key = RegionKey(opts.region, kid, public_key, not_before, not_after)
            inserted = await KeyRegistry(store).add_key(key, actor=OPERATOR, now=now)
    finally:
        await store.close()
    return {
        "region": key.region,
        "kid": kid,
        "alg": str(key.alg),
        "not_before": to_iso(key.not_before),
        "not_after": to_iso(key.not_after),
        "inserted": inserted,
    }


def cmd_keys_add(opts: argparse.Namespace) -> int:
    result = asyncio.run(_keys_add(opts))
    if opts.json:
        print_json(result)
    else:
        verb = "added" if result["inserted"] else "already present:"
        print(f"{verb} key {result['kid']} ({result['alg']}) for region {result['region']}")
    return EXIT_OK


async def _keys_update(opts: argparse.Namespace) -> Any:
    from keys.registry import KeyRegistry

    store = await connect(opts)
    try:
        return await KeyRegistry(store).update_key_window(
            opts.region, opts.kid, opts.not_before, opts.not_after, actor=OPERATOR, now=utcnow()
        )
    finally:
        await store.close()


def cmd_keys_update(opts: argparse.Namespace) -> int:
    before, after = asyncio.run(_keys_update(opts))
    result = {
        "region": after.region,
        "kid": after.kid,
        "before": {"not_before": to_iso(before.not_before), "not_after": to_iso(before.not_after)},
        "after": {"not_before": to_iso(after.not_before), "not_after": to_iso(after.not_after)},
        "changed": before != after,
    }
    if opts.json:
        print_json(result)
    elif result["changed"]:
        print(
            f"key {after.kid} of region {after.region}: valid from {to_iso(after.not_before)} "
            f"to {to_iso(after.not_after)} (was {to_iso(before.not_before)} to "
            f"{to_iso(before.not_after)})"
        )
    else:
        print(f"key {after.kid} of region {after.region}: window unchanged")
    return EXIT_OK


async def _keys_revoke(opts: argparse.Namespace) -> Any:
    from keys.registry import KeyRegistry

    store = await connect(opts)
    try:
        registry = KeyRegistry(store)
        await registry.load()
        return await registry.revoke_key(
            opts.region, opts.kid, opts.at or utcnow(), actor=OPERATOR, now=utcnow()
        )
    finally:
        await store.close()


async def _withdraw(opts: argparse.Namespace, now: datetime) -> dict[str, Any]:
    from keys.errors import NotFoundError

    async def change(store: Store) -> dict[str, Any]:
        keyring = await gateway_keys(store, opts.data_dir)
        roles = [k.role for k in keyring.public_keys() if k.kid == opts.kid]
        role = KeyRole(opts.role) if opts.role else (roles[0] if roles else None)
        if role is None:
            raise NotFoundError(
                f"the gateway has no key {opts.kid}: `trustgw keys list` shows its keys",
                region=HOME_REGION,
            )
        withdrawn, replacement = await gatewaykeys.withdraw(
            store, passphrase_from_env(), role, opts.kid, opts.at or now, now, actor=OPERATOR
        )
        return {
            "owner": "gateway",
            "role": withdrawn.role.value,
            "kid": withdrawn.kid,
            "status": withdrawn.status.value,
            "revoked_at": to_iso(withdrawn.revoked_at or now),
            "replacement": None
            if replacement is None
            else {
                "kid": replacement.kid,
                "alg": replacement.public_key.alg.value,
                "not_before": to_iso(replacement.not_before),
                "not_after": to_iso(replacement.not_after),
            },
        }

    return await _in_keyring(opts, change)


def cmd_keys_revoke(opts: argparse.Namespace) -> int:
    gateway_key = opts.role is not None or opts.region == HOME_REGION
    if (opts.region is None and opts.role is None) or (
        opts.role is not None and opts.region not in (None, HOME_REGION)
    ):
        raise UsageError(
            "give --region REGION for a partner's key, or --role ROLE for one of the gateway's own "
            f"keys (--region {HOME_REGION} also names the gateway's)"
        )
    if gateway_key:
        try:
            result = asyncio.run(_withdraw(opts, utcnow()))
        except ValueError as exc:  # a compromise time in the future
            raise UsageError(str(exc)) from None
        if opts.json:
            print_json(result)
            return EXIT_OK
        print(
            f"withdrew gateway {result['role']} key {result['kid']} from {result['revoked_at']}: "
            "it signs nothing more; verifiers refuse what it signed from then on"
        )
        if result["replacement"]:
            new = result["replacement"]
            print(f"  replaced by {result['role']} key {new['kid']} ({new['alg']}), signing now")
        print("  next: trustgw keys export --out FILE, and hand the file to offline verifiers")
        return EXIT_OK
    key = asyncio.run(_keys_revoke(opts))
    if opts.json:
        print_json({"owner": key.region, "kid": key.kid, "revoked_at": to_iso(key.revoked_at)})
        return EXIT_OK
    print(f"revoked key {key.kid} of region {key.region} from {to_iso(key.revoked_at)}")
    return EXIT_OK


async def _in_keyring(opts: argparse.Namespace, change: Callable[[Store], Awaitable[_T]]) -> _T:
    """Run a keyring ``change`` on the command's store (importing ``DATA_DIR/keys`` first if the
    database has no keyring yet): in force on every replica at its next reload."""
    store = await connect(opts)
    try:
        await gateway_keys(store, opts.data_dir)
        return await change(store)
    finally:
        await store.close()


_DURATION = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,6})?)([smhd]?)")


def _duration(value: str) -> timedelta:
    """A duration like 90s, 15m, 1h, 2d (ASCII digits, at most 100 years)."""
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
    match = _DURATION.fullmatch(value.strip())
    seconds = float(match.group(1)) * units[match.group(2)] if match else -1.0
    if not 0 <= seconds <= 100 * 365 * 86400:
        raise argparse.ArgumentTypeError(
            f"{value[:40]!r} is not a duration like 90s, 15m, 1h, 2d (at most 100 years)"
        )
    return timedelta(seconds=seconds)


def cmd_keys_rotate(opts: argparse.Namespace) -> int:
    if opts.validity <= timedelta(0):
        raise UsageError("--validity must be longer than 0")
    now = utcnow()
    info = asyncio.run(
        _in_keyring(
            opts,
            lambda store: gatewaykeys.rotate(
                store,
                passphrase_from_env(),
                KeyRole(opts.role),
                now,
                activate_at=now + opts.activate_in,
                validity=opts.validity,
                algorithm=Algorithm(opts.algorithm) if opts.algorithm else None,
                actor=OPERATOR,
            ),
        )
    )
    result = {
        "role": info.role.value,
        "kid": info.kid,
        "alg": info.public_key.alg.value,
        "not_before": to_iso(info.not_before),
        "not_after": to_iso(info.not_after),
    }
    if opts.json:
        print_json(result)
    else:
        print(
            f"new {result['role']} key {result['kid']} ({result['alg']}): published now, "
            f"signs from {result['not_before']}; the previous key stays published for "
            "verification"
        )
    return EXIT_OK


def _add_status_at(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--at",
        type=time_type,
        help="show each gateway key's status (pending, active, retired, revoked) as of this time "
        "(default now)",
    )


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="the gateway's keys and partners' signing keys")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = ksub.add_parser("list", help="list every key the gateway holds or trusts")
    add_store_args(p)
    _add_status_at(p)
    add_json(p)
    p.set_defaults(func=cmd_keys_list)
    p = ksub.add_parser("export", help="write the gateway's public keys (trust file for verifiers)")
    add_store_args(p)
    _add_status_at(p)
    p.add_argument("--out", type=path_type, help="file to write (default: standard output)")
    p.set_defaults(func=cmd_keys_export)
    p = ksub.add_parser("add", help="register a partner region's code-signing key")
    add_store_args(p)
    p.add_argument("--region", required=True, type=region_arg, help="6-digit region code")
    p.add_argument(
        "--public-key",
        required=True,
        type=path_type,
        help="PEM, DER, JWK (JSON) or certificate file",
    )
    p.add_argument(
        "--kid",
        type=kid_type,
        help="key id as the partner's codes name it: 1 to 128 printable ASCII characters, "
        "no space (default: fingerprint)",
    )
    p.add_argument(
        "--not-before",
        type=time_type,
        help="start of validity (default: now minus the region's maximum code age, so that the "
        "partner's codes issued before the key was added verify)",
    )
    p.add_argument("--not-after", type=time_type, help="end of validity (default now + 1 year)")
    add_json(p)
    p.set_defaults(func=cmd_keys_add)
    p = ksub.add_parser(
        "update", help="correct the validity window of a partner key added by an operator"
    )
    add_store_args(p)
    p.add_argument("--region", required=True, type=region_arg, help="6-digit region code")
    p.add_argument("--kid", required=True, type=kid_type)
    p.add_argument("--not-before", required=True, type=time_type, help="new start of validity")
    p.add_argument("--not-after", type=time_type, help="new end of validity (default: kept)")
    add_json(p)
    p.set_defaults(func=cmd_keys_update)
    p = ksub.add_parser(
        "revoke",
        help="revoke a partner's key, or withdraw one of the gateway's own, from a compromise time",
    )
    add_store_args(p)
    p.add_argument(
        "--region", type=region_arg, help=f"a partner's region ({HOME_REGION}: the gateway)"
    )
    p.add_argument(
        "--role",
        choices=[r.value for r in KeyRole],
        help="withdraw the gateway's own key of this role (instead of --region)",
    )
    p.add_argument("--kid", required=True, type=kid_type)
    p.add_argument(
        "--at",
        "--compromised-at",
        dest="at",
        type=time_type,
        help="compromise time: the earliest moment the key may have been in other hands "
        "(default now)",
    )
    add_json(p)
    p.set_defaults(func=cmd_keys_revoke)
    p = ksub.add_parser("rotate", help="rotate one of the gateway's own keys")
    add_store_args(p)
    p.add_argument("--role", required=True, choices=[r.value for r in KeyRole])
    p.add_argument(
        "--activate-in",
        type=_duration,
        default=DEFAULT_ACTIVATION_DELAY,
        help="publish now, sign from this much later so that replicas and verifiers have it "
        "first (default 5m; 0 only in an emergency: signs once this host's watchers have it)",
    )
    p.add_argument("--validity", type=_duration, default=timedelta(days=365), help="(default 365d)")
    p.add_argument(
        "--algorithm",
        choices=sorted(a.value for a in GATEWAY_ALGORITHMS),
        help="the new key's algorithm (default: that of the role's current key; name another, "
        "e.g. SM2, to change the deployment's algorithm by this rotation)",
    )
    add_json(p)
    p.set_defaults(func=cmd_keys_rotate)
