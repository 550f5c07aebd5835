"""Stock data conversion: the cities' local health certificates become home-province codes.

The work plan retires the cities' own codes: every certificate a city already issued is converted
into a provincial code (``SD1:``, signed with the gateway's issuing key) under the provincial
eligibility rules. The file format, the rules and the guarantees are in
``docs/stock-conversion.md``; in short:

* idempotent: one code per (city, certificate_id), an earlier conversion wins;
* resumable: a job keyed by the file's SHA-256 records the last committed row, in the same
  transaction as the batch it ends, and a restart skips what is committed;
* bad rows go to an error report (row number, reason, message: never a raw name or ID number);
* holders are kept only as keyed pseudonyms.

Rows are parsed, decided and signed in the calling thread; batches of about 500 are committed
on the store's writer thread while the next batch is being prepared.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from adapters.base import Colour
from gateway import tokens
from gateway.claims import HomeCodeClaims, StockSource
from gateway.stock.progress import Progress
from gateway.stock.rows import (
    _CITY,
    Certificate,
    _ByteCounter,
    detect_format,
    file_digest,
    parse_row,
    read_rows,
)
from gateway.stock.rules import decide
from keys.errors import GatewayError, RowError
from keys.keystore import KeyRole, Signers
from keys.model import HOME_REGION
from keys.personal import StockBatch, StockBatchResult, StockConversion
from keys.pseudonym import Pseudonymiser
from keys.store.protocols import StockStore
from keys.timeutil import ensure_utc, to_unix

BATCH_SIZE = 500
DEFAULT_VALIDITY = timedelta(days=7)


@dataclass
class Summary:
    """What a run did; ``counts`` are the job's totals over every run of the same file."""

    file: str
    digest: str
    status: str  # "complete" | "already complete" | "interrupted"
    counts: dict[str, int]
    elapsed: float
    rows_this_run: int
    resumed_from_row: int = 0
    report: str | None = None

    def to_json(self) -> dict[str, Any]:
        counts = self.counts
        return {
            "file": self.file,
            "sha256": self.digest,
            "status": self.status,
            "rows_read": counts.get("rows_read", 0),
            "converted": counts.get("converted", 0),
            "already_converted": counts.get("already_converted", 0),
            "holder_conflicts": counts.get("holder_conflicts", 0),
            "colours": {c.value: counts.get(c.value, 0) for c in Colour},
            "rejected": counts.get("rejected", 0),
            "rejected_by_reason": _prefixed(counts, "rejected:"),
            "not_green_by_rule": _prefixed(counts, "rule:"),
            "resumed_from_row": self.resumed_from_row,
            "rows_this_run": self.rows_this_run,
            "elapsed_seconds": round(self.elapsed, 3),
            "rows_per_second": round(self.rows_this_run / self.elapsed, 1) if self.elapsed else 0,
            "report": self.report,
        }

    def to_text(self) -> str:
        d = self.to_json()
        conflicts = d["holder_conflicts"]
        lines = [
            f"{self.file}: {self.status}"
            + (f" (resumed after row {self.resumed_from_row})" if self.resumed_from_row else ""),
            f"  rows read          {d['rows_read']:>10,}",
            f"  converted          {d['converted']:>10,}   green {d['colours']['green']:,}, "
            f"yellow {d['colours']['yellow']:,}, red {d['colours']['red']:,}",
            f"  already converted  {d['already_converted']:>10,}"
            + (f"   ({conflicts:,} for another holder)" if conflicts else ""),
            f"  rejected           {d['rejected']:>10,}",
        ]
        lines += [f"    {reason:<24} {n:>8,}" for reason, n in d["rejected_by_reason"].items()]
        if d["not_green_by_rule"]:
            lines.append("  not green, by rule")
            lines += [f"    {rule:<30} {n:>8,}" for rule, n in d["not_green_by_rule"].items()]
        lines.append(
            f"  this run: {self.rows_this_run:,} rows in {self.elapsed:.1f} s "
            f"({d['rows_per_second']:,.0f} rows/s)"
        )
        if self.report and d["rejected"]:
            lines.append(f"  error report: {self.report}")
        return "\n".join(lines)


def _prefixed(counts: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix) :]: v for k, v in sorted(counts.items()) if k.startswith(prefix)}


@dataclass
class _Batch:
    after_row: int
    records: list[StockConversion] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    last_row: int = 0


class StockConverter:
    """Converts one file. Holds the signing key and pseudonymiser; never a raw identifier."""

    def __init__(
        self,
        store: StockStore,
        signers: Signers,
        pseudonymise: Pseudonymiser,
        *,
        now: datetime,
        city: str = "",
        validity: timedelta = DEFAULT_VALIDITY,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        if city and (_CITY.fullmatch(city) is None or city == HOME_REGION):
            raise ValueError("--city is a 6-digit city code of the province (37xxxx)")
        if batch_size < 1:
            raise ValueError("the batch size is at least 1")
        if validity <= timedelta(0):
            raise ValueError("the validity is positive")
        self._store = store
        self._pseudonymise = pseudonymise
        self._now = ensure_utc(now)
        self._city = city
        self._validity = validity
        self._batch_size = batch_size
        self._info, self._key = signers.signer(KeyRole.ISSUE, self._now)

    def convert(self, cert: Certificate) -> tuple[StockConversion, tuple[str, ...]]:
        """The home-province code of a valid certificate and the rules it failed; raises
        :class:`RowError` if the certificate has expired."""
        now = self._now
        expires = min(now + self._validity, self._info.not_after)
        if cert.expires_at is not None:
            if cert.expires_at <= now:
                raise RowError("CERTIFICATE_EXPIRED", "expires_at: the certificate has expired")
            expires = min(expires, cert.expires_at)
        colour, rules = decide(cert, now)
        code_id = tokens.home_code_id(cert.city, cert.certificate_id)
        claims = HomeCodeClaims(
            id=code_id,
            holder=cert.holder,
            colour=colour.value,
            src=StockSource(cert.city, cert.certificate_id),
        )
        code = tokens.sign_home_code(
            claims.signed_by(self._info.kid, to_unix(now), to_unix(expires)), self._key
        )
        record = StockConversion(
            city=cert.city,
            certificate_id=cert.certificate_id,
            holder=cert.holder,
            code_id=code_id,
            code=code,
            colour=colour.value,
            issued_at=now,
            expires_at=expires,
            created_at=now,
        )
        return record, rules

    async def run(
        self,
        path: Path,
        fmt: str | None = None,
        *,
        report: Path | None = None,
        progress_out: TextIO | None = None,
        bar: bool = False,
        on_batch: Callable[[int], Awaitable[None] | None] | None = None,
    ) -> Summary:
        """Convert ``path``, resuming a job left unfinished.

        Raises ``ValueError`` for an unreadable format or header, ``OSError``, and the store's
        errors (the batches committed until then stay committed: run again to resume).
        ``on_batch`` is called with each committed batch's last row (tests interrupt there).
        """
        fmt = detect_format(path, fmt)
        digest, size = file_digest(path)
        job = await self._store.open_stock_job(digest, path.name, self._now)
        started = time.monotonic()
        if job.finished_at is not None:
            return Summary(
                str(path), digest, "already complete", dict(job.counts), 0.0, 0,
                job.committed_rows, str(report) if report else None,
            )  # fmt: skip
        resumed = job.committed_rows
        progress = Progress(progress_out, size, bar=bar)
        counter = _ByteCounter()
        pending: list[tuple[_Batch, asyncio.Future[StockBatchResult]]] = []
        committed = resumed
        rows_this_run = 0
        counts: Mapping[str, int] = dict(job.counts)
        report_file = report.open("a", encoding="utf-8") if report is not None else None

        async def settle(limit: int) -> None:
            nonlocal committed, counts
            while len(pending) > limit:
                batch, future = pending.pop(0)
                result = await future
                committed, counts = batch.last_row, result.counts
                errors = batch.errors + [
                    {
                        "row": row,
                        "reason": "HOLDER_CONFLICT",
                        "message": "certificate already converted for another holder; the "
                        "earlier code is kept",
                    }
                    for row in result.conflicts
                ]
                if report_file is not None and errors:
                    errors.sort(key=lambda e: int(e["row"]))
                    report_file.write("".join(_json_line(e) for e in errors))
                    report_file.flush()
                if on_batch is not None:
                    maybe = on_batch(batch.last_row)
                    if maybe is not None:
                        await maybe

        def submit(batch: _Batch) -> None:
            stock_batch = StockBatch(
                digest=digest,
                after_row=batch.after_row,
                last_row=batch.last_row,
                records=tuple(batch.records),
                rows=tuple(batch.rows),
                counts=dict(batch.counts),
                at=self._now,
            )
            future = asyncio.ensure_future(self._store.commit_stock_batch(stock_batch))
            pending.append((batch, future))

        try:
            with path.open("rb") as f:
                current = _Batch(after_row=resumed)
                size_of_batch = 0
                skipping = resumed > 0
                rows = read_rows(f, fmt, counter, city_column=not self._city)
                for number, raw in rows:
                    if number <= resumed:
                        continue
                    if skipping:
                        progress.begin(counter.done)
                        skipping = False
                    rows_this_run += 1
                    current.last_row = number
                    current.counts["rows_read"] += 1
                    try:
                        if isinstance(raw, RowError):
                            raise raw
                        cert = parse_row(raw, self._pseudonymise, self._city)
                        record, rules = self.convert(cert)
                        for rule in rules:
                            current.counts["rule:" + rule] += 1
                        current.records.append(record)
                        current.rows.append(number)
                    except RowError as exc:
                        current.counts["rejected"] += 1
                        current.counts["rejected:" + exc.reason] += 1
                        entry: dict[str, Any] = {
                            "row": number,
                            "reason": exc.reason,
                            "message": exc.message,
                        }
                        if exc.column:
                            entry["column"] = exc.column
                        current.errors.append(entry)
                    size_of_batch += 1
                    if size_of_batch >= self._batch_size:
                        submit(current)
                        current = _Batch(after_row=current.last_row)
                        size_of_batch = 0
                        await settle(1)  # one batch commits while the next is prepared
                        progress.update(rows_this_run, counter.done)
                if size_of_batch:
                    submit(current)
                await settle(0)
            progress.update(rows_this_run, counter.done, final=True)
            job = await self._store.finish_stock_job(digest, self._now)
            return Summary(
                str(path), digest, "complete", dict(job.counts), time.monotonic() - started,
                rows_this_run, resumed, str(report) if report else None,
            )  # fmt: skip
        except BaseException:
            # Batches already handed to the writer finish; what they commit stays committed
            # and is reported. A batch after a failed one fails too (the job did not move).
            while pending:
                try:
                    await settle(len(pending) - 1)
                except (GatewayError, asyncio.CancelledError, KeyboardInterrupt):
                    pass
            raise
        finally:
            if report_file is not None:
                report_file.close()


def _json_line(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n"
