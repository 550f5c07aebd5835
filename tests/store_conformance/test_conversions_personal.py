"""ConversionStore, RecognitionStore, StockStore and PurgeStore: batched writes and retention.

What was written is read back through the protocols only: ``claim_conversions`` returns the
stored record of each source, ``purge(dry_run=True)`` counts what a purge would delete.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from keys.errors import AlreadyExistsError, ConcurrentChangeError, NotFoundError
from keys.model import ConversionRecord, IssuedHomeCode
from keys.personal import PurgeResult
from keys.store import Store
from store_conformance.backends import Backend
from store_conformance.data import (
    ACTOR,
    FAR_FUTURE,
    T0,
    ZHEJIANG,
    anchors,
    conversion,
    digest,
    recognition,
    revocation_batch,
    snapshot,
    stock,
    stock_batch,
)

JOB = digest("stock file")


async def counts(store: Store, before: datetime = FAR_FUTURE) -> tuple[int, int, int, int]:
    """(recognitions, conversions, stock conversions, kept revoked) older than ``before``."""
    result = await store.purge(recognitions_before=before, conversions_before=before, dry_run=True)
    assert result.dry_run
    return result.recognitions, result.conversions, result.stock_conversions, result.kept_revoked


def test_an_earlier_conversion_wins_and_each_record_comes_back_in_order(
    store: Store, arun: Any
) -> None:
    async def scenario() -> None:
        await store.upsert_region(ZHEJIANG, actor=ACTOR, now=T0)
        assert await store.claim_conversions([]) == []
        first = await store.claim_conversions([conversion("a"), conversion("b")])
        assert first == [conversion("a"), conversion("b")]
        retry = conversion("a", converted_code="HC1:other", converted_code_id="c-other")
        again = await store.claim_conversions([conversion("c"), retry, conversion("b")])
        assert again == [conversion("c"), conversion("a"), conversion("b")]
        assert (await counts(store))[1] == 3

    arun(scenario())


def test_a_conversion_round_trips_with_its_revocation_time(store: Store, arun: Any) -> None:
    record = conversion("a", revoked_at=T0 + timedelta(hours=2))

    async def scenario() -> list[ConversionRecord]:
        await store.upsert_region(ZHEJIANG, actor=ACTOR, now=T0)
        await store.claim_conversions([record])
        return await store.claim_conversions([conversion("a")])

    assert arun(scenario()) == [record]


def test_an_issued_home_code_is_found_by_its_code_id_with_its_revocation_at_once(
    store: Store, arun: Any
) -> None:
    """HomeCodeStore: partner and stock conversions by code id (GetCodeStatus); a revocation
    batch that reaches a conversion is seen by the next read."""

    async def scenario() -> list[IssuedHomeCode | None]:
        await store.upsert_region(ZHEJIANG, actor=ACTOR, now=T0)
        await store.claim_conversions([conversion("a"), conversion("b")])
        await store.open_stock_job(JOB, "city.csv", T0)
        await store.commit_stock_batch(stock_batch(JOB, 0, 1))
        seen = [await store.home_code(i) for i in ("c-a", "SC-1", "c-none", "HC1:a")]
        await store.apply_revocation_batch(
            revocation_batch("330000", "b-1", codes=("a",), effective_at=T0 + timedelta(hours=1))
        )
        seen.append(await store.home_code("c-a"))
        seen.append(await store.home_code("c-b"))
        return seen

    a, stocked, none, by_text, revoked, other = arun(scenario())
    assert a == IssuedHomeCode("c-a", "HC1:a", "h1-a", T0 + timedelta(days=1))
    assert stocked == IssuedHomeCode(
        "SC-1", "SC1:1", "h1-stock-1", T0 + timedelta(days=7), None, "green"
    )
    assert none is None and by_text is None
    assert revoked is not None and revoked.revoked_at == T0 + timedelta(hours=1)
    assert other is not None and other.revoked_at is None


def test_a_reused_converted_code_id_stores_nothing_of_the_batch(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.upsert_region(ZHEJIANG, actor=ACTOR, now=T0)
        await store.claim_conversions([conversion("a")])
        clash = conversion("b", converted_code_id="c-a")
        with pytest.raises(AlreadyExistsError) as caught:
            await store.claim_conversions([conversion("c"), clash])
        assert caught.value.reason == "ALREADY_EXISTS"
        assert (await counts(store))[1] == 1

    arun(scenario())


def test_a_conversion_of_an_unknown_region_stores_nothing_of_the_batch(
    store: Store, arun: Any
) -> None:
    """The batch is refused whole, as claim_conversions documents: ALREADY_EXISTS (the writer
    only converts codes of known regions, so this is a fault, not a partner's input)."""

    async def scenario() -> None:
        await store.upsert_region(ZHEJIANG, actor=ACTOR, now=T0)
        with pytest.raises(AlreadyExistsError):
            await store.claim_conversions([conversion("a"), conversion("x", region="110000")])
        assert (await counts(store))[1] == 0

    arun(scenario())


def test_two_stores_claiming_one_source_at_once_agree_on_one_record(
    backend: Backend, arun: Any
) -> None:
    """Two replicas converting the same code concurrently: one home code for both callers."""

    async def scenario() -> None:
        one, two = await backend.open(), await backend.open()
        try:
            await one.upsert_region(ZHEJIANG, actor=ACTOR, now=T0)
            mine = [conversion(f"s{n}", converted_code_id=f"one-{n}") for n in range(20)]
            theirs = [conversion(f"s{n}", converted_code_id=f"two-{n}") for n in range(20)]
            got_one, got_two = await asyncio.gather(
                one.claim_conversions(mine), two.claim_conversions(theirs)
            )
            assert got_one == got_two
            assert len({r.converted_code_id for r in got_one}) == 20
            assert (await counts(one))[1] == 20
        finally:
            await one.close()
            await two.close()

    arun(scenario())


def test_recognitions_are_appended_in_batches_and_counted_by_time(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.append_recognitions([])
        await store.append_recognitions([recognition(n) for n in range(5)])
        later = T0 + timedelta(hours=1)
        await store.append_recognitions([recognition(n, at=later) for n in range(5, 8)])
        assert (await counts(store))[0] == 8
        assert (await counts(store, later))[0] == 5
        assert (await counts(store, T0))[0] == 0

    arun(scenario())


def test_an_overlong_recognition_field_is_cut_not_refused(store: Store, arun: Any) -> None:
    """The log never refuses a decided code: each field is cut to its column's bound."""
    entry = recognition(1)._replace(reason="R" * 500, request_id="q" * 5000)

    async def scenario() -> int:
        await store.append_recognitions([entry])
        return (await counts(store))[0]

    assert arun(scenario()) == 1


def test_a_stock_job_is_opened_once_and_moves_on_batch_by_batch(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        job = await store.open_stock_job(JOB, "city.csv", T0)
        assert (job.digest, job.source, job.committed_rows, dict(job.counts)) == (
            JOB, "city.csv", 0, {},
        )  # fmt: skip
        assert job.finished_at is None
        assert (await store.open_stock_job(JOB, "renamed.csv", T0)).source == "city.csv"
        first = await store.commit_stock_batch(stock_batch(JOB, 0, 1, 2, 3, rejected=1))
        assert first.counts == {"read": 3, "rejected": 1, "converted": 3, "green": 3}
        assert first.conflicts == ()
        second = await store.commit_stock_batch(stock_batch(JOB, 3, 3, 4))
        assert second.counts["converted"] == 4 and second.counts["already_converted"] == 1
        job = await store.open_stock_job(JOB, "city.csv", T0)
        assert job.committed_rows == 5 and job.counts == second.counts
        done = await store.finish_stock_job(JOB, T0 + timedelta(hours=1))
        assert done.finished_at == T0 + timedelta(hours=1) and done.committed_rows == 5
        assert (await counts(store))[2] == 4

    arun(scenario())


def test_a_stock_batch_from_a_stale_row_changes_nothing(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await store.open_stock_job(JOB, "city.csv", T0)
        await store.commit_stock_batch(stock_batch(JOB, 0, 1, 2))
        before = await store.open_stock_job(JOB, "city.csv", T0)
        with pytest.raises(ConcurrentChangeError):
            await store.commit_stock_batch(stock_batch(JOB, 0, 3, 4))
        assert await store.open_stock_job(JOB, "city.csv", T0) == before
        assert (await counts(store))[2] == 2

    arun(scenario())


def test_a_certificate_converted_again_for_another_holder_is_a_conflict(
    store: Store, arun: Any
) -> None:
    async def scenario() -> None:
        await store.open_stock_job(JOB, "city.csv", T0)
        await store.commit_stock_batch(stock_batch(JOB, 0, 1))
        other = stock(1, holder="h1-someone-else", code_id="SC-other")
        batch = stock_batch(JOB, 1, 2)
        batch = type(batch)(**{**batch.__dict__, "records": (other,), "rows": (2,)})
        result = await store.commit_stock_batch(batch)
        assert result.conflicts == (2,) and result.counts["holder_conflicts"] == 1
        assert (await counts(store))[2] == 1

    arun(scenario())


def test_a_stock_code_id_reused_by_another_certificate_stores_nothing(
    store: Store, arun: Any
) -> None:
    async def scenario() -> None:
        await store.open_stock_job(JOB, "city.csv", T0)
        await store.commit_stock_batch(stock_batch(JOB, 0, 1))
        batch = stock_batch(JOB, 1, 2, 3)
        clash = stock(3, code_id="SC-1")
        batch = type(batch)(**{**batch.__dict__, "records": (batch.records[0], clash)})
        with pytest.raises(AlreadyExistsError):
            await store.commit_stock_batch(batch)
        job = await store.open_stock_job(JOB, "city.csv", T0)
        assert job.committed_rows == 1 and (await counts(store))[2] == 1

    arun(scenario())


@pytest.mark.parametrize("bad", ["", "0" * 63, "G" * 64, digest("x").upper()])
def test_a_stock_job_is_keyed_by_a_sha256_hex_digest(store: Store, arun: Any, bad: str) -> None:
    with pytest.raises(ValueError):
        arun(store.open_stock_job(bad, "city.csv", T0))


def test_finishing_an_unknown_stock_job_is_not_found(store: Store, arun: Any) -> None:
    with pytest.raises(NotFoundError):
        arun(store.finish_stock_job(JOB, T0))


def test_a_purge_deletes_what_is_older_than_its_cut_offs(store: Store, arun: Any) -> None:
    cut = T0 + timedelta(days=2)

    async def scenario() -> None:
        await store.install_partner(ZHEJIANG, anchors(60), replace=False, actor=ACTOR, now=T0)
        expired, kept = T0 + timedelta(days=1), T0 + timedelta(days=5)
        await store.claim_conversions(
            [
                conversion("old", expires_at=expired),
                conversion("new", expires_at=kept),
                conversion("revoked", expires_at=expired),
            ]
        )
        await store.apply_revocation_batch(
            revocation_batch("330000", "b", codes=("revoked",), effective_at=cut)
        )
        await store.append_recognitions([recognition(1), recognition(2, at=kept)])
        await store.open_stock_job(JOB, "city.csv", T0)
        await store.commit_stock_batch(stock_batch(JOB, 0, 1))  # expires T0 + 7 days
        before = await snapshot(store)
        dry = await store.purge(recognitions_before=cut, conversions_before=cut, dry_run=True)
        assert dry == PurgeResult(1, 1, 0, 1, True, {"recognitions": cut, "conversions": cut})
        assert await snapshot(store) == before  # a dry run deletes nothing
        done = await store.purge(recognitions_before=cut, conversions_before=cut)
        assert (done.recognitions, done.conversions, done.kept_revoked, done.dry_run) == (
            1, 1, 1, False,
        )  # fmt: skip
        assert await counts(store) == (1, 2, 1, 0)
        survivors = await store.claim_conversions([conversion("new"), conversion("revoked")])
        assert [r.source_key for r in survivors] == ["new", "revoked"]
        # Revocations, keys and the audit trail are never purged.
        assert (await snapshot(store))["audit"] == before["audit"]
        assert (await snapshot(store))["revocations"] == before["revocations"]

    arun(scenario())


def test_a_purge_with_no_cut_offs_deletes_nothing(store: Store, arun: Any) -> None:
    async def scenario() -> PurgeResult:
        await store.append_recognitions([recognition(1)])
        return await store.purge(recognitions_before=None, conversions_before=None)

    assert arun(scenario()) == PurgeResult()
