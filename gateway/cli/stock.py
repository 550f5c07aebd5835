"""``trustgw convert-batch``: convert the cities' certificates; ``trustgw stock``: the jobs and
their output (docs/stock-conversion.md)."""

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
    print_table,
    time_type,
)
from gateway.cli._keys import gateway_keys
from gateway.cli._store import add_store_args, connect, open_store, region_arg
from keys.errors import UsageError
from keys.timeutil import to_iso, utcnow


async def _convert(opts: argparse.Namespace) -> int:
    from gateway.stock.converter import StockConverter
    from gateway.stock.progress import stderr_is_tty
    from gateway.stock.rows import FORMATS, detect_format
    from keys.pseudonym import Pseudonymiser

    path: Path = opts.file
    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    out_fmt = _check_output_options(opts)
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
        written = None
        if opts.out is not None and summary.status != "interrupted":
            job = await store.find_stock_job(summary.digest)
            written = await _write(store, job, opts, out_fmt)
    finally:
        await store.close()
    if opts.json:
        result = summary.to_json()
        if written is not None:
            result["output"] = written.to_json()
        print_json(result)
    else:
        print(summary.to_text())
        if written is not None:
            print(written.to_text())
    return EXIT_OK if summary.status != "interrupted" else EXIT_REJECTED


def _check_output_options(opts: argparse.Namespace) -> str | None:
    """The output format of ``--out`` (None without it); refuses ``--qr-*`` without ``--out``
    and ``--qr-format`` without ``--qr-dir``."""
    from gateway.stock.output import out_format

    if opts.out is None:
        if opts.qr_dir is not None or opts.out_format is not None:
            raise UsageError("--qr-dir and --out-format need --out FILE")
        return None
    if opts.qr_format is not None and opts.qr_dir is None:
        raise UsageError("--qr-format needs --qr-dir DIR")
    if opts.qr_dir is not None and opts.qr_dir.exists() and not opts.qr_dir.is_dir():
        raise UsageError(f"--qr-dir {opts.qr_dir} is not a directory")
    if opts.out.is_dir():
        raise UsageError(f"--out {opts.out} is a directory")
    if not opts.out.parent.is_dir():  # refused before any row is converted
        raise UsageError(f"--out {opts.out}: {opts.out.parent} is not a directory")
    try:
        return out_format(opts.out, opts.out_format)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def _write(store: Any, job: Any, opts: argparse.Namespace, fmt: str | None) -> Any:
    from gateway.stock.output import write_output

    assert fmt is not None
    try:
        return await write_output(
            store, job, opts.out, fmt, qr_dir=opts.qr_dir, qr_format=opts.qr_format or "png"
        )
    except OSError as exc:
        raise UsageError(f"cannot write {opts.out}: {exc.strerror or exc}") from None


async def _jobs(opts: argparse.Namespace) -> list[Any]:
    async with open_store(opts) as store:
        return await store.list_stock_jobs(opts.limit)


def _job_json(job: Any) -> dict[str, Any]:
    counts = job.counts
    return {
        "job": job.digest,
        "source": job.source,
        "status": "complete" if job.finished_at is not None else "unfinished",
        "committed_rows": job.committed_rows,
        "converted": counts.get("converted", 0),
        "already_converted": counts.get("already_converted", 0),
        "holder_conflicts": counts.get("holder_conflicts", 0),
        "rejected": counts.get("rejected", 0),
        "started_at": to_iso(job.started_at),
        "finished_at": to_iso(job.finished_at) if job.finished_at else None,
    }


def cmd_stock_jobs(opts: argparse.Namespace) -> int:
    rows = [_job_json(job) for job in asyncio.run(_jobs(opts))]
    if opts.json:
        print_json(rows)
        return EXIT_OK
    columns = ("job", "source", "status", "committed_rows", "converted", "rejected", "started_at")
    print_table(
        columns,
        [[r["job"][:16], *(r[c] for c in columns[1:])] for r in rows],
    )
    return EXIT_OK


async def _export(opts: argparse.Namespace, fmt: str | None) -> Any:
    async with open_store(opts) as store:
        try:
            job = await store.find_stock_job(opts.job)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return await _write(store, job, opts, fmt)


def job_type(value: str) -> str:
    """A stock job named by 8 to 64 hex digits of its SHA-256 (``trustgw stock jobs``' form)."""
    text = value.strip().lower()
    if not 8 <= len(text) <= 64 or not all(c in "0123456789abcdef" for c in text):
        raise argparse.ArgumentTypeError(
            f"{value[:80]!r} is not a job: 8 to 64 hex digits of its SHA-256 (trustgw stock jobs)"
        )
    return text


def cmd_stock_export(opts: argparse.Namespace) -> int:
    written = asyncio.run(_export(opts, _check_output_options(opts)))
    if opts.json:
        print_json(written.to_json())
    else:
        print(written.to_text())
    return EXIT_OK


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
    _add_output_options(p, required=False)
    add_json(p)
    p.set_defaults(func=cmd_convert_batch)

    stock = sub.add_parser("stock", help="batch conversion jobs and their output")
    ssub = stock.add_subparsers(dest="stock_command", metavar="ACTION", required=True)
    p = ssub.add_parser("jobs", help="list the batch conversion jobs, newest first")
    add_store_args(p)
    p.add_argument("--limit", type=int_type(1, 100_000), default=1000, help="(default 1000)")
    add_json(p)
    p.set_defaults(func=cmd_stock_jobs)
    p = ssub.add_parser("export", help="write an earlier job's home codes (and QR images)")
    p.add_argument(
        "job", type=job_type, help="the job: 8 to 64 hex digits of its SHA-256 (trustgw stock jobs)"
    )
    add_store_args(p)
    _add_output_options(p, required=True)
    add_json(p)
    p.set_defaults(func=cmd_stock_export)


def _add_output_options(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument(
        "--out",
        type=path_type,
        required=required,
        help="write the job's home codes here: row, city, certificate_id, code_id, home_code, "
        "colour, valid_from, valid_until, status (no name or ID number)",
    )
    p.add_argument(
        "--out-format",
        choices=("csv", "jsonl"),
        help="default: from the extension of --out (.csv, .jsonl)",
    )
    p.add_argument(
        "--qr-dir",
        type=path_type,
        help="also write a QR image of each home code here (CODE_ID.png)",
    )
    p.add_argument("--qr-format", choices=("png", "svg"), help="QR image format (default png)")
