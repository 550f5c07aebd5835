"""``trustgw partner``: onboard partner regions from their partner files, inspect, disable."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from gateway.cli._common import (
    EXIT_OK,
    add_json,
    path_type,
    print_json,
    print_table,
)
from gateway.cli._store import OPERATOR, add_store_args, open_store, region_arg
from keys.anchors import PartnerFile
from keys.errors import AnchorsMissingError, NotFoundError, UsageError
from keys.records import RegionTrust
from keys.timeutil import to_iso, utcnow

MAX_FILE_BYTES = 64 * 1024


def _read_file(path: Any) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


async def _trust(store: Any, region: str) -> RegionTrust:
    trust: RegionTrust = await store.region_trust(region)
    if trust.region is None:
        raise NotFoundError(f"region {region} is not onboarded", region=region)
    return trust


def _summary(trust: RegionTrust) -> dict[str, Any]:
    assert trust.region is not None
    region = trust.region
    return {
        "region": region.code,
        "name": region.name,
        "mode": region.mode.value,
        "max_age": int(region.max_age.total_seconds()),
        "enabled": region.enabled,
        "keyset_version": trust.keyset_version,
        "anchors_generation": trust.anchors_generation,
        "threshold": None if trust.anchors is None else trust.anchors.threshold,
        "anchors": 0 if trust.anchors is None else len(trust.anchors.keys),
        "fingerprint": None if trust.anchors is None else trust.anchors.fingerprint(),
        "keys": len(trust.keys),
    }


# --- add --------------------------------------------------------------------------------------


async def _add(opts: argparse.Namespace) -> dict[str, Any]:
    parsed = PartnerFile.from_bytes(_read_file(opts.file))
    async with open_store(opts) as store:
        result = await store.install_partner(
            parsed.region,
            parsed.anchors,
            replace=opts.replace_anchors,
            actor=OPERATOR,
            now=utcnow(),
        )
    return {
        "region": result.region,
        "created": result.created,
        "anchors_changed": result.anchors_changed,
        "region_changed": result.region_changed,
        "duplicate": result.duplicate,
        "anchors_generation": result.anchors_generation,
        "fingerprint": result.fingerprint,
    }


def cmd_add(opts: argparse.Namespace) -> int:
    result = asyncio.run(_add(opts))
    if opts.json:
        print_json(result)
        return EXIT_OK
    if result["duplicate"]:
        what = "unchanged (already installed)"
    elif result["created"]:
        what = "onboarded"
    else:
        changes = [n for n in ("anchors", "region") if result[f"{n}_changed"]]
        what = "updated (" + " and ".join(changes) + ")"
    print(f"region {result['region']}: {what}")
    print(
        f"  anchors generation {result['anchors_generation']}, fingerprint {result['fingerprint']}"
    )
    print("  compare the fingerprint with the partner over a second channel")
    return EXIT_OK


# --- list / show / anchors --------------------------------------------------------------------


async def _list(opts: argparse.Namespace) -> list[dict[str, Any]]:
    async with open_store(opts) as store:
        regions = await store.list_regions()
        return [_summary(await store.region_trust(r.code)) for r in regions]


def cmd_list(opts: argparse.Namespace) -> int:
    rows = asyncio.run(_list(opts))
    if opts.json:
        print_json(rows)
        return EXIT_OK
    table = [
        [
            row["region"],
            row["name"],
            row["mode"],
            "yes" if row["enabled"] else "NO",
            f"{row['threshold']}/{row['anchors']}" if row["anchors"] else "-",
            row["keyset_version"],
            row["keys"],
        ]
        for row in rows
    ]
    print_table(("region", "name", "mode", "enabled", "anchors", "keyset", "keys"), table)
    return EXIT_OK


def _key_row(key: Any) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "alg": str(key.alg),
        "not_before": to_iso(key.not_before),
        "not_after": to_iso(key.not_after),
        "status": key.status.value,
        "revoked_at": None if key.revoked_at is None else to_iso(key.revoked_at),
    }


async def _show(opts: argparse.Namespace) -> dict[str, Any]:
    async with open_store(opts) as store:
        trust = await _trust(store, opts.region)
        codes, holders = await store.list_revocations(opts.region)
    return {
        **_summary(trust),
        "signing_keys": [_key_row(k) for k in trust.keys],
        "revoked_codes": len(codes),
        "revoked_holders": len(holders),
    }


def cmd_show(opts: argparse.Namespace) -> int:
    info = asyncio.run(_show(opts))
    if opts.json:
        print_json(info)
        return EXIT_OK
    print(
        f"region {info['region']} {info['name']}: mode {info['mode']}, max age {info['max_age']}s"
    )
    print(f"  enabled: {'yes' if info['enabled'] else 'NO (its codes are refused)'}")
    if info["anchors"]:
        print(
            f"  anchors: {info['threshold']} of {info['anchors']}, generation "
            f"{info['anchors_generation']}, fingerprint {info['fingerprint']}"
        )
    else:
        print("  anchors: none installed (trustgw partner add)")
    print(f"  key set version {info['keyset_version']}, {len(info['signing_keys'])} signing keys")
    for key in info["signing_keys"]:
        revoked = f" revoked at {key['revoked_at']}" if key["revoked_at"] else ""
        print(
            f"    {key['kid']} {key['alg']} {key['not_before']} .. {key['not_after']} "
            f"{key['status']}{revoked}"
        )
    print(f"  revocations: {info['revoked_codes']} codes, {info['revoked_holders']} holders")
    return EXIT_OK


async def _anchors(opts: argparse.Namespace) -> dict[str, Any]:
    async with open_store(opts) as store:
        trust = await _trust(store, opts.region)
    if trust.anchors is None:
        raise AnchorsMissingError(
            f"region {opts.region} has no trust anchors: install its partner file first",
            region=opts.region,
        )
    return {
        "region": opts.region,
        "threshold": trust.anchors.threshold,
        "generation": trust.anchors_generation,
        "fingerprint": trust.anchors.fingerprint(),
        "anchors": [
            {**a.to_json(), "fingerprint": a.public_key.fingerprint(), "alg": str(a.public_key.alg)}
            for a in trust.anchors.keys
        ],
    }


def cmd_anchors(opts: argparse.Namespace) -> int:
    info = asyncio.run(_anchors(opts))
    if opts.json:
        print_json(info)
        return EXIT_OK
    print(
        f"region {info['region']}: {info['threshold']} of {len(info['anchors'])} anchors, "
        f"generation {info['generation']}"
    )
    print(f"  fingerprint {info['fingerprint']}")
    for anchor in info["anchors"]:
        print(f"  {anchor['kid']:24} {anchor['alg']:6} key {anchor['fingerprint']}")
    return EXIT_OK


# --- enable / disable -------------------------------------------------------------------------


async def _set_enabled(opts: argparse.Namespace, enabled: bool) -> None:
    async with open_store(opts) as store:
        await store.set_region_enabled(opts.region, enabled, actor=OPERATOR, now=utcnow())


def cmd_disable(opts: argparse.Namespace) -> int:
    asyncio.run(_set_enabled(opts, False))
    print(f"region {opts.region} disabled: its codes are refused (REGION_DISABLED) within 1 s")
    return EXIT_OK


def cmd_enable(opts: argparse.Namespace) -> int:
    asyncio.run(_set_enabled(opts, True))
    print(f"region {opts.region} enabled")
    return EXIT_OK


def register(sub: Any) -> None:
    partner = sub.add_parser("partner", help="partner regions: onboard, inspect, disable")
    psub = partner.add_subparsers(dest="partner_command", metavar="ACTION", required=True)
    p = psub.add_parser("add", help="onboard or update a region from its partner file")
    add_store_args(p)
    p.add_argument(
        "--file",
        required=True,
        type=path_type,
        help="the partner file (JSON, handed over out of band)",
    )
    p.add_argument(
        "--replace-anchors",
        action="store_true",
        help="break-glass: replace the region's installed anchors (audited)",
    )
    add_json(p)
    p.set_defaults(func=cmd_add)
    p = psub.add_parser("list", help="every region: mode, enabled, anchors, key set version")
    add_store_args(p)
    add_json(p)
    p.set_defaults(func=cmd_list)
    for name, func, text in [
        ("show", cmd_show, "one region: anchors, signing keys, revocation counts"),
        ("anchors", cmd_anchors, "a region's anchors, threshold and generation"),
        ("disable", cmd_disable, "refuse a region's codes until enabled again"),
        ("enable", cmd_enable, "recognise a disabled region's codes again"),
    ]:
        p = psub.add_parser(name, help=text)
        p.add_argument("region", type=region_arg, help="6-digit region code")
        add_store_args(p)
        if name in ("show", "anchors"):
            add_json(p)
        p.set_defaults(func=func)
