"""StockOutputStore: what batch jobs produced, listed and exported again (``trustgw stock``).

A job's output is exactly its committed rows, written in the same transaction as the batch;
rows of certificates purged since are gone with them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from keys.errors import NotFoundError
from keys.personal import StockBatch
from keys.store import Store
from store_conformance.data import T0, digest, stock, stock_batch

JOB = digest("stock file")
OTHER = digest("another file")
MISSING = next(p for p in ("00000000", "ffffffff") if not (JOB + OTHER).count(p))


def test_a_jobs_output_is_its_committed_rows_in_row_order(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.open_stock_job(JOB, "city.csv", T0)
        assert await store.stock_job_rows(JOB) == []
        await store.commit_stock_batch(stock_batch(JOB, 0, 1, 2))
        clash = stock(1, holder="h1-someone-else", code_id="SC-x")
        await store.commit_stock_batch(
            StockBatch(JOB, 2, 5, (stock(2), stock(3), clash), (3, 4, 5), {"read": 3}, T0)
        )
        rows = await store.stock_job_rows(JOB)
        assert [(r.row, r.certificate_id, r.status) for r in rows] == [
            (1, "cert-1", "converted"),
            (2, "cert-2", "converted"),
            (3, "cert-2", "already_converted"),
            (4, "cert-3", "converted"),
            (5, "cert-1", "holder_conflict"),
        ]
        first = rows[0]
        assert (first.code_id, first.code, first.colour, first.valid_from, first.valid_until) == (
            "SC-1", "SC1:1", "green", T0, T0 + timedelta(days=7),
        )  # fmt: skip
        assert rows[2].code == "SC1:2"  # the earlier code is the row's code
        assert (rows[4].code, rows[4].code_id, rows[4].valid_from) == ("", "", None)
        assert await store.stock_job_rows(JOB, after_row=2, limit=2) == rows[2:4]

    arun(scenario())


def test_jobs_are_listed_newest_first_and_found_by_a_prefix(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        older = await store.open_stock_job(JOB, "a.csv", T0)
        newer = await store.open_stock_job(OTHER, "b.csv", T0 + timedelta(hours=1))
        assert await store.list_stock_jobs() == [newer, older]
        assert await store.list_stock_jobs(limit=1) == [newer]
        assert await store.find_stock_job(JOB[:8]) == older
        assert await store.find_stock_job(OTHER.upper()) == newer
        with pytest.raises(NotFoundError):
            await store.find_stock_job(MISSING)
        for bad in ("abc", "g" * 8, "0" * 65):
            with pytest.raises(ValueError):
                await store.find_stock_job(bad)

    arun(scenario())


def test_a_purge_takes_the_output_rows_of_purged_certificates(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.open_stock_job(JOB, "city.csv", T0)
        await store.commit_stock_batch(stock_batch(JOB, 0, 1, 2))
        cut = T0 + timedelta(days=8)  # after both certificates expired
        await store.purge(recognitions_before=None, conversions_before=cut)
        assert await store.stock_job_rows(JOB) == []
        assert (await store.find_stock_job(JOB)).committed_rows == 2  # the job itself is kept

    arun(scenario())


@pytest.mark.parametrize("limit", [0, 100_001])
def test_a_bad_page_size_is_a_value_error(store: Store, arun: Any, limit: int) -> None:
    with pytest.raises(ValueError):
        arun(store.list_stock_jobs(limit=limit))
    with pytest.raises(ValueError):
        arun(store.stock_job_rows(JOB, limit=limit))
