"""claim_conversions: one transaction stores new conversions and returns what is stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.aio import run

from keys.model import ConversionRecord, Mode, Region
from keys.store import SQLiteStore

NOW = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)


def _record(source: str, code: str, region: str = "110000") -> ConversionRecord:
    return ConversionRecord(
        region=region,
        source_key=source,
        holder="h1-x",
        converted_code_id=f"SD-{source}-{code}",
        converted_code=f"SD1:{code}",
        issued_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        created_at=NOW,
    )


@pytest.mark.parametrize(
    "path", [pytest.param("file", id="file"), pytest.param(":memory:", id="memory")]
)
def test_an_earlier_conversion_wins_and_new_ones_are_stored(tmp_path: Path, path: str) -> None:
    async def scenario() -> tuple[list[ConversionRecord], list[ConversionRecord], int]:
        store = await SQLiteStore.open(tmp_path / "db.sqlite" if path == "file" else path)
        try:
            await store.upsert_region(Region("110000", "Beijing", Mode.CONVERT, timedelta(days=1)))
            first = await store.claim_conversions([_record("a", "one")])
            again = await store.claim_conversions([_record("a", "two"), _record("b", "three")])
            return first, again, len(await store.list_conversions())
        finally:
            await store.close()

    first, again, count = run(scenario())
    assert [r.converted_code for r in first] == ["SD1:one"]
    assert [r.converted_code for r in again] == ["SD1:one", "SD1:three"]
    assert count == 2
