"""Batch stock conversion rate: ``trustgw convert-batch`` on a generated 100,000-row CSV.

    python bench/stock.py                 # 100,000 rows, in process; last line is one JSON object
    python bench/stock.py --rows 20000    # smaller
    python bench/stock.py --cli           # through the command (python -m gateway.cli)

Generates a realistic file (made-up holders from ``adapters.simulator.fake_holder``, the cities
of the province, random rule inputs: about 80 % green), a fresh development data directory, and
converts it once; prints rows/s and the summary. A second run of the same file (``--twice``)
measures the idempotent re-run (every row already converted: the job is complete, nothing read).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adapters.simulator import fake_holder  # noqa: E402
from gateway.runtime.datadir import DataDir  # noqa: E402
from gateway.stock.rows import COLUMNS  # noqa: E402
from keys.timeutil import to_iso, utcnow  # noqa: E402

CITIES = (
    "370100", "370200", "370300", "370400", "370500", "370600", "370700", "370800",
    "370900", "371000", "371100", "371300", "371400", "371500", "371600", "371700",
)  # fmt: skip


def sample_rows(
    count: int,
    now: datetime,
    seed: int = 20200311,
    holder: Callable[[random.Random], tuple[str, str]] = fake_holder,
) -> Iterator[dict[str, str]]:
    """``count`` certificate rows with the columns of docs/stock-conversion.md."""
    rng = random.Random(seed)
    today = now.date()

    def day(lo: int, hi: int) -> str:
        return (today - timedelta(days=rng.randint(lo, hi))).isoformat()

    for n in range(count):
        id_number, name = holder(rng)
        row = dict.fromkeys(COLUMNS, "")
        row.update(
            city=rng.choice(CITIES),
            certificate_id=f"C{n:08d}",
            id_number=id_number,
            name=name,
            status="green",
            resident_since=day(20, 4000),
            temperature=f"{rng.uniform(35.8, 37.1):.1f}",
            issued_at=to_iso(now - timedelta(days=rng.randint(1, 30))),
            expires_at=to_iso(now + timedelta(days=rng.randint(10, 60))),
        )
        draw = rng.random()
        if draw < 0.03:
            row["resident_since"] = day(0, 13)
        elif draw < 0.05:
            row["temperature"] = f"{rng.uniform(37.3, 39.5):.1f}"
        elif draw < 0.07:
            row["dry_cough"] = "1"
        elif draw < 0.09:
            row["last_arrival"] = day(0, 13)
        elif draw < 0.11:
            row["case"] = "close_contact"
            row["observation_end"] = day(-7, 7)
        elif draw < 0.13:
            row["case"] = "confirmed"
            row["discharged_on"] = day(0, 40)
        elif draw < 0.15:
            row["case"] = rng.choice(("suspected", "positive", "high_risk_contact"))
            row["isolation_start"] = day(14, 40)
            row["isolation_end"] = day(-3, 10)
        elif draw < 0.17:
            row["status"] = rng.choice(("yellow", "red"))
        elif draw < 0.18:
            row["last_arrival"] = day(30, 300)
        yield row


def write_csv(path: Path, rows: Iterator[dict[str, str]]) -> int:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        count = 0
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


async def _prepare(data_dir: Path, now: datetime) -> None:
    from keys.keystore import KeyDirectory
    from keys.store import SQLiteStore

    logging.getLogger("trustgw.keys").setLevel(logging.ERROR)  # the dev-mode warning
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = DataDir(data_dir)
    KeyDirectory.create(paths.keys, dev=True, passphrase=None, now=now - timedelta(days=1))
    store = await SQLiteStore.open(paths.database)
    await store.close()


def run_in_process(path: Path, data_dir: Path, now: datetime) -> dict[str, object]:
    from gateway.cli import main

    result = data_dir / "summary.json"
    saved = sys.stdout
    with result.open("w") as f:
        sys.stdout = f
        try:
            code = main(
                ["convert-batch", str(path), "--data-dir", str(data_dir), "--json", "--quiet",
                 "--at", to_iso(now)]
            )  # fmt: skip
        finally:
            sys.stdout = saved
    if code != 0:
        raise SystemExit(f"convert-batch failed with exit status {code}")
    return dict(json.loads(result.read_text()))


def run_cli(path: Path, data_dir: Path, now: datetime) -> dict[str, object]:
    proc = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "gateway.cli", "convert-batch", str(path), "--data-dir",
         str(data_dir), "--json", "--quiet", "--at", to_iso(now)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(proc.stdout))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=100_000, help="rows (default %(default)s)")
    p.add_argument("--cli", action="store_true", help="run the command in a subprocess")
    p.add_argument("--twice", action="store_true", help="also time a second run of the file")
    p.add_argument("--keep", type=Path, help="keep the data directory and file here")
    opts = p.parse_args(argv)
    now = utcnow().replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="trustgw-stock-") as tmp:
        base = opts.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        data_dir = base / "data"
        path = base / "certificates.csv"
        t0 = time.perf_counter()
        rows = write_csv(path, sample_rows(opts.rows, now))
        generated = time.perf_counter() - t0
        print(
            f"generated {rows:,} rows ({path.stat().st_size / 1e6:.1f} MB) in {generated:.1f} s",
            flush=True,
        )
        asyncio.run(_prepare(data_dir, now))
        run = run_cli if opts.cli else run_in_process
        t0 = time.perf_counter()
        summary = run(path, data_dir, now)
        wall = time.perf_counter() - t0
        print(
            f"converted {summary['converted']:,} of {summary['rows_read']:,} rows in {wall:.1f} s "
            f"(wall, {'subprocess' if opts.cli else 'in process'}): {rows / wall:,.0f} rows/s; "
            f"the command's own figure {summary['rows_per_second']:,.0f} rows/s"
        )
        print(f"colours {summary['colours']}, rejected {summary['rejected']}")
        line: dict[str, object] = {
            "bench": "stock",
            "rows": rows,
            "mode": "cli" if opts.cli else "in-process",
            "wall_seconds": round(wall, 2),
            "rows_per_second": round(rows / wall),
            "command_rows_per_second": summary["rows_per_second"],
            "converted": summary["converted"],
            "rejected": summary["rejected"],
        }
        if opts.twice:
            t0 = time.perf_counter()
            again = run(path, data_dir, now)
            line["second_run_seconds"] = round(time.perf_counter() - t0, 2)
            line["second_run_status"] = again["status"]
        print(json.dumps(line, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
