"""``trustgw purge``: delete personal records older than their retention (docs/retention.md)."""

from __future__ import annotations

import argparse
import asyncio
import re
from typing import Any

from gateway.cli._common import EXIT_OK, add_json, print_json, time_type
from gateway.cli._store import add_store_args, connect
from keys.errors import UsageError
from keys.timeutil import to_iso, utcnow


async def _purge(opts: argparse.Namespace) -> dict[str, Any]:
    from gateway.runtime.retention import RetentionPolicy, purge

    try:
        policy = RetentionPolicy(
            recognitions_days=opts.recognitions_days,
            conversions_days=opts.conversions_days,
            visits_days=opts.visits_days,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    now = opts.at or utcnow()
    store = await connect(opts)
    try:
        result = await purge(store, policy, now, dry_run=opts.dry_run)
    finally:
        await store.close()
    return {
        "dry_run": result.dry_run,
        "at": to_iso(now),
        "recognitions": result.recognitions,
        "conversions": result.conversions,
        "stock_conversions": result.stock_conversions,
        "declarations": result.declarations,
        "kept_revoked_conversions": result.kept_revoked,
        "visits": result.visits,
        "cutoffs": {name: to_iso(value) for name, value in result.cutoffs.items()},
    }


def cmd_purge(opts: argparse.Namespace) -> int:
    result = asyncio.run(_purge(opts))
    if opts.json:
        print_json(result)
        return EXIT_OK
    verb = "would delete" if result["dry_run"] else "deleted"
    cutoffs = result["cutoffs"]
    print(
        f"{verb} {result['recognitions']:,} recognition log entries"
        + (f" decided before {cutoffs['recognitions']}" if "recognitions" in cutoffs else "")
    )
    print(
        f"{verb} {result['conversions']:,} partner conversions and "
        f"{result['stock_conversions']:,} stock conversions and "
        f"{result['declarations']:,} arrival declarations"
        + (f" expired before {cutoffs['conversions']}" if "conversions" in cutoffs else "")
    )
    print(
        f"{verb} {result['visits']:,} venue visits"
        + (f" recorded before {cutoffs['visits']}" if "visits" in cutoffs else "")
    )
    if result["kept_revoked_conversions"]:
        print(
            f"kept {result['kept_revoked_conversions']:,} expired conversions revoked since "
            "then (kept for the retention period after the revocation)"
        )
    return EXIT_OK


def _days(value: str) -> float | None:
    if value.lower() in ("keep", "forever", "none"):
        return None
    if re.fullmatch(r"[0-9]{1,5}(?:\.[0-9]{1,6})?", value.strip()) is None:
        raise argparse.ArgumentTypeError(f"{value[:40]!r} is not a number of days or 'keep'")
    days = float(value)
    if not 0 <= days <= 36500:
        raise argparse.ArgumentTypeError("days must be between 0 and 36500")
    return days


def register(sub: Any) -> None:
    from gateway.runtime.retention import RetentionPolicy

    defaults = RetentionPolicy()
    p = sub.add_parser(
        "purge",
        help="delete recognition log entries and conversions older than their retention",
        description="Delete personal records older than their retention period. Revocations, "
        "keys and the audit trail are never purged. See docs/retention.md.",
    )
    add_store_args(p)
    p.add_argument(
        "--recognitions-days",
        type=_days,
        default=defaults.recognitions_days,
        metavar="N",
        help="keep recognition log entries N days ('keep': forever; default %(default)s)",
    )
    p.add_argument(
        "--conversions-days",
        type=_days,
        default=defaults.conversions_days,
        metavar="N",
        help="keep conversions and arrival declarations N days after their code expired "
        "(default %(default)s)",
    )
    p.add_argument(
        "--visits-days",
        type=_days,
        default=defaults.visits_days,
        metavar="N",
        help="keep venue visits (place code scans) N days (default %(default)s)",
    )
    p.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    p.add_argument("--at", type=time_type, help=argparse.SUPPRESS)
    add_json(p)
    p.set_defaults(func=cmd_purge)
