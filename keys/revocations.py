"""Code and holder revocations, indexed in memory for the hot path.

A code revocation names one code by its code key (the gateway's keyed form of the partner's
:func:`keys.pseudonym.code_hash`, made when the batch arrived): from its effective time on, the
code is refused. The key of a code in hand is computed only for regions that revoked codes.

A holder revocation names a person (by keyed pseudonym): from its effective time on, the
holder's codes *issued before* that time are refused (their status was
overtaken, e.g. the holder turned red); codes issued afterwards carry the new status and are
judged on their own.

**Packed, so that the index stays small with millions of entries.** A province's registry holds
millions of revoked codes and holders; as Python strings in a dict that is well over 100 bytes
each. Here each region's entries are one sorted table of fixed-width digests in flat arrays
(:class:`PackedTable`): a 75-bit digest of the keyed value (11 bits pick one of 2,048 buckets,
64 are stored) and the index of its effective time in a small palette of distinct times (a
batch has one time): 9 bytes an entry. A lookup is a binary search within one bucket
(``bisect`` on the array, in C). Keyed values are HMAC outputs, so two of them share a digest
with probability 2^-75 per pair: a false match would refuse a good code; with a million
entries in one region that is ~3 x 10^-17 per lookup, far below any other failure.

The digest of a code key or pseudonym is its own leading bits, in symbol order: the rows of a
full read (ordered by value) arrive ordered by digest and go straight into the arrays, without
a sort and without a Python object per entry (:class:`RevocationRows`).

**Changes apply incrementally.** :meth:`RevocationIndex.with_rows` returns a new index with the
rows of a change (a revocation batch read from the store) in a small overlay dictionary beside
the packed tables, which are shared, not copied; once the overlay holds more than
:data:`MERGE_AT` entries, :meth:`RevocationIndex.merged` folds it into new tables of the
regions it touches (the caller runs that off the event loop, keys.registry). An index is never
changed after construction: readers keep whichever one they hold.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime

from keys.errors import CodeRevokedError
from keys.pseudonym import CODE_KEY_PREFIX, PSEUDONYM_PREFIX
from keys.records import CodeRevocation, HolderRevocation
from keys.timeutil import to_iso, to_unix

_BUCKETS = 1 << 11  # a digest's top 11 bits pick its bucket; 64 more bits are stored
MERGE_AT = 50_000  # overlay entries above which the overlay is folded into the tables
_LO_MASK = (1 << 32) - 1
_TIME_BITS = 34  # effective times are seconds since 1970, 2000 to 2200: below 2**34
_TIME_MASK = (1 << _TIME_BITS) - 1

#: One row of a revocation table as the store reads it: region, keyed value, unix seconds.
Row = tuple[str, str, int]


# Code keys and pseudonyms are a prefix and 32 base32 symbols (keys.pseudonym): their digest is
# the first 15 symbols (75 of the 160 bits), read in the symbols' byte order, so that rows the
# store reads ordered by value arrive ordered by digest and pack without a sort (RevocationRows).
_KEYED = re.compile(rf"(?:{CODE_KEY_PREFIX}|{PSEUDONYM_PREFIX})[a-z2-7]{{32}}")
_TO_DIGITS = bytes.maketrans(
    b"234567abcdefghijklmnopqrstuvwxyz", b"0123456789abcdefghijklmnopqrstuv"
)


def digest(value: str) -> int:
    """The 75-bit digest under which a code key or holder pseudonym is indexed: the leading 75
    bits of a keyed value of today's form (order-preserving), else of its BLAKE2b digest."""
    if len(value) == 35 and _KEYED.fullmatch(value):
        return int(value.encode("ascii")[3:18].translate(_TO_DIGITS), 32)
    raw = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=10)
    return int.from_bytes(raw.digest(), "big") >> 5


def _time(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _at_array(indexes: Iterable[int], palette: int) -> array[int]:
    """The smallest array type for indexes into a palette of ``palette`` times."""
    code = "B" if palette <= 1 << 8 else "H" if palette <= 1 << 16 else "I"
    return array(code, indexes)


class PackedTable:
    """One region's revocations of one kind: sorted digests and their effective times.

    A digest (75 bits) is its bucket (the top 11 bits) and two 32-bit words, ``mid`` and
    ``lo``; entries are sorted by (digest, time) and ``buckets[b]`` is where bucket ``b``'s
    entries begin (``buckets[b + 1]`` where they end), so only 8 bytes of each digest are
    stored. ``at`` is the index of the entry's time in ``times`` (unix seconds). A code
    appears once (its earliest time); a holder once per distinct time.
    """

    __slots__ = ("at", "buckets", "lo", "mid", "times")

    def __init__(
        self,
        buckets: array[int],
        mid: array[int],
        lo: array[int],
        at: array[int],
        times: tuple[int, ...],
    ) -> None:
        if not len(mid) == len(lo) == len(at) or len(buckets) != _BUCKETS + 1:
            raise ValueError("a packed table's arrays have one length")
        self.buckets = buckets
        self.mid = mid
        self.lo = lo
        self.at = at
        self.times = times

    @classmethod
    def pack(cls, keyed: list[int], unique: bool) -> PackedTable:
        """A table from ``(digest << 34) | seconds`` values (any order; the list is sorted in
        place). ``unique``: keep only the earliest time of each digest (codes)."""
        keyed.sort()
        builder = _TableBuilder(unique)
        for value in keyed:
            builder.add(value >> _TIME_BITS, value & _TIME_MASK)
        return builder.finish()

    def __len__(self) -> int:
        return len(self.mid)

    def nbytes(self) -> int:
        """The bytes the table's arrays take."""
        arrays = (self.buckets, self.mid, self.lo, self.at)
        return sum(a.itemsize * len(a) for a in arrays) + 8 * len(self.times)

    def times_of(self, d: int) -> list[int]:
        """The effective times (ascending unix seconds) stored for digest ``d``."""
        b = d >> 64
        m, lo = (d >> 32) & _LO_MASK, d & _LO_MASK
        mids = self.mid
        end = self.buckets[b + 1]
        i = bisect.bisect_left(mids, m, self.buckets[b], end)
        found: list[int] = []
        while i < end and mids[i] == m:
            if self.lo[i] == lo:
                found.append(self.times[self.at[i]])
            i += 1
        if len(found) > 1:
            found.sort()
        return found

    def keyed(self) -> Iterator[int]:
        """Every entry as ``(digest << 34) | seconds`` (what :meth:`pack` takes)."""
        times, buckets = self.times, self.buckets
        for b in range(_BUCKETS):
            top = b << 64
            for i in range(buckets[b], buckets[b + 1]):
                yield ((top | (self.mid[i] << 32) | self.lo[i]) << _TIME_BITS) | times[self.at[i]]


class _TableBuilder:
    """One region's rows of one kind, appended to flat arrays as they stream in; a table
    without a sort when they arrive ordered by digest (a full read), sorted at the end if not."""

    __slots__ = (
        "at",
        "bucket",
        "buckets",
        "last",
        "lo",
        "mid",
        "ordered",
        "palette",
        "tops",
        "unique",
    )

    def __init__(self, unique: bool) -> None:
        self.buckets: array[int] = array("I", [0])  # filled as the buckets go by
        self.tops: array[int] = array("H")  # each entry's bucket, for a sort if out of order
        self.mid: array[int] = array("I")
        self.lo: array[int] = array("I")
        self.at: array[int] = array("I")
        self.palette: dict[int, int] = {}  # time -> its index in the table's times
        self.bucket = 0  # the bucket being filled
        self.last = -1
        self.ordered = True
        self.unique = unique

    def add(self, d: int, seconds: int) -> None:
        ix = self.palette.get(seconds)
        if ix is None:
            ix = self.palette[seconds] = len(self.palette)
        if d < self.last:
            self.ordered = False
        elif d == self.last and self.ordered:
            if self.unique:  # the same code again, in order: keep its earliest time
                times = list(self.palette)
                if seconds < times[self.at[-1]]:
                    self.at[-1] = ix
                return
            i, m, lo = len(self.mid) - 1, (d >> 32) & _LO_MASK, d & _LO_MASK
            while i >= 0 and self.mid[i] == m and self.lo[i] == lo:  # a holder: once per time
                if self.at[i] == ix:
                    return
                i -= 1
        if self.ordered:
            self.last = d
            b = d >> 64
            while self.bucket < b:  # buckets before this one end here
                self.buckets.append(len(self.mid))
                self.bucket += 1
        self.tops.append(d >> 64)
        self.mid.append((d >> 32) & _LO_MASK)
        self.lo.append(d & _LO_MASK)
        self.at.append(ix)

    def __len__(self) -> int:
        return len(self.mid)

    def finish(self) -> PackedTable:
        if not self.ordered:  # (the buckets were left behind): sort what came
            return PackedTable.pack(list(self._keyed()), unique=self.unique)
        n = len(self.mid)
        while len(self.buckets) < _BUCKETS + 1:
            self.buckets.append(n)
        times = tuple(self.palette)
        return PackedTable(self.buckets, self.mid, self.lo, _at_array(self.at, len(times)), times)

    def _keyed(self) -> Iterator[int]:
        """The entries as ``(digest << 34) | seconds``, whatever their order (no buckets)."""
        times = tuple(self.palette)
        for top, m, lo, a in zip(self.tops, self.mid, self.lo, self.at, strict=True):
            yield (((top << 64) | (m << 32) | lo) << _TIME_BITS) | times[a]


class RevocationRows:
    """Revocation rows as the store streams them (codes, then holders), packed into one table
    per region and kind as they arrive (:meth:`keys.store.StoreFacade.read_registry_changes`
    feeds it): a full read, ordered by region and value, is never held as Python objects."""

    def __init__(self, *, buffered: bool = False) -> None:
        self.code_tables: dict[str, PackedTable] = {}
        self.holder_tables: dict[str, PackedTable] = {}
        self.count = 0
        self._open: tuple[str, str] | None = None  # (kind, region) being streamed
        self._builder: _TableBuilder | None = None
        # buffered: the rows are only kept as they come (a change: the store's thread, which
        # the hot path's commits share, is let go at once) and packed by finish().
        self._buffer: list[tuple[str, list[Row]]] | None = [] if buffered else None

    def add_codes(self, rows: Iterable[Row]) -> None:
        """Code revocations: (region, code key, effective unix seconds)."""
        self._take("codes", rows)

    def add_holders(self, rows: Iterable[Row]) -> None:
        """Holder revocations: (region, pseudonym, effective unix seconds)."""
        self._take("holders", rows)

    def _take(self, kind: str, rows: Iterable[Row]) -> None:
        if self._buffer is None:
            self._add(kind, rows)
            return
        kept = list(rows)
        self._buffer.append((kind, kept))
        self.count += len(kept)

    def _add(self, kind: str, rows: Iterable[Row]) -> None:
        builder = self._builder
        n = 0
        for region, value, seconds in rows:
            if builder is None or self._open != (kind, region):
                self._close_region()
                self._open = (kind, region)
                builder = self._builder = _TableBuilder(unique=kind == "codes")
            builder.add(digest(value), min(max(seconds, 0), _TIME_MASK))
            n += 1
        self.count += n

    def _close_region(self) -> None:
        builder, self._builder = self._builder, None
        if builder is None or self._open is None:
            return
        kind, region = self._open
        self._open = None
        tables = self.code_tables if kind == "codes" else self.holder_tables
        table = builder.finish()
        before = tables.get(region)
        if before is not None:  # the region's rows came in two runs (a read by batch)
            table = PackedTable.pack([*before.keyed(), *table.keyed()], unique=kind == "codes")
        tables[region] = table

    def finish(self) -> RevocationRows:
        """Pack what is buffered and the last region streamed; returns self."""
        buffered, self._buffer = self._buffer, None
        if buffered:
            count = self.count
            for kind, rows in buffered:
                self._add(kind, rows)
            self.count = count
        self._close_region()
        return self


def _merge_overlay(
    overlay: Mapping[tuple[str, int], tuple[int, ...]], region: str, keyed: list[int]
) -> None:
    for (r, d), times in overlay.items():
        if r == region:
            keyed.extend((d << _TIME_BITS) | t for t in times)


class RevocationIndex:
    """Immutable after construction; every question is a dict lookup and a binary search."""

    __slots__ = (
        "_code_regions",
        "_codes",
        "_count",
        "_holder_regions",
        "_holders",
        "_ocodes",
        "_oholders",
    )

    def __init__(
        self, codes: Iterable[CodeRevocation] = (), holders: Iterable[HolderRevocation] = ()
    ) -> None:
        rows = RevocationRows()
        rows.add_codes((c.region, c.code_key, to_unix(c.effective_at)) for c in codes)
        rows.add_holders((h.region, h.holder, to_unix(h.effective_at)) for h in holders)
        empty = _empty_parts()
        self._set(*_apply(empty, rows.finish(), pack_all=True))

    def _set(
        self,
        codes: dict[str, PackedTable],
        holders: dict[str, PackedTable],
        ocodes: dict[tuple[str, int], tuple[int, ...]],
        oholders: dict[tuple[str, int], tuple[int, ...]],
    ) -> None:
        self._codes = codes
        self._holders = holders
        self._ocodes = ocodes
        self._oholders = oholders
        self._code_regions = frozenset(codes) | {r for r, _ in ocodes}
        self._holder_regions = frozenset(holders) | {r for r, _ in oholders}
        self._count = (
            sum(map(len, codes.values()))
            + sum(map(len, holders.values()))
            + len(ocodes)
            + sum(map(len, oholders.values()))
        )

    @classmethod
    def _make(cls, parts: _Parts) -> RevocationIndex:
        index = cls.__new__(cls)
        index._set(*parts)
        return index

    @classmethod
    def from_rows(cls, rows: RevocationRows) -> RevocationIndex:
        """The index of a full read (every region packed)."""
        return cls._make(_apply(_empty_parts(), rows.finish(), pack_all=True))

    def with_rows(self, rows: RevocationRows) -> RevocationIndex:
        """This index plus a change's rows, in the overlay (the tables are shared)."""
        if not rows.count:
            return self
        return self._make(_apply(self._parts(), rows.finish(), pack_all=False))

    @property
    def overlay_size(self) -> int:
        """Entries held in the overlay, outside the packed tables."""
        return len(self._ocodes) + len(self._oholders)

    def merged(self) -> RevocationIndex:
        """The same revocations with the overlay folded into new tables of the regions it
        touches (the others are shared). CPU-bound: run it off the event loop."""
        if not self.overlay_size:
            return self
        codes, holders = dict(self._codes), dict(self._holders)
        for tables, overlay, unique in (
            (codes, self._ocodes, True),
            (holders, self._oholders, False),
        ):
            by_region: dict[str, list[int]] = {}
            for (region, d), times in overlay.items():
                by_region.setdefault(region, []).extend((d << _TIME_BITS) | t for t in times)
            for region, keyed in by_region.items():
                table = tables.get(region)
                if table is not None:
                    keyed.extend(table.keyed())
                tables[region] = PackedTable.pack(keyed, unique=unique)
        return self._make((codes, holders, {}, {}))

    def _parts(self) -> _Parts:
        return self._codes, self._holders, self._ocodes, self._oholders

    def __len__(self) -> int:
        """Entries held: exact once folded; until then a code the overlay revokes again
        (earlier) is counted in the table and in the overlay."""
        return self._count

    def nbytes(self) -> int:
        """The bytes of the packed tables (the overlay not counted)."""
        return sum(t.nbytes() for t in (*self._codes.values(), *self._holders.values()))

    def _times(
        self,
        tables: Mapping[str, PackedTable],
        overlay: Mapping[tuple[str, int], tuple[int, ...]],
        region: str,
        value: str,
    ) -> list[int]:
        d = digest(value)
        table = tables.get(region)
        found = table.times_of(d) if table is not None else []
        extra = overlay.get((region, d)) if overlay else None
        if extra:
            found = sorted({*found, *extra})
        return found

    def code_revoked_at(
        self, region: str, code_id: str, now: datetime, code_key: Callable[[str, str], str]
    ) -> datetime | None:
        """When the code was revoked, if that is at or before ``now``; else None.

        ``code_key`` (:meth:`keys.pseudonym.Pseudonymiser.code_key`) is called only when the
        region has revoked codes."""
        if region not in self._code_regions:
            return None
        times = self._times(self._codes, self._ocodes, region, code_key(region, code_id))
        if times and times[0] <= now.timestamp():
            return _time(times[0])
        return None

    def holder_revoked_at(
        self, region: str, holder: str, issued_at: datetime, now: datetime
    ) -> datetime | None:
        """The latest holder revocation in force at ``now`` that postdates ``issued_at``."""
        if region not in self._holder_regions:
            return None
        times = self._times(self._holders, self._oholders, region, holder)
        if not times:
            return None
        index = bisect.bisect_right(times, now.timestamp()) - 1
        if index >= 0 and issued_at.timestamp() < times[index]:
            return _time(times[index])
        return None

    def check(
        self,
        region: str,
        code_id: str,
        holder: str,
        issued_at: datetime,
        now: datetime,
        code_key: Callable[[str, str], str],
    ) -> None:
        """Raise :class:`CodeRevokedError` if the code or (for this code) its holder is revoked."""
        at = self.code_revoked_at(region, code_id, now, code_key)
        if at is not None:
            raise CodeRevokedError(
                f"the code was revoked by region {region} at {to_iso(at)}", region=region
            )
        at = self.holder_revoked_at(region, holder, issued_at, now)
        if at is not None:
            raise CodeRevokedError(
                f"region {region} revoked the holder's codes issued before {to_iso(at)}",
                region=region,
            )


_Overlay = dict[tuple[str, int], tuple[int, ...]]
_Parts = tuple[dict[str, PackedTable], dict[str, PackedTable], _Overlay, _Overlay]


def _empty_parts() -> _Parts:
    return {}, {}, {}, {}


def _apply(parts: _Parts, rows: RevocationRows, *, pack_all: bool) -> _Parts:
    """``parts`` plus ``rows``: the rows' tables taken over (``pack_all``, or a region as
    large as :data:`MERGE_AT`: folded into the region's table), the rest into a copy of the
    overlay."""
    codes, holders, ocodes, oholders = parts
    codes, ocodes = _apply_kind(codes, ocodes, rows.code_tables, True, pack_all)
    holders, oholders = _apply_kind(holders, oholders, rows.holder_tables, False, pack_all)
    return codes, holders, ocodes, oholders


def _apply_kind(
    tables: dict[str, PackedTable],
    overlay: _Overlay,
    changed: dict[str, PackedTable],
    unique: bool,
    pack_all: bool,
) -> tuple[dict[str, PackedTable], _Overlay]:
    tables, overlay = dict(tables), dict(overlay)
    for region, table in changed.items():
        before = tables.get(region)
        if before is None and (pack_all or len(table) >= MERGE_AT):
            tables[region] = table
            continue
        if before is not None and (pack_all or len(table) >= MERGE_AT):
            keyed = [*before.keyed(), *table.keyed()]
            _merge_overlay(overlay, region, keyed)
            overlay = {k: v for k, v in overlay.items() if k[0] != region}
            tables[region] = PackedTable.pack(keyed, unique=unique)
            continue
        for value in table.keyed():
            key = (region, value >> _TIME_BITS)
            t = value & _TIME_MASK
            held = overlay.get(key, ())
            if unique:
                if not held or t < held[0]:
                    overlay[key] = (t,)
            elif t not in held:
                overlay[key] = tuple(sorted((*held, t)))
    return tables, overlay


EMPTY_INDEX = RevocationIndex()
