"""The packed revocation index answers exactly what a plain set of revocations answers.

The model is the rule itself (docs/partners.md, revocations): a code is refused from the
earliest effective time it was revoked at; a holder's code is refused by the latest holder
revocation in force at ``now`` when it was issued before that revocation. The index under test is
built whole, built from a change at a time (the overlay of a running gateway) and folded
(:meth:`RevocationIndex.merged`), on random data with the edges drawn often: ``now`` equal to an
effective time, a code issued exactly at one, one code revoked twice, one holder revoked at
several times, values that are not pseudonyms at all.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keys import revocations
from keys.errors import CodeRevokedError
from keys.pseudonym import Pseudonymiser
from keys.records import CodeRevocation, HolderRevocation
from keys.revocations import PackedTable, RevocationIndex, RevocationRows
from keys.timeutil import from_unix, to_unix

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
REGIONS = ("110000", "230000", "330000")
VALUES = ("c1-aaaa", "c1-bbbb", "h1-cccc", "", "ü-ß", "x" * 200, "\ud800")


def same(region: str, code_id: str) -> str:
    return code_id


def code_key(region: str, code_id: str) -> str:
    return f"{region}:{code_id}"


class Model:
    """The rule on plain Python sets and dicts: what the index must agree with."""

    def __init__(self, codes: list[CodeRevocation], holders: list[HolderRevocation]) -> None:
        self.codes: dict[tuple[str, str], int] = {}
        for c in codes:
            key, t = (c.region, c.code_key), to_unix(c.effective_at)
            self.codes[key] = min(t, self.codes.get(key, t))
        self.holders: dict[tuple[str, str], set[int]] = {}
        for h in holders:
            self.holders.setdefault((h.region, h.holder), set()).add(to_unix(h.effective_at))

    def code(self, region: str, code_id: str, now: int) -> int | None:
        t = self.codes.get((region, code_key(region, code_id)))
        return t if t is not None and t <= now else None

    def holder(self, region: str, holder: str, issued: int, now: int) -> int | None:
        in_force = [t for t in self.holders.get((region, holder), ()) if t <= now]
        return max(in_force) if in_force and issued < max(in_force) else None


times = st.integers(min_value=T0 - 5, max_value=T0 + 5).map(from_unix)
code_ids = st.sampled_from(VALUES) | st.text(max_size=8)
regions = st.sampled_from(REGIONS)
code_rows = st.builds(
    lambda r, c, t: CodeRevocation(r, code_key(r, c), t), regions, code_ids, times
)
holder_rows = st.builds(
    HolderRevocation, regions, st.sampled_from(VALUES) | st.text(max_size=8), times
)
questions = st.lists(
    st.tuples(
        regions,
        code_ids,
        st.sampled_from(VALUES) | st.text(max_size=8),
        st.integers(T0 - 6, T0 + 6),
        st.integers(T0 - 6, T0 + 6),
    ),
    min_size=1,
    max_size=30,
)


def _rows(
    codes: list[CodeRevocation], holders: list[HolderRevocation], *, buffered: bool = False
) -> RevocationRows:
    rows = RevocationRows(buffered=buffered)
    rows.add_codes((c.region, c.code_key, to_unix(c.effective_at)) for c in codes)
    rows.add_holders((h.region, h.holder, to_unix(h.effective_at)) for h in holders)
    return rows


def _built_in_steps(
    codes: list[CodeRevocation], holders: list[HolderRevocation], steps: int, fold_at: int
) -> RevocationIndex:
    """A first full read, then the rest a change at a time, folded whenever the overlay is
    past ``fold_at`` entries (what KeyRegistry does, with a tiny threshold)."""
    first_codes, first_holders = codes[: len(codes) // 3], holders[: len(holders) // 3]
    index = RevocationIndex.from_rows(_rows(first_codes, first_holders))
    rest_c, rest_h = codes[len(first_codes) :], holders[len(first_holders) :]
    for i in range(steps):
        part_c = rest_c[i::steps]
        part_h = rest_h[i::steps]
        index = index.with_rows(_rows(part_c, part_h, buffered=i % 2 == 0))
        if index.overlay_size > fold_at:
            index = index.merged()
    return index


def _assert_agrees(index: RevocationIndex, model: Model, asked: list[tuple]) -> None:
    for region, code_id, holder, issued, now in asked:
        got = index.code_revoked_at(region, code_id, from_unix(now), code_key)
        want = model.code(region, code_id, now)
        assert (to_unix(got) if got else None) == want, (region, code_id, now)
        got = index.holder_revoked_at(region, holder, from_unix(issued), from_unix(now))
        want = model.holder(region, holder, issued, now)
        assert (to_unix(got) if got else None) == want, (region, holder, issued, now)
        revoked = want is not None or model.code(region, code_id, now) is not None
        if revoked:
            with pytest.raises(CodeRevokedError):
                index.check(region, code_id, holder, from_unix(issued), from_unix(now), code_key)
        else:
            index.check(region, code_id, holder, from_unix(issued), from_unix(now), code_key)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    codes=st.lists(code_rows, max_size=40),
    holders=st.lists(holder_rows, max_size=40),
    asked=questions,
    steps=st.integers(1, 4),
    fold_at=st.integers(0, 10),
)
def test_the_packed_index_agrees_with_a_plain_set(
    codes: list[CodeRevocation],
    holders: list[HolderRevocation],
    asked: list[tuple],
    steps: int,
    fold_at: int,
) -> None:
    model = Model(codes, holders)
    # ask about every stored value too, not only random ones
    asked = (
        asked
        + [
            (c.region, c.code_key.split(":", 1)[1], "", to_unix(c.effective_at), n)
            for c in codes
            for n in (to_unix(c.effective_at) - 1, to_unix(c.effective_at))
        ]
        + [
            (h.region, "", h.holder, i, n)
            for h in holders
            for t in (to_unix(h.effective_at),)
            for i, n in ((t - 1, t), (t, t), (t - 1, t - 1), (t - 1, t + 5))
        ]
    )
    whole = RevocationIndex(codes, holders)
    _assert_agrees(whole, model, asked)
    stepped = _built_in_steps(codes, holders, steps, fold_at)
    _assert_agrees(stepped, model, asked)
    _assert_agrees(stepped.merged(), model, asked)
    assert len(whole) == len(model.codes) + sum(map(len, model.holders.values()))
    assert len(stepped.merged()) == len(whole)


def test_a_full_read_is_packed_as_it_streams_and_still_answers() -> None:
    """Rows ordered by value (a full read) go straight into the region's arrays, each region
    packed when its rows end."""
    n = 20_000
    keyed = sorted(Pseudonymiser(b"k" * 32).code_key("110000", str(i)) for i in range(n))
    rows = RevocationRows()
    rows.add_codes(("110000", key, T0 + i % 7) for i, key in enumerate(keyed))
    rows.add_codes([("230000", "c1-x", T0)])
    assert "110000" in rows.code_tables  # packed once the next region began
    index = RevocationIndex.from_rows(rows)
    assert len(index) == n + 1
    for i in (0, 5, n - 1):
        at = index.code_revoked_at("110000", keyed[i], from_unix(T0 + 100), lambda r, c: c)
        assert at == from_unix(T0 + i % 7)
    assert index.code_revoked_at("110000", "c1-" + "a" * 32, from_unix(T0 + 9), same) is None
    assert index.nbytes() <= 10 * len(index) + 2 * 8300  # 9 bytes an entry, 8 KiB a table


@given(st.lists(st.binary(min_size=20, max_size=20), min_size=2, max_size=50))
def test_the_digest_of_keyed_values_keeps_their_order(macs: list[bytes]) -> None:
    """So that rows read in the store's order arrive in digest order (no sort at start-up)."""
    keyed = sorted("h1-" + base64.b32encode(m).decode().lower() for m in macs)
    digests = [revocations.digest(k) for k in keyed]
    assert digests == sorted(digests)
    # the digest is the leading 15 symbols (75 bits): distinct exactly where those differ
    # (hypothesis also makes values that share them; HMAC outputs do so with odds 2^-75)
    assert len(set(digests)) == len({k[3:18] for k in keyed})


def test_a_change_shares_the_tables_and_folding_keeps_every_answer() -> None:
    base = RevocationIndex([CodeRevocation("110000", "c1-a", from_unix(T0))])
    rows = RevocationRows()
    rows.add_codes([("110000", "c1-a", T0 - 10), ("110000", "c1-b", T0 + 10)])
    rows.add_holders([("110000", "h1-a", T0), ("110000", "h1-a", T0 + 20)])
    changed = base.with_rows(rows)
    assert changed.overlay_size == 3 and base.overlay_size == 0
    for index in (changed, changed.merged()):
        now = from_unix(T0 + 30)
        assert index.code_revoked_at("110000", "c1-a", now, lambda r, c: c) == from_unix(T0 - 10)
        assert index.code_revoked_at("110000", "c1-b", now, lambda r, c: c) == from_unix(T0 + 10)
        issued = from_unix(T0 + 5)
        assert index.holder_revoked_at("110000", "h1-a", issued, now) == from_unix(T0 + 20)
    assert changed.merged().overlay_size == 0
    # the original index did not change
    assert base.code_revoked_at("110000", "c1-a", from_unix(T0 + 30), lambda r, c: c) == from_unix(
        T0
    )


def test_a_packed_table_keeps_a_code_once_and_a_holder_once_per_time() -> None:
    d = revocations.digest("c1-a")
    keyed = [(d << 34) | t for t in (T0 + 3, T0, T0 + 3, T0 + 1)]
    assert PackedTable.pack(list(keyed), unique=True).times_of(d) == [T0]
    assert PackedTable.pack(list(keyed), unique=False).times_of(d) == [T0, T0 + 1, T0 + 3]
    assert PackedTable.pack([], unique=True).times_of(d) == []


def test_a_time_outside_the_stored_range_does_not_wrap() -> None:
    """Effective times are 2000 to 2200 (keys.statements); anything else is clamped, never
    wrapped into another time."""
    rows = RevocationRows()
    rows.add_codes([("110000", "c1-a", -5), ("110000", "c1-b", 1 << 40)])
    index = RevocationIndex.from_rows(rows)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert index.code_revoked_at("110000", "c1-a", now, lambda r, c: c) == datetime(
        1970, 1, 1, tzinfo=UTC
    )
    assert (
        index.code_revoked_at("110000", "c1-b", now + timedelta(days=3650), lambda r, c: c) is None
    )
