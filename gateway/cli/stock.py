"""``trustgw convert-batch``: convert the cities' certificates (docs/stock-conversion.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from gateway.cli._common import (
    EXIT_OK,
    EXIT_REJECTED,
    add_json,
    float_type,
    int_type,
    path_type,
    print_json,
    time_type,
)
from gateway.cli._keys import gateway_keys
from gateway.cli._store import add_store_args, connect, region_arg
from keys.errors import UsageError
from keys.timeutil import utcnow


async def _convert(opts: argparse.Namespace) -> int:
    from gateway.stock.converter import StockConverter
    from gateway.stock.progress import stderr_is_tty
    from gateway.stock.rows import FORMATS, detect_format
    from keys.pseudonym import Pseudonymiser

    path: Path = opts.file
    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    try:
        fmt = detect_format(path, opts.format)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    assert fmt in FORMATS
    now = opts.at or utcnow()
    store = await connect(opts)
    try:
        keys = await gateway_keys(store, opts.data_dir)
        try:
            converter = StockConverter(
                store,
                keys,
                Pseudonymiser(keys.pseudonym_secret()),
                now=now,
                city=opts.city or "",
                validity=timedelta(days=opts.validity_days),
                batch_size=opts.batch_size,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        bar = stderr_is_tty() and not opts.quiet
        try:
            summary = await converter.run(
                path,
                fmt,
                report=opts.report,
                progress_out=None if opts.quiet else sys.stderr,
                bar=bar,
            )
        except ValueError as exc:  # an unreadable header
            raise UsageError(f"{path.name}: {exc}") from None
    finally:
        await store.close()
    if opts.json:
        print_json(summary.to_json())
    else:
        print(summary.to_text())
    return EXIT_OK if summary.status != "interrupted" else EXIT_REJECTED


def cmd_convert_batch(opts: argparse.Namespace) -> int:
    try:
        return asyncio.run(_convert(opts))
    except KeyboardInterrupt:
        print(
            "trustgw: interrupted; the committed batches are kept: run the same command again "
            "to resume",
            file=sys.stderr,
        )
        return 130


def register(sub: Any) -> None:
    p = sub.add_parser(
        "convert-batch",
        help="convert the cities' local health certificates into home-province codes",
        description="Convert a CSV or JSON Lines file of local health certificates into "
        "home-province codes under the provincial rules. Idempotent and resumable: run the "
        "same command again after an interruption. See docs/stock-conversion.md.",
    )
    p.add_argument("file", type=path_type, help="CSV (.csv) or JSON Lines (.jsonl) file")
    add_store_args(p)
    p.add_argument("--format", choices=("csv", "jsonl"), help="default: from the file extension")
    p.add_argument(
        "--report", type=path_type, help="append bad rows here (JSON Lines: row, reason, message)"
    )
    p.add_argument(
        "--city",
        type=region_arg,
        help="the issuing city (37xxxx): fills and checks the city column",
    )
    p.add_argument(
        "--validity-days",
        type=float_type(0.001, 3650),
        default=7.0,
        help="validity of a converted code, at most (default %(default)s)",
    )
    p.add_argument("--batch-size", type=int_type(1, 100_000), default=500, help=argparse.SUPPRESS)
    p.add_argument("--at", type=time_type, help="decide as of this time (default: now)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    add_json(p)
    p.set_defaults(func=cmd_convert_batch)
