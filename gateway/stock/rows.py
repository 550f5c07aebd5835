"""Rows of a stock file: reading CSV or JSON Lines, and validating one row into a
:class:`Certificate` (docs/stock-conversion.md, "The file").

Bad rows are :class:`RowError` values, never exceptions that end the run; the message never
quotes the row's values. The raw ID number and name are not kept: only the holder's pseudonym.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from adapters.base import Colour
from adapters.fields import valid_id_number
from keys.errors import GatewayError, RowError, TimeInvalidError, TimeOffsetRequiredError
from keys.jsonutil import loads_strict
from keys.model import HOME_REGION
from keys.pseudonym import Pseudonymiser
from keys.timeutil import TIME_FORMS, parse_time

MAX_FIELD_CHARS = 256
MAX_LINE_BYTES = 64 * 1024
FORMATS = ("csv", "jsonl")

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

_CITY = re.compile(r"37[0-9]{4}")  # ASCII digits: \d takes any script's
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


# --- rows --------------------------------------------------------------------------------------


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
                obj = loads_strict(line, max_bytes=MAX_LINE_BYTES, max_depth=4)
            except GatewayError as exc:
                yield number, RowError("MALFORMED_ROW", f"not a JSON object ({exc})")
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
