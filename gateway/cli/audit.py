"""``trustgw audit``: read the hash-chained audit trail and verify it.

``verify`` prints the head (``COUNT:HASH``): record it somewhere the database's owner cannot
write and pass it back as ``--expect-head`` to detect a rewritten chain too. Exit 1 with
``AUDIT_TAMPERED`` when an entry was edited, removed or reordered.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from typing import Any

from gateway.cli._common import (
    EXIT_OK,
    EXIT_REJECTED,
    add_json,
    int_type,
    print_json,
)
from gateway.cli._store import add_store_args, open_store
from keys.audit import AuditHead, verify_store
from keys.errors import AuditIntegrityError
from keys.timeutil import to_iso

_HEAD = re.compile(r"([0-9]{1,12}):([0-9a-f]{64})")


def _head_arg(value: str) -> AuditHead:
    match = _HEAD.fullmatch(value.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{value[:80]!r} is not COUNT:HASH (64 hex digits)")
    return AuditHead(int(match.group(1)), match.group(2))


_limit_arg = int_type(1, 1000)


# --- show -------------------------------------------------------------------------------------


async def _show(opts: argparse.Namespace) -> tuple[AuditHead, list[Any]]:
    async with open_store(opts) as store:
        head, entries = await store.read_audit(opts.after, opts.limit)
    return head, entries


def cmd_show(opts: argparse.Namespace) -> int:
    head, entries = asyncio.run(_show(opts))
    if opts.json:
        print_json(
            {
                "head": {"count": head.count, "hash": head.hash},
                "entries": [e.to_json() for e in entries],
            }
        )
        return EXIT_OK
    for entry in entries:
        print(
            f"{entry.seq:>6} {to_iso(entry.at)} {entry.actor:20} {entry.action:18} "
            f"{entry.region or '-':6} {entry.hash[:12]}"
        )
    shown = f"{entries[0].seq}-{entries[-1].seq}" if entries else "none"
    print(f"entries {shown} of {head.count}; head {head.count}:{head.hash}")
    return EXIT_OK


# --- verify -----------------------------------------------------------------------------------


async def _verify(opts: argparse.Namespace) -> AuditHead:
    async with open_store(opts) as store:
        return await verify_store(store, opts.expect_head)


def cmd_verify(opts: argparse.Namespace) -> int:
    try:
        head = asyncio.run(_verify(opts))
    except AuditIntegrityError as exc:
        if not opts.json:
            raise  # one line from main(): trustgw: AUDIT_TAMPERED: ...
        print_json({"ok": False, "reason": exc.reason, "detail": exc.message, **exc.metadata})
        return EXIT_REJECTED
    if opts.json:
        print_json(
            {
                "ok": True,
                "count": head.count,
                "hash": head.hash,
                "head": f"{head.count}:{head.hash}",
            }
        )
    else:
        print(f"audit log intact: {head.count} entries")
        print(f"head {head.count}:{head.hash}")
        print("  record the head elsewhere; later: trustgw audit verify --expect-head COUNT:HASH")
    return EXIT_OK


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the hash-chained audit trail of registry changes")
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    p = asub.add_parser("show", help="list audit entries")
    add_store_args(p)
    p.add_argument(
        "--after",
        type=int_type(0, 2**53 - 1),
        default=0,
        help="entries after this sequence number",
    )
    p.add_argument("--limit", type=_limit_arg, default=100, help="at most this many (1-1000)")
    add_json(p)
    p.set_defaults(func=cmd_show)
    p = asub.add_parser("verify", help="check the chain; exit 1 with AUDIT_TAMPERED if broken")
    add_store_args(p)
    p.add_argument(
        "--expect-head",
        type=_head_arg,
        help="COUNT:HASH printed by an earlier verify: detects a rewritten chain",
    )
    add_json(p)
    p.set_defaults(func=cmd_verify)
