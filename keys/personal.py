"""Stored records about people, other than partner conversions: converted stock certificates,
the recognition log, batch jobs, and what a purge removes.

Every record names a person only by a keyed pseudonym (see :mod:`keys.pseudonym`); raw names
and ID numbers never reach these types. They cross the :class:`keys.store.Store` boundary, so
they carry no SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import NamedTuple

from keys.timeutil import ensure_utc


@dataclass(frozen=True)
class StockConversion:
    """A city's local health certificate converted into a home-province code.

    Keyed by (city, certificate_id): converting the same certificate again keeps this record.
    """

    city: str
    certificate_id: str
    holder: str  # keyed pseudonym
    code_id: str
    code: str
    colour: str
    issued_at: datetime
    expires_at: datetime
    created_at: datetime

    def __post_init__(self) -> None:
        for name in ("issued_at", "expires_at", "created_at"):
            object.__setattr__(self, name, ensure_utc(getattr(self, name)))


@dataclass(frozen=True)
class StockJob:
    """Progress of one batch conversion, keyed by the SHA-256 of the input file."""

    digest: str
    source: str  # the file's name, for operators
    committed_rows: int  # every row numbered up to this one is committed
    counts: Mapping[str, int]
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None


@dataclass(frozen=True)
class StockBatch:
    """One transaction of a batch conversion: new records, the rows it covers and their counts.

    ``after_row`` is the job's committed row before this batch; the batch is refused (nothing
    written) unless the job still stands there, so two runs of one file cannot interleave.
    ``rows`` gives each record's row number in the file.
    """

    digest: str
    after_row: int
    last_row: int
    records: tuple[StockConversion, ...]
    rows: tuple[int, ...]
    counts: Mapping[str, int]  # rows read, rejected by reason, ... (this batch only)
    at: datetime

    def __post_init__(self) -> None:
        if len(self.records) != len(self.rows):
            raise ValueError("a stock batch has one row number per record")
        if self.last_row < self.after_row:
            raise ValueError("a stock batch ends at or after where it starts")


@dataclass(frozen=True)
class StockBatchResult:
    """What a committed batch did: the job's counts after it, and the rows whose certificate was
    already converted for another holder (the earlier conversion is kept)."""

    counts: Mapping[str, int]
    conflicts: tuple[int, ...] = ()


class RecognitionEntry(NamedTuple):
    """One decided code, as the recognition log keeps it: no raw identifier.

    ``code_id`` is the partner's code id while the entry is in memory; only its code key is
    stored (:meth:`keyed`, applied by the recognition log before it hands entries to the store).
    A named tuple: one is made per request, so it must be cheap to build.
    """

    at: datetime
    region: str
    mode: str
    decision: str  # "recognised" | "refused"
    reason: str
    holder: str = ""  # keyed pseudonym, when the code verified
    code_id: str = ""
    kid: str = ""
    request_id: str = ""

    def keyed(self, code_key: Callable[[str, str], str]) -> RecognitionEntry:
        """This entry with its code id replaced by ``code_key(region, code_id)``."""
        if not self.code_id:
            return self
        return self._replace(code_id=code_key(self.region, self.code_id))


@dataclass(frozen=True)
class PurgeResult:
    """What a purge deleted (or would delete, on a dry run), per kind of record."""

    recognitions: int = 0
    conversions: int = 0
    stock_conversions: int = 0
    kept_revoked: int = 0  # expired conversions kept because of a recent revocation
    dry_run: bool = False
    cutoffs: Mapping[str, datetime] = field(default_factory=dict)
    declarations: int = 0  # arrival declarations whose home code expired
    visits: int = 0  # venue visits (keys.places), purged by their own cut-off


STOCK_ROW_OUTCOMES = ("converted", "already_converted", "holder_conflict")


@dataclass(frozen=True)
class StockRowOutcome:
    """What one row of a batch job produced: its certificate and whether this job converted it
    (``converted``), found it converted earlier for the same holder (``already_converted``: the
    earlier code is the row's code) or for another holder (``holder_conflict``: no code for this
    row). Rejected rows have none (the error report has them)."""

    row: int
    city: str
    certificate_id: str
    outcome: str

    def __post_init__(self) -> None:
        if self.outcome not in STOCK_ROW_OUTCOMES:
            raise ValueError(f"unknown stock row outcome {self.outcome[:24]!r}")
        if self.row < 1:
            raise ValueError("row numbers start at 1")


@dataclass(frozen=True)
class StockOutputRow:
    """One line of a batch job's output (``convert-batch --out``, ``stock export``).

    ``code``, ``code_id``, ``colour`` and the validity are empty for a ``holder_conflict`` row:
    the stored code is another holder's. No name, ID number or holder pseudonym.
    """

    row: int
    city: str
    certificate_id: str
    status: str  # one of STOCK_ROW_OUTCOMES
    code_id: str = ""
    code: str = ""
    colour: str = ""
    valid_from: datetime | None = None
    valid_until: datetime | None = None


DECLARATION_ORIGIN_KINDS = ("province", "abroad")
REVOKED_SUPERSEDED = "superseded"  # a later declaration of the same holder replaced it
REVOKED_PARTNER = "partner_revoked"  # the partner revoked the code (or holder) it was made from


@dataclass(frozen=True)
class DeclarationRecord:
    """An arrival declaration as the store keeps it: its decision and home code, not what was
    declared (no ID number, temperature, symptoms or places: only the keyed ``digest`` of them,
    to recognise the same declaration sent again).

    ``id`` is the home code's id. ``holder`` is the home-province pseudonym;
    ``partner_holder`` the holder's pseudonym in the partner region whose code was shown, and
    ``partner_source_key`` that code's code key, so that a partner's revocation reaches the home
    code made from it. ``revoked_at``/``revoked_reason``: superseded by ``superseded_by``, or
    revoked with the partner code.
    """

    id: str
    holder: str
    digest: str
    origin: str
    origin_kind: str
    arrival_date: date
    colour: str
    rules: tuple[str, ...]
    green_from: date | None
    exempt: bool
    code: str
    issued_at: datetime
    expires_at: datetime
    created_at: datetime
    partner_region: str = ""
    partner_source_key: str = ""
    partner_holder: str = ""
    partner_issued_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_reason: str = ""
    superseded_by: str = ""

    def __post_init__(self) -> None:
        for name in ("issued_at", "expires_at", "created_at"):
            object.__setattr__(self, name, ensure_utc(getattr(self, name)))
        for name in ("partner_issued_at", "revoked_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, ensure_utc(value))
        if self.origin_kind not in DECLARATION_ORIGIN_KINDS:
            raise ValueError(f"unknown origin kind {self.origin_kind[:16]!r}")
        if self.revoked_reason not in ("", REVOKED_SUPERSEDED, REVOKED_PARTNER):
            raise ValueError(f"unknown revocation reason {self.revoked_reason[:24]!r}")

    @property
    def status(self) -> str:
        """``current``, ``superseded`` or ``revoked``."""
        if self.revoked_at is None:
            return "current"
        return "superseded" if self.revoked_reason == REVOKED_SUPERSEDED else "revoked"


@dataclass(frozen=True)
class DeclareResult:
    """What storing a declaration did: the stored record (the earlier one for a ``duplicate``)
    and the id of the declaration it superseded, if any."""

    record: DeclarationRecord
    duplicate: bool = False
    superseded: str = ""


DECLARATION_GROUPS = ("origin", "day", "colour")


@dataclass(frozen=True)
class DeclarationCount:
    """How many declarations share the values of the grouping asked for (``""`` where not
    grouped). ``day`` is the arrival date."""

    count: int
    origin: str = ""
    day: str = ""
    colour: str = ""
