"""``trustgw declarations``: look an arrival declaration up, count them (docs/operations.md,
"Arrival declarations"). Declarations name holders by pseudonym only; neither command shows
one."""

from __future__ import annotations

import argparse
import asyncio
import re
from datetime import date
from typing import Any

from gateway.cli._common import EXIT_OK, add_json, print_json, print_table
from gateway.cli._store import add_store_args, open_store
from keys.errors import NotFoundError, UsageError
from keys.personal import DECLARATION_GROUPS, DeclarationRecord
from keys.timeutil import to_iso

_ID = re.compile(r"SD[0-9a-f]{30}")


def declaration_id(value: str) -> str:
    """A declaration's id as the service answers it (``SD`` and 30 hex digits)."""
    text = value.strip()
    if _ID.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(
            f"{value[:80]!r} is not a declaration id (SD and 30 hex digits)"
        )
    return text


def day(value: str) -> date:
    """A day, YYYY-MM-DD."""
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value[:40]!r} is not a day (YYYY-MM-DD)") from None


def groups(value: str) -> tuple[str, ...]:
    """``origin,day,colour`` (some of them, each once)."""
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if (
        not names
        or any(n not in DECLARATION_GROUPS for n in names)
        or len(set(names)) != len(names)
    ):
        raise argparse.ArgumentTypeError(
            f"--by takes some of {','.join(DECLARATION_GROUPS)}, each once"
        )
    return names


def record_json(record: DeclarationRecord) -> dict[str, Any]:
    """What ``declarations show`` prints: the decision and the home code, no pseudonym."""
    return {
        "id": record.id,
        "status": record.status,
        "colour": record.colour,
        "failed_rules": list(record.rules),
        "green_from": None if record.green_from is None else record.green_from.isoformat(),
        "origin": record.origin,
        "origin_kind": record.origin_kind,
        "arrival_date": record.arrival_date.isoformat(),
        "exempt": record.exempt,
        "partner_region": record.partner_region or None,
        "issued_at": to_iso(record.issued_at),
        "expires_at": to_iso(record.expires_at),
        "revoked_at": None if record.revoked_at is None else to_iso(record.revoked_at),
        "revoked_reason": record.revoked_reason or None,
        "superseded_by": record.superseded_by or None,
        "home_code": record.code,
    }


async def _show(opts: argparse.Namespace) -> dict[str, Any]:
    async with open_store(opts) as store:
        record = await store.get_declaration(opts.id)
    if record is None:
        raise NotFoundError(f"no declaration {opts.id}")
    return record_json(record)


def cmd_show(opts: argparse.Namespace) -> int:
    result = asyncio.run(_show(opts))
    if opts.json:
        print_json(result)
        return EXIT_OK
    width = max(len(k) for k in result)
    for key, value in result.items():
        if isinstance(value, list):
            value = ", ".join(value) or "-"
        print(f"{key:<{width}}  {'-' if value is None else value}")
    return EXIT_OK


async def _count(opts: argparse.Namespace) -> list[dict[str, Any]]:
    if opts.since and opts.until and opts.since > opts.until:
        raise UsageError("--since is after --until")
    async with open_store(opts) as store:
        counts = await store.count_declarations(
            opts.by, since=opts.since, until=opts.until, superseded=opts.superseded
        )
    return [{**{g: getattr(c, g) for g in opts.by}, "count": c.count} for c in counts]


def cmd_count(opts: argparse.Namespace) -> int:
    rows = asyncio.run(_count(opts))
    if opts.json:
        print_json(rows)
        return EXIT_OK
    columns = (*opts.by, "count")
    print_table(columns, [[r[c] for c in columns] for r in rows])
    return EXIT_OK


def register(sub: Any) -> None:
    decl = sub.add_parser("declarations", help="arrival declarations: look up, count")
    dsub = decl.add_subparsers(dest="declarations_command", metavar="ACTION", required=True)
    p = dsub.add_parser("show", help="one declaration by its id: decision, status, home code")
    p.add_argument("id", type=declaration_id, help="the declaration id (SD and 30 hex digits)")
    add_store_args(p)
    add_json(p)
    p.set_defaults(func=cmd_show)
    p = dsub.add_parser(
        "count",
        help="how many declarations, by origin, arrival day and colour",
        description="Count standing declarations (superseded ones with --superseded), grouped "
        "by origin, arrival day (YYYY-MM-DD, China Standard Time) and/or colour.",
    )
    add_store_args(p)
    p.add_argument("--by", type=groups, default=(), help="origin,day,colour (any of them)")
    p.add_argument("--since", type=day, help="arrivals on or after this day (YYYY-MM-DD)")
    p.add_argument("--until", type=day, help="arrivals on or before this day (YYYY-MM-DD)")
    p.add_argument("--superseded", action="store_true", help="count superseded ones too")
    add_json(p)
    p.set_defaults(func=cmd_count)
