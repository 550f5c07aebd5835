"""``trustgw revocations``: what partners have revoked, as counts and batch ids.

Code keys and holder pseudonyms are never printed as text; ``--json --hashes`` includes them
for scripts (keyed under the gateway's secret, never identifiers nor the partners' unkeyed
hashes, which are not kept).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from gateway.cli._common import EXIT_OK, add_json, print_json
from gateway.cli._store import add_store_args, open_store, region_arg
from keys.audit import VERIFY_CHUNK
from keys.timeutil import from_unix, to_iso


async def _batches(store: Any, region: str | None) -> list[dict[str, Any]]:
    """Accepted revocation batches, from the audit trail (which records counts and ids only)."""
    batches: list[dict[str, Any]] = []
    after = 0
    while True:
        _, entries = await store.read_audit(after, VERIFY_CHUNK)
        for entry in entries:
            if entry.action != "revocations.apply" or entry.after is None:
                continue
            if region is not None and entry.region != region:
                continue
            batches.append(
                {
                    "region": entry.region,
                    "batch_id": entry.after.get("batch_id"),
                    "effective_at": to_iso(from_unix(int(entry.after.get("effective_at", 0)))),
                    "accepted_at": to_iso(entry.at),
                    "codes": entry.after.get("codes", 0),
                    "holders": entry.after.get("holders", 0),
                    "conversions_revoked": entry.after.get("conversions_revoked", 0),
                    "actor": entry.actor,
                }
            )
        if len(entries) < VERIFY_CHUNK:
            return batches
        after = entries[-1].seq


async def _list(opts: argparse.Namespace) -> dict[str, Any]:
    async with open_store(opts) as store:
        codes, holders = await store.list_revocations(opts.region)
        batches = await _batches(store, opts.region)
    regions: dict[str, dict[str, int]] = {}
    for code in codes:
        regions.setdefault(code.region, {"codes": 0, "holders": 0})["codes"] += 1
    for holder in holders:
        regions.setdefault(holder.region, {"codes": 0, "holders": 0})["holders"] += 1
    result: dict[str, Any] = {
        "regions": [{"region": r, **regions[r]} for r in sorted(regions)],
        "batches": batches,
    }
    if opts.hashes:
        result["codes"] = [
            {"region": c.region, "code_key": c.code_key, "effective_at": to_iso(c.effective_at)}
            for c in codes
        ]
        result["holders"] = [
            {"region": h.region, "pseudonym": h.holder, "effective_at": to_iso(h.effective_at)}
            for h in holders
        ]
    return result


def cmd_list(opts: argparse.Namespace) -> int:
    if opts.hashes and not opts.json:
        opts.hashes = False  # hashes only ever go to scripts
    result = asyncio.run(_list(opts))
    if opts.json:
        print_json(result)
        return EXIT_OK
    if not result["regions"]:
        print("no revocations" + (f" for region {opts.region}" if opts.region else ""))
        return EXIT_OK
    print(f"{'region':6}  {'codes':>7} {'holders':>7}")
    for row in result["regions"]:
        print(f"{row['region']:6}  {row['codes']:>7} {row['holders']:>7}")
    print(f"{len(result['batches'])} batches:")
    for batch in result["batches"]:
        print(
            f"  {batch['region']} {batch['batch_id']:24} effective {batch['effective_at']} "
            f"codes {batch['codes']} holders {batch['holders']} "
            f"conversions revoked {batch['conversions_revoked']}"
        )
    return EXIT_OK


def register(sub: Any) -> None:
    revocations = sub.add_parser("revocations", help="code and holder revocations by partners")
    rsub = revocations.add_subparsers(dest="revocations_command", metavar="ACTION", required=True)
    p = rsub.add_parser("list", help="counts per region and the batches accepted")
    add_store_args(p)
    p.add_argument("--region", type=region_arg, help="only this 6-digit region")
    add_json(p)
    p.add_argument(
        "--hashes",
        action="store_true",
        help="with --json: include the code keys and holder pseudonyms",
    )
    p.set_defaults(func=cmd_list)
