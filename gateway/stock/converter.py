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
import codecs
import csv
import hashlib
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol, TextIO

from adapters.base import Colour
from adapters.fields import CHINA_STANDARD_TIME, valid_id_number
from gateway import tokens
from keys.crypto import PrivateKey
from keys.errors import GatewayError, TimeInvalidError, TimeOffsetRequiredError
from keys.keystore import GatewayKeyInfo, KeyRole
from keys.model import HOME_REGION
from keys.personal import StockBatch, StockBatchResult, StockConversion, StockJob
from keys.pseudonym import Pseudonymiser
from keys.timeutil import TIME_FORMS, ensure_utc, parse_time, to_unix

FORMATS = ("csv", "jsonl")
BATCH_SIZE = 500
DEFAULT_VALIDITY = timedelta(days=7)
FEVER_CELSIUS = 37.3
DAYS = 14  # the plan's 14 days, counted in calendar days of China Standard Time
MAX_FIELD_CHARS = 256
MAX_LINE_BYTES = 64 * 1024

REQUIRED = ("city", "certificate_id", "id_number", "name", "status", "resident_since")
OPTIONAL = (
    "temperature",
    "dry_cough",
    "fatigue",
    "case",
    "discharged_on",
    "isolation_start",
    "isolation_end",
    "observation_end",
    "last_arrival",
    "issued_at",
    "expires_at",
)
COLUMNS = REQUIRED + OPTIONAL
CASES = ("none", "confirmed", "suspected", "positive", "close_contact", "high_risk_contact")

_CITY = re.compile(r"37\d{4}")
_CERTIFICATE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# An ID-number-shaped sequence anywhere in a certificate id: 15 digits in a row. That is the old
# 15-digit resident ID, and the start of every 18-character one (17 digits and a digit or X).
# Certificate ids are stored as they are, so one that may embed a person's ID number is refused,
# whoever's number it is.
_ID_NUMBER_SHAPED = re.compile(r"[0-9]{15}")
_STATUS = {
    "green": Colour.GREEN,
    "绿": Colour.GREEN,
    "绿码": Colour.GREEN,
    "yellow": Colour.YELLOW,
    "黄": Colour.YELLOW,
    "黄码": Colour.YELLOW,
    "red": Colour.RED,
    "红": Colour.RED,
    "红码": Colour.RED,
}
_FLAGS = {"": False, "0": False, "false": False, "no": False, "否": False, "n": False}
_FLAGS.update({"1": True, "true": True, "yes": True, "是": True, "y": True})
_RANK = {Colour.GREEN: 0, Colour.YELLOW: 1, Colour.RED: 2}


# --- rows --------------------------------------------------------------------------------------


class RowError(Exception):
    """A row that cannot be converted. The message never quotes the row's values."""

    def __init__(self, reason: str, message: str, column: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.column = column


@dataclass(frozen=True)
class Certificate:
    """A validated row. The raw ID number and name are not kept: only the holder's pseudonym."""

    city: str
    certificate_id: str
    holder: str
    status: Colour
    resident_since: date
    temperature: float | None = None
    dry_cough: bool = False
    fatigue: bool = False
    case: str = "none"
    discharged_on: date | None = None
    isolation_start: date | None = None
    isolation_end: date | None = None
    observation_end: date | None = None
    last_arrival: date | None = None
    issued_at: datetime | None = None
    expires_at: datetime | None = None


def _text(raw: Mapping[str, Any], column: str) -> str:
    value = raw.get(column)
    if value.__class__ is str:  # the common case first: every CSV value (hot: ~20 per row)
        text = value.strip()
        if len(text) > MAX_FIELD_CHARS:
            raise RowError(
                "BAD_VALUE", f"{column}: longer than {MAX_FIELD_CHARS} characters", column
            )
        return text
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if not isinstance(value, (str, int, float)):
        raise RowError("BAD_VALUE", f"{column}: not a text or number value", column)
    text = str(value).strip()
    if len(text) > MAX_FIELD_CHARS:
        raise RowError("BAD_VALUE", f"{column}: longer than {MAX_FIELD_CHARS} characters", column)
    return text


def _required(raw: Mapping[str, Any], column: str) -> str:
    text = _text(raw, column)
    if not text:
        raise RowError("MISSING_FIELD", f"{column} is empty or missing", column)
    return text


def _date(raw: Mapping[str, Any], column: str) -> date | None:
    text = _text(raw, column)
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise RowError("BAD_DATE", f"{column}: not a date (YYYY-MM-DD)", column) from None


def _time(raw: Mapping[str, Any], column: str) -> datetime | None:
    text = _text(raw, column)
    if not text:
        return None
    try:
        return parse_time(text)
    except TimeOffsetRequiredError:
        raise RowError(
            "BAD_TIME", f"{column}: a time without a UTC offset; use {TIME_FORMS}", column
        ) from None
    except TimeInvalidError:
        raise RowError("BAD_TIME", f"{column}: not a time; use {TIME_FORMS}", column) from None


def _flag(raw: Mapping[str, Any], column: str) -> bool:
    text = _text(raw, column).lower()
    if text not in _FLAGS:
        raise RowError("BAD_FLAG", f"{column}: not one of 1/0, true/false, yes/no", column)
    return _FLAGS[text]


def parse_row(raw: Mapping[str, Any], pseudonymise: Pseudonymiser, city: str = "") -> Certificate:
    """Validate one row; raises :class:`RowError`. ``city`` (``--city``) fills an empty city
    column and must match a filled one."""
    row_city = _text(raw, "city") or city
    if not row_city:
        raise RowError("MISSING_FIELD", "city is empty or missing", "city")
    if _CITY.fullmatch(row_city) is None or row_city == HOME_REGION:
        raise RowError("BAD_CITY", "city: not a 6-digit code of a city of the province (37xxxx)")
    if city and row_city != city:
        raise RowError("CITY_MISMATCH", f"city: the row is not from city {city}", "city")
    certificate_id = _required(raw, "certificate_id")
    if _CERTIFICATE_ID.fullmatch(certificate_id) is None:
        raise RowError(
            "BAD_CERTIFICATE_ID",
            "certificate_id: 1 to 64 characters of A-Z a-z 0-9 . _ : -, starting alphanumeric",
            "certificate_id",
        )
    id_number = _required(raw, "id_number").upper()
    if not valid_id_number(id_number, check_digit=True):
        raise RowError(
            "BAD_ID_NUMBER",
            "id_number: not an 18-character ID number with a valid check digit",
            "id_number",
        )
    if _ID_NUMBER_SHAPED.search(certificate_id) is not None:
        raise RowError(
            "CERTIFICATE_ID_PERSONAL",
            "certificate_id: contains an ID-number-shaped sequence (15 or more digits in a row); "
            "certificate ids are stored and must not carry an ID number",
            "certificate_id",
        )
    if len(_required(raw, "name")) > 64:  # checked for presence only: never kept
        raise RowError("BAD_NAME", "name: longer than 64 characters", "name")
    status = _STATUS.get(_required(raw, "status").lower())
    if status is None:
        raise RowError("BAD_STATUS", "status: not green, yellow or red", "status")
    _required(raw, "resident_since")
    resident_since = _date(raw, "resident_since")
    assert resident_since is not None
    temperature: float | None = None
    if text := _text(raw, "temperature"):
        try:
            temperature = float(text)
        except ValueError:
            temperature = None
        if temperature is None or not 30.0 <= temperature <= 45.0:
            raise RowError(
                "BAD_TEMPERATURE", "temperature: not degrees Celsius (30-45)", "temperature"
            )
    case = _text(raw, "case").lower() or "none"
    if case not in CASES:
        raise RowError("BAD_CASE", f"case: not one of {', '.join(CASES)}", "case")
    issued_at = _time(raw, "issued_at")
    expires_at = _time(raw, "expires_at")
    if issued_at is not None and expires_at is not None and expires_at <= issued_at:
        raise RowError("BAD_TIME", "expires_at: not after issued_at", "expires_at")
    return Certificate(
        city=row_city,
        certificate_id=certificate_id,
        holder=pseudonymise(HOME_REGION, id_number),
        status=status,
        resident_since=resident_since,
        temperature=temperature,
        dry_cough=_flag(raw, "dry_cough"),
        fatigue=_flag(raw, "fatigue"),
        case=case,
        discharged_on=_date(raw, "discharged_on"),
        isolation_start=_date(raw, "isolation_start"),
        isolation_end=_date(raw, "isolation_end"),
        observation_end=_date(raw, "observation_end"),
        last_arrival=_date(raw, "last_arrival"),
        issued_at=issued_at,
        expires_at=expires_at,
    )


# --- the provincial rules ----------------------------------------------------------------------


def _days_since(day: date | None, today: date) -> int:
    return 10**6 if day is None else (today - day).days


def _isolated_enough(cert: Certificate, today: date) -> bool:
    """Isolation ended (on or before today) and lasted at least 14 days."""
    start, end = cert.isolation_start, cert.isolation_end
    return start is not None and end is not None and end <= today and (end - start).days >= DAYS


def decide(cert: Certificate, now: datetime) -> tuple[Colour, tuple[str, ...]]:
    """The colour under the plan's eligibility rules at ``now``, and the rules that failed.

    Green only if every rule holds; red for fever or an active confirmed, suspected or positive
    case; yellow for any other failed rule. Never better than the city's own status.
    """
    today = ensure_utc(now).astimezone(CHINA_STANDARD_TIME).date()
    red: list[str] = []
    yellow: list[str] = []
    if cert.resident_since > today or _days_since(cert.resident_since, today) < DAYS:
        yellow.append("RESIDENT_UNDER_14_DAYS")
    if cert.temperature is not None and cert.temperature >= FEVER_CELSIUS:
        red.append("FEVER")
    if cert.dry_cough or cert.fatigue:
        yellow.append("SYMPTOMS")
    if cert.case == "confirmed":
        if cert.discharged_on is None or cert.discharged_on > today:
            red.append("CONFIRMED_NOT_DISCHARGED")
        elif _days_since(cert.discharged_on, today) < DAYS:
            yellow.append("DISCHARGED_UNDER_14_DAYS")
    elif cert.case in ("suspected", "positive"):
        if cert.isolation_end is None or cert.isolation_end > today:
            red.append("NOT_CURED")
        elif not _isolated_enough(cert, today):
            yellow.append("ISOLATED_UNDER_14_DAYS")
    elif cert.case == "close_contact":
        if cert.observation_end is None or cert.observation_end > today:
            yellow.append("UNDER_MEDICAL_OBSERVATION")
    elif cert.case == "high_risk_contact" and not _isolated_enough(cert, today):
        yellow.append("CONTACT_ISOLATED_UNDER_14_DAYS")
    if cert.last_arrival is not None and _days_since(cert.last_arrival, today) < DAYS:
        yellow.append("ARRIVED_UNDER_14_DAYS")
    colour = Colour.RED if red else Colour.YELLOW if yellow else Colour.GREEN
    if _RANK[cert.status] > _RANK[colour]:
        colour = cert.status
        yellow.append(f"CITY_STATUS_{cert.status.value.upper()}")
    return colour, tuple(red + yellow)


# --- reading the file --------------------------------------------------------------------------


@dataclass
class _ByteCounter:
    done: int = 0


def file_digest(path: Path) -> tuple[str, int]:
    """SHA-256 hex digest and size of a file."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def detect_format(path: Path, fmt: str | None) -> str:
    """``fmt`` if given, else from the file's extension; raises ``ValueError``."""
    if fmt:
        if fmt not in FORMATS:
            raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt"):
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise ValueError(f"cannot tell the format of {path.name}: use --format csv|jsonl")


def _lines(f: IO[bytes], counter: _ByteCounter) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    for line in f:
        counter.done += len(line)
        if len(line) > MAX_LINE_BYTES:
            yield "\x00overlong\n"
            continue
        yield decoder.decode(line)


Row = tuple[int, Mapping[str, Any] | RowError]


def read_rows(
    f: IO[bytes], fmt: str, counter: _ByteCounter, *, city_column: bool = True
) -> Iterator[Row]:
    """(row number, fields or error) for every data row; row numbers start at 1.

    CSV: the first record is the header, row n is the n-th record after it. JSON Lines: row n
    is line n; blank lines are skipped. Raises ``ValueError`` if a CSV header lacks a required
    column (``city`` is required unless ``city_column`` is false).
    """
    lines = _lines(f, counter)
    if fmt == "jsonl":
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):
                yield number, RowError("MALFORMED_ROW", "not a JSON object")
                continue
            if not isinstance(obj, dict):
                yield number, RowError("MALFORMED_ROW", "not a JSON object")
                continue
            yield number, obj
        return
    reader = csv.reader(lines, strict=True)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error:
        raise ValueError("the CSV header is not readable") from None
    missing = [c for c in REQUIRED if c not in header and (city_column or c != "city")]
    if missing:
        raise ValueError(f"the CSV header lacks the column(s) {', '.join(missing)}")
    number = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error:
            number += 1
            yield number, RowError("MALFORMED_ROW", "not a valid CSV record")
            continue
        number += 1
        if not record or record == [""]:
            number -= 1
            continue
        if len(record) != len(header):
            yield (
                number,
                RowError(
                    "MALFORMED_ROW", f"{len(record)} fields where the header has {len(header)}"
                ),
            )
            continue
        yield number, dict(zip(header, record, strict=True))


# --- progress ----------------------------------------------------------------------------------


class Progress:
    """A progress bar on a terminal (stderr), periodic lines otherwise, nothing when quiet."""

    def __init__(self, out: TextIO | None, total_bytes: int, *, bar: bool, every: float = 10.0):
        self._out = out
        self._total = max(total_bytes, 1)
        self._bar = bar
        self._every = 0.1 if bar else every
        self._start = time.monotonic()
        self._last = self._start
        self._start_bytes = 0
        self._drawn = False

    def begin(self, done_bytes: int) -> None:
        """Bytes already behind us (skipped rows of a resumed job) do not count toward rate."""
        self._start_bytes = done_bytes

    def update(self, rows: int, done_bytes: int, *, final: bool = False) -> None:
        if self._out is None:
            return
        now = time.monotonic()
        if not final and now - self._last < self._every:
            return
        self._last = now
        elapsed = max(now - self._start, 1e-9)
        rate = rows / elapsed
        fraction = min(done_bytes / self._total, 1.0)
        byte_rate = (done_bytes - self._start_bytes) / elapsed
        left = (self._total - done_bytes) / byte_rate if byte_rate > 0 else 0.0
        if self._bar:
            width = 30
            filled = int(fraction * width)
            self._out.write(
                f"\r{fraction * 100:5.1f}% |{'█' * filled}{'·' * (width - filled)}| "
                f"{rows:,} rows  {rate:,.0f} rows/s  {_clock(left)} left "
            )
            self._drawn = True
            if final:
                self._out.write("\n")
        else:
            self._out.write(
                f"convert-batch: {rows:,} rows ({fraction * 100:.0f}%), {rate:,.0f} rows/s, "
                f"about {_clock(left)} left\n"
            )
        self._out.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# --- the conversion ----------------------------------------------------------------------------


class StockStore(Protocol):
    async def open_stock_job(self, digest: str, source: str, now: datetime) -> StockJob: ...
    async def commit_stock_batch(self, batch: StockBatch) -> StockBatchResult: ...
    async def finish_stock_job(self, digest: str, now: datetime) -> StockJob: ...


class Signers(Protocol):
    def signer(self, role: KeyRole, now: datetime) -> tuple[GatewayKeyInfo, PrivateKey]: ...


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
        code = tokens.sign_home_code(
            {
                "id": code_id,
                "holder": cert.holder,
                "colour": colour.value,
                "iat": to_unix(now),
                "exp": to_unix(expires),
                "src": {"city": cert.city, "certificate_id": cert.certificate_id},
            },
            self._info.kid,
            self._key,
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


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
