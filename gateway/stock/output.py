"""A batch job's output: the home codes of its rows, as CSV or JSON Lines, and QR images.

What the cities hand out (docs/stock-conversion.md, "The output"): one line per converted row,
in row order, with the city, the certificate id, the code id, the ``SD1:`` home code, its colour,
its validity and the row's status. No name, ID number or holder pseudonym is written (the code
carries the holder only as the pseudonym it is signed with). Read from the store page by page, so
a job of any size is written in constant memory; the file is replaced atomically at the end.

QR images come from ``segno`` (pure Python, PNG and SVG without Pillow): one file per code,
named after its code id (``SD…``: 32 characters of ``[0-9a-zA-Z]``, safe on every filesystem).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import segno

from keys.personal import StockJob, StockOutputRow
from keys.store.protocols import StockOutputStore
from keys.timeutil import to_iso

OUT_FORMATS = ("csv", "jsonl")
QR_FORMATS = ("png", "svg")
COLUMNS = (
    "row",
    "city",
    "certificate_id",
    "code_id",
    "home_code",
    "colour",
    "valid_from",
    "valid_until",
    "status",
)
_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
PAGE = 5000
QR_SCALE = 4  # pixels per module: a 300-character code is a QR of about 300 px
QR_BORDER = 4  # the quiet zone ISO/IEC 18004 requires, in modules


def out_format(path: Path, given: str | None) -> str:
    """The output format: ``given``, or from the extension (``.csv``; ``.jsonl``, ``.ndjson``,
    ``.json``). Raises ``ValueError`` when neither says."""
    if given is not None:
        if given not in OUT_FORMATS:
            raise ValueError(f"unknown output format {given[:16]!r}: csv or jsonl")
        return given
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path.name}: say --out-format csv or jsonl (the extension {path.suffix!r} does not)"
        )
    return fmt


@dataclass(frozen=True)
class OutputSummary:
    """What was written: lines, codes among them (not holder conflicts) and QR images."""

    job: str
    out: str
    format: str
    rows: int
    codes: int
    qr_images: int = 0
    qr_dir: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON object (``--json``)."""
        return {
            "job": self.job,
            "out": self.out,
            "format": self.format,
            "rows": self.rows,
            "codes": self.codes,
            "qr_images": self.qr_images,
            "qr_dir": self.qr_dir,
        }

    def to_text(self) -> str:
        """One line for an operator."""
        text = (
            f"wrote {self.rows:,} rows ({self.codes:,} codes) of job {self.job[:12]} to {self.out}"
        )
        if self.qr_dir is not None:
            text += f"; {self.qr_images:,} QR images in {self.qr_dir}"
        return text


def row_json(row: StockOutputRow) -> dict[str, Any]:
    """One output row as the JSON Lines file writes it (the CSV has the same columns)."""
    return {
        "row": row.row,
        "city": row.city,
        "certificate_id": row.certificate_id,
        "code_id": row.code_id,
        "home_code": row.code,
        "colour": row.colour,
        "valid_from": to_iso(row.valid_from) if row.valid_from else "",
        "valid_until": to_iso(row.valid_until) if row.valid_until else "",
        "status": row.status,
    }


def qr_image(code: str, fmt: str) -> bytes:
    """The QR image of ``code`` (PNG or SVG), error correction level M."""
    if fmt not in QR_FORMATS:
        raise ValueError(f"unknown QR image format {fmt[:16]!r}: png or svg")
    qr = segno.make_qr(code, error="m", boost_error=False)
    buffer = io.BytesIO()
    qr.save(buffer, kind=fmt, scale=QR_SCALE, border=QR_BORDER)
    return buffer.getvalue()


async def write_output(
    store: StockOutputStore,
    job: StockJob,
    out: Path,
    fmt: str,
    *,
    qr_dir: Path | None = None,
    qr_format: str = "png",
    page: int = PAGE,
) -> OutputSummary:
    """Write job ``job``'s output to ``out`` (replaced atomically, mode 0600) and, with
    ``qr_dir``, one QR image per code there (created if missing).

    Raises ``ValueError`` for an unknown format, ``OSError`` if a file cannot be written (the
    previous ``out``, if any, is left as it was), the store's errors.
    """
    if fmt not in OUT_FORMATS:
        raise ValueError(f"unknown output format {fmt[:16]!r}: csv or jsonl")
    if qr_format not in QR_FORMATS:
        raise ValueError(f"unknown QR image format {qr_format[:16]!r}: png or svg")
    if qr_dir is not None:
        qr_dir.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    handle, temp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    rows = codes = images = 0
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as f:
            writer = _writer(f, fmt)
            after = 0
            while True:
                batch = await store.stock_job_rows(job.digest, after_row=after, limit=page)
                for row in batch:
                    writer(row_json(row))
                    rows += 1
                    if row.code:
                        codes += 1
                        if qr_dir is not None:
                            _write_file(
                                qr_dir / f"{row.code_id}.{qr_format}", qr_image(row.code, qr_format)
                            )
                            images += 1
                if len(batch) < page:
                    break
                after = batch[-1].row
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, out)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return OutputSummary(
        job.digest, str(out), fmt, rows, codes, images, None if qr_dir is None else str(qr_dir)
    )


def _writer(f: TextIO, fmt: str) -> Any:
    if fmt == "jsonl":

        def write_jsonl(obj: dict[str, Any]) -> None:
            f.write(json.dumps(obj, ensure_ascii=False, sort_keys=False) + "\n")

        return write_jsonl
    writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    return writer.writerow


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` by a rename (a reader never sees half an image)."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)
