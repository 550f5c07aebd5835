"""``trustgw keys``: the gateway's keys and partners' code-signing keys."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from gateway.cli._common import (
    EXIT_OK,
    UsageError,
    add_data_dir,
    add_json,
    print_json,
    time_type,
)
from gateway.cli._registry import OPERATOR
from keys.keystore import DEFAULT_ACTIVATION_DELAY, KeyDirectory, passphrase_from_env
from keys.timeutil import to_iso, utcnow

# --- keys -------------------------------------------------------------------------------------


async def _registry_keys(data_dir: Path) -> list[Any]:
    from keys.store import SQLiteStore

    store = await SQLiteStore.open(data_dir / "trustgw.db")
    try:
        return await store.list_keys()
    finally:
        await store.close()


def cmd_keys_list(opts: argparse.Namespace) -> int:
    key_dir = KeyDirectory.open(opts.data_dir / "keys", passphrase=passphrase_from_env())
    rows: list[dict[str, Any]] = [
        {
            "owner": "gateway",
            "role": info.role.value,
            "kid": info.kid,
            "alg": str(info.public_key.alg),
            "not_before": to_iso(info.not_before),
            "not_after": to_iso(info.not_after),
            "status": info.status.value,
        }
        for info in key_dir.public_keys()
    ]
    for key in asyncio.run(_registry_keys(opts.data_dir)):
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
    header = (
        f"{'owner':8} {'role':13} {'kid':18} {'alg':6} {'not_before':20} {'not_after':20} status"
    )
    print(header)
    for row in rows:
        print(
            f"{row['owner']:8} {row['role']:13} {row['kid'][:18]:18} {row['alg']:6} "
            f"{row['not_before']:20} {row['not_after']:20} {row['status']}"
        )
    return EXIT_OK


def _trust_from_key_dir(key_dir: KeyDirectory) -> Any:
    from gateway.tokens import GatewayTrust

    return GatewayTrust.from_key_infos(key_dir.public_keys())


def cmd_keys_export(opts: argparse.Namespace) -> int:
    key_dir = KeyDirectory.open(opts.data_dir / "keys", passphrase=passphrase_from_env())
    text = json.dumps(_trust_from_key_dir(key_dir).to_json(), indent=2) + "\n"
    if opts.out:
        Path(opts.out).write_text(text)
        print(f"wrote the gateway's public keys to {opts.out}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


async def _keys_add(opts: argparse.Namespace) -> dict[str, Any]:
    from keys.crypto import load_public_key
    from keys.model import RegionKey
    from keys.registry import KeyRegistry
    from keys.store import SQLiteStore

    raw = Path(opts.public_key).read_bytes()
    material: Any = raw
    if raw.lstrip().startswith(b"{"):
        try:
            material = json.loads(raw)
        except ValueError:
            raise UsageError(f"{opts.public_key} is not valid JSON") from None
    public_key = load_public_key(material)
    kid = opts.kid or public_key.fingerprint()
    not_before = opts.not_before or utcnow()
    not_after = opts.not_after or not_before + timedelta(days=365)
    key = RegionKey(opts.region, kid, public_key, not_before, not_after)
    store = await SQLiteStore.open(opts.data_dir / "trustgw.db")
    try:
        inserted = await KeyRegistry(store).add_key(key, actor=OPERATOR, now=utcnow())
    finally:
        await store.close()
    return {"region": key.region, "kid": kid, "alg": str(key.alg), "inserted": inserted}


def cmd_keys_add(opts: argparse.Namespace) -> int:
    result = asyncio.run(_keys_add(opts))
    if opts.json:
        print_json(result)
    else:
        verb = "added" if result["inserted"] else "already present:"
        print(f"{verb} key {result['kid']} ({result['alg']}) for region {result['region']}")
    return EXIT_OK


async def _keys_revoke(opts: argparse.Namespace) -> Any:
    from keys.registry import KeyRegistry
    from keys.store import SQLiteStore

    store = await SQLiteStore.open(opts.data_dir / "trustgw.db")
    try:
        registry = KeyRegistry(store)
        await registry.load()
        return await registry.revoke_key(
            opts.region, opts.kid, opts.at or utcnow(), actor=OPERATOR, now=utcnow()
        )
    finally:
        await store.close()


def cmd_keys_revoke(opts: argparse.Namespace) -> int:
    key = asyncio.run(_keys_revoke(opts))
    print(f"revoked key {key.kid} of region {key.region} from {to_iso(key.revoked_at)}")
    return EXIT_OK


def _duration(value: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if value[-1:] in units:
            return timedelta(seconds=float(value[:-1]) * units[value[-1]])
        return timedelta(seconds=float(value))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a duration like 90s, 15m, 1h, 2d"
        ) from None


def cmd_keys_rotate(opts: argparse.Namespace) -> int:
    from keys.keystore import KeyRole

    now = utcnow()
    key_dir = KeyDirectory.open(opts.data_dir / "keys", passphrase=passphrase_from_env())
    info = key_dir.rotate(
        KeyRole(opts.role), now, activate_at=now + opts.activate_in, validity=opts.validity
    )
    result = {
        "role": info.role.value,
        "kid": info.kid,
        "not_before": to_iso(info.not_before),
        "not_after": to_iso(info.not_after),
    }
    if opts.json:
        print_json(result)
    else:
        print(
            f"new {result['role']} key {result['kid']}: published now, signs from "
            f"{result['not_before']}; the previous key stays published for verification"
        )
    return EXIT_OK


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="the gateway's keys and partners' signing keys")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = ksub.add_parser("list", help="list every key the gateway holds or trusts")
    add_data_dir(p)
    add_json(p)
    p.set_defaults(func=cmd_keys_list)
    p = ksub.add_parser("export", help="write the gateway's public keys (trust file for verifiers)")
    add_data_dir(p)
    p.add_argument("--out", help="file to write (default: standard output)")
    p.set_defaults(func=cmd_keys_export)
    p = ksub.add_parser("add", help="register a partner region's code-signing key")
    add_data_dir(p)
    p.add_argument("--region", required=True, help="6-digit region code")
    p.add_argument("--public-key", required=True, help="PEM, DER, JWK (JSON) or certificate file")
    p.add_argument("--kid", help="key id as the partner's codes name it (default: fingerprint)")
    p.add_argument("--not-before", type=time_type, help="start of validity (default now)")
    p.add_argument("--not-after", type=time_type, help="end of validity (default +1 year)")
    add_json(p)
    p.set_defaults(func=cmd_keys_add)
    p = ksub.add_parser("revoke", help="revoke a partner's key from a compromise time")
    add_data_dir(p)
    p.add_argument("--region", required=True)
    p.add_argument("--kid", required=True)
    p.add_argument("--at", type=time_type, help="compromise time (default now)")
    p.set_defaults(func=cmd_keys_revoke)
    from keys.keystore import KeyRole

    p = ksub.add_parser("rotate", help="rotate one of the gateway's own keys")
    add_data_dir(p)
    p.add_argument("--role", required=True, choices=[r.value for r in KeyRole])
    p.add_argument(
        "--activate-in",
        type=_duration,
        default=DEFAULT_ACTIVATION_DELAY,
        help="publish now, sign from this much later so that replicas and verifiers have it "
        "first (default 5m; 0 only in an emergency: signs once this host's watchers have it)",
    )
    p.add_argument("--validity", type=_duration, default=timedelta(days=365), help="(default 365d)")
    add_json(p)
    p.set_defaults(func=cmd_keys_rotate)
