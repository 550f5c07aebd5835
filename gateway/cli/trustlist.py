"""``trustgw trustlist``: export the signed trust list, verify one offline, raise the version floor.

``verify`` exits 0 when the list is accepted, 1 when it is refused (bad signature, expired,
rolled back, conflicting), 2 on a usage error (unreadable file, no pinned trustlist key).
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.cli._common import (
    EXIT_OK,
    EXIT_REJECTED,
    add_json,
    int_type,
    path_type,
    print_json,
    time_type,
)
from gateway.cli._keys import gateway_keys
from gateway.cli._store import add_store_args, open_store
from keys.errors import GatewayError, UsageError
from keys.timeutil import to_iso, utcnow
from keys.trustlist import MAX_TRUSTLIST_BYTES, PinnedKey, PublishedTrustList, TrustListVerifier

MAX_FILE_BYTES = 4 * MAX_TRUSTLIST_BYTES  # an envelope: base64url of the list, and signatures
MAX_VERSION = 2**53 - 1  # versions are JSON integers


# --- export -----------------------------------------------------------------------------------


async def _export(opts: argparse.Namespace) -> PublishedTrustList:
    from keys.registry import KeyRegistry
    from keys.trustpublisher import TrustListPublisher

    async with open_store(opts) as store:
        key_dir = await gateway_keys(store, opts.data_dir)
        registry = KeyRegistry(store)
        await registry.load()
        publisher = TrustListPublisher(store, lambda: registry.snapshot, lambda: key_dir)
        now = utcnow()
        if opts.since > 0:
            return await publisher.delta(opts.since, now)
        return await publisher.full(now)


def cmd_export(opts: argparse.Namespace) -> int:
    if opts.since < 0:
        raise UsageError("--since must not be negative")
    signed = asyncio.run(_export(opts))
    Path(opts.out).write_bytes(signed.envelope)
    result = {
        "out": str(opts.out),
        "version": signed.version,
        "since": signed.since,
        "issued_at": to_iso(signed.issued_at),
        "expires": to_iso(signed.expires),
        "bytes": len(signed.envelope),
    }
    if opts.json:
        print_json(result)
    else:
        kind = "full list" if signed.since is None else f"delta since version {signed.since}"
        print(
            f"wrote trust list version {signed.version} ({kind}) to {opts.out}, "
            f"expires {result['expires']}"
        )
    return EXIT_OK


# --- verify -----------------------------------------------------------------------------------


def _read(path: Any) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise UsageError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    return data


def _pinned(path: Any) -> list[PinnedKey]:
    """The trustlist keys of a gateway trust file (``trustgw keys export``), each with its
    validity window: a list it signs must be issued at or after its ``not_before`` and expire
    no later than its ``not_after`` (docs/trust-registry.md §9). A revoked key is not pinned."""
    from gateway.tokens import GatewayTrust

    try:
        trust = GatewayTrust.from_json(_read(path))
    except GatewayError as exc:
        raise UsageError(f"{path} is not a gateway key file: {exc.message}") from None
    listed = [k for k in trust.keys if k.role == "trustlist"]
    pinned = [
        PinnedKey(k.kid, k.public_key, k.not_before, k.not_after)
        for k in listed
        if k.status != "revoked"
    ]
    if not pinned:
        revoked = " (every one in it is revoked)" if listed else ""
        raise UsageError(f"{path} holds no trustlist key to pin{revoked} (trustgw keys export)")
    return pinned


def _window(key: PinnedKey) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "not_before": None if key.not_before is None else to_iso(key.not_before),
        "not_after": None if key.not_after is None else to_iso(key.not_after),
    }


def _verify(opts: argparse.Namespace, at: datetime) -> dict[str, Any]:
    pinned = _pinned(opts.pinned)
    verifier = TrustListVerifier(pinned, opts.last_version)
    windows = [_window(key) for key in pinned]
    data = _read(opts.file)
    base = _read(opts.base) if opts.base else None
    try:
        if base is not None:
            verifier.verify(base, at)
        accepted = verifier.verify(data, at)
    except GatewayError as exc:
        return {
            "verdict": "reject",
            "reason": exc.reason,
            "detail": exc.message,
            "version": None,
            "pinned": windows,
        }
    return {
        "verdict": "accept",
        "reason": "TRUSTLIST_VALID",
        "detail": f"{len(accepted.keys())} keys of {len(accepted.content['regions'])} regions, "
        f"expires {to_iso(accepted.expires)}",
        "version": accepted.version,
        "digest": accepted.digest,
        "expires": to_iso(accepted.expires),
        "trusted_kids": sorted(verifier.trusted_kids),
        "pinned": windows,
    }


def cmd_verify(opts: argparse.Namespace) -> int:
    if opts.last_version < 0:
        raise UsageError("--last-version must not be negative")
    result = _verify(opts, opts.at or utcnow())
    if opts.json:
        print_json(result)
    elif result["verdict"] == "accept":
        print(f"ACCEPTED trust list version {result['version']}: {result['detail']}")
        print(f"  remember version {result['version']} and pass it as --last-version next time")
    else:
        print(f"REJECTED {result['reason']}: {result['detail']}")
    if not opts.json:
        for key in result["pinned"]:
            print(
                f"  pinned trustlist key {key['kid']}: signs lists issued from "
                f"{key['not_before']}, expiring by {key['not_after']}"
            )
    return EXIT_OK if result["verdict"] == "accept" else EXIT_REJECTED


# --- floor ------------------------------------------------------------------------------------


async def raise_floor(opts: argparse.Namespace, floor: int) -> Any:
    """Raise the store's trust-list version floor (also used by ``trustgw restore``)."""
    async with open_store(opts) as store:
        return await store.raise_trustlist_floor(floor, now=utcnow())


def cmd_floor(opts: argparse.Namespace) -> int:
    latest = asyncio.run(raise_floor(opts, opts.floor))
    result = {"floor": opts.floor, "latest_version": latest.version}
    if opts.json:
        print_json(result)
    else:
        print(
            f"trust-list versions published from now on are above {opts.floor} "
            f"(the newest is {latest.version})"
        )
    return EXIT_OK


def register(sub: Any) -> None:
    trustlist = sub.add_parser("trustlist", help="the signed trust list: export, verify offline")
    tsub = trustlist.add_subparsers(dest="trustlist_command", metavar="ACTION", required=True)
    p = tsub.add_parser("export", help="write the current signed trust list (full or delta)")
    add_store_args(p)
    p.add_argument(
        "--since",
        type=int_type(0, MAX_VERSION),
        default=0,
        help="a delta since this version (0: full)",
    )
    p.add_argument(
        "--out", required=True, type=path_type, help="file to write the signed envelope to"
    )
    add_json(p)
    p.set_defaults(func=cmd_export)
    p = tsub.add_parser(
        "floor",
        help="publish only versions above N from now on (after a restore: the newest version a "
        "verifier may have seen)",
    )
    add_store_args(p)
    p.add_argument("floor", type=int_type(0, MAX_VERSION - 1), metavar="N")
    add_json(p)
    p.set_defaults(func=cmd_floor)
    p = tsub.add_parser("verify", help="verify a trust list offline (exit 0 accept, 1 reject)")
    p.add_argument(
        "--pinned",
        required=True,
        type=path_type,
        help="the gateway's key file (trustgw keys export): its trustlist keys are pinned with "
        "their validity windows (a list must lie within one); revoked ones are not",
    )
    p.add_argument(
        "--last-version",
        type=int_type(0, MAX_VERSION),
        default=0,
        help="the newest version accepted before",
    )
    p.add_argument("--at", type=time_type, help="verify as of this time (default now)")
    p.add_argument("--base", type=path_type, help="for a delta: the full list it applies to")
    add_json(p)
    p.add_argument("file", type=path_type, help="the signed trust list (envelope JSON)")
    p.set_defaults(func=cmd_verify)
