"""Frozen records of the key registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from keys.crypto import Algorithm, PublicKey
from keys.errors import KeyAlgorithmMismatchError, KeyNotValidError, KeyRevokedError
from keys.regioncode import is_region_code
from keys.timeutil import ensure_utc

HOME_REGION = "370000"


class Mode(StrEnum):
    """How the home province recognises a partner region's codes."""

    SHOW = "show"  # verified and honoured as it is
    CONVERT = "convert"  # verified and exchanged for a home-province code


class KeyStatus(StrEnum):
    """A partner key's status in the registry: active, retired (still verifies what it signed in its
    window) or revoked.
    """

    ACTIVE = "active"
    RETIRED = "retired"  # no longer used for new codes; still verifies codes issued in its window
    REVOKED = "revoked"  # codes issued at or after revoked_at are refused


@dataclass(frozen=True)
class Region:
    """A partner region as the registry knows it."""

    code: str  # GB/T 2260 administrative division code, e.g. "110000"
    name: str
    mode: Mode
    max_age: timedelta  # a code older than this (since issued-at) is refused
    enabled: bool = True

    def __post_init__(self) -> None:
        if not is_region_code(self.code):
            raise ValueError(f"region code {self.code!r} is not a 6-digit division code")
        if self.max_age <= timedelta(0):
            raise ValueError("max_age must be positive")


@dataclass(frozen=True)
class RegionKey:
    """A partner region's code-signing key and its validity.

    The key id is not re-checked here: every path that takes one checks it with the one rule
    (:mod:`keys.keyid`) first, and a key stored before that rule must still load (its id can
    never match a code's, which is checked before any lookup).
    """

    region: str
    kid: str
    public_key: PublicKey
    not_before: datetime
    not_after: datetime
    status: KeyStatus = KeyStatus.ACTIVE
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "not_before", ensure_utc(self.not_before))
        object.__setattr__(self, "not_after", ensure_utc(self.not_after))
        if self.revoked_at is not None:
            object.__setattr__(self, "revoked_at", ensure_utc(self.revoked_at))
        if self.not_after <= self.not_before:
            raise ValueError("not_after must be later than not_before")

    @property
    def alg(self) -> Algorithm:
        """The key's signature algorithm."""
        return self.public_key.alg

    def check_valid_at_issuance(self, issued_at: datetime) -> None:
        """Raise unless this key may have signed a code issued at ``issued_at``.

        The key must have been inside its validity window then, and not revoked at or before then.
        """
        if self.revoked_at is not None and issued_at >= self.revoked_at:
            raise KeyRevokedError(
                f"key {self.kid} of region {self.region} was revoked before the code was issued",
                region=self.region,
                kid=self.kid,
            )
        if not self.not_before <= issued_at <= self.not_after:
            raise KeyNotValidError(
                f"key {self.kid} of region {self.region} was not valid when the code was issued",
                region=self.region,
                kid=self.kid,
            )


# For each region the gateway reads codes of, the algorithms its codes are signed with. The
# registry cannot know them (they are the adapters' business): the gateway passes
# ``adapters.regions.REGION_ALGORITHMS`` down.
RegionAlgorithms = Mapping[str, frozenset[Algorithm]]


def check_key_algorithm(
    region: str, kid: str, alg: Algorithm, algorithms: RegionAlgorithms | None
) -> None:
    """Refuse a code-signing key whose algorithm the region's codes are never signed with.

    Such a key could never verify a code (each would be refused ``ALGORITHM_UNSUPPORTED``), so
    it is refused when registered, in ``keys add`` and in key sets alike. A region ``algorithms``
    does not list (no code format known), or ``algorithms=None``, is not checked.
    Raises :class:`keys.errors.KeyAlgorithmMismatchError`.
    """
    accepted = None if algorithms is None else algorithms.get(region)
    if accepted is None or alg in accepted:
        return
    names = " or ".join(sorted(str(a) for a in accepted))
    raise KeyAlgorithmMismatchError(
        f"key {kid} of region {region} is {alg}, but the region's codes are signed with "
        f"{names}: it could never verify one",
        region=region,
        kid=kid,
        alg=str(alg),
    )


class KeyLookup(Protocol):
    """What an adapter needs from the registry: a region's keys, by key-id hint."""

    def keys_for(self, region: str, kid_hint: str | None) -> tuple[RegionKey, ...]:
        """Candidate keys of ``region``: those with id ``kid_hint``, or all when it is None.

        Never returns another region's keys. An empty tuple means no such key.
        """
        ...


@dataclass(frozen=True)
class ConversionRecord:
    """A partner code exchanged for a home-province code (convert mode).

    Keyed by (region, source_key): converting the same source code again returns this record.
    Holds no identifier: the source code's id only as its code key
    (:meth:`keys.pseudonym.Pseudonymiser.code_key`), the holder only as a pseudonym.
    """

    region: str
    source_key: str
    holder: str
    converted_code_id: str
    converted_code: str
    issued_at: datetime
    expires_at: datetime
    created_at: datetime
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("issued_at", "expires_at", "created_at"):
            object.__setattr__(self, name, ensure_utc(getattr(self, name)))
        if self.revoked_at is not None:
            object.__setattr__(self, "revoked_at", ensure_utc(self.revoked_at))


@dataclass(frozen=True)
class IssuedHomeCode:
    """A home-province code the gateway issued, as the store holds it: a partner conversion
    (:class:`ConversionRecord`) or a stock certificate's conversion. What the gateway's status
    call (``GetCodeStatus``) answers from; the holder only as a pseudonym.

    ``revoked_at``: when a revocation of its source (code or holder) took effect, if any;
    ``colour``: as stored for stock conversions, ``None`` for partner conversions (the code's
    own payload states it: only green codes are converted).
    """

    code_id: str
    code: str
    holder: str
    expires_at: datetime
    revoked_at: datetime | None = None
    colour: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "expires_at", ensure_utc(self.expires_at))
        if self.revoked_at is not None:
            object.__setattr__(self, "revoked_at", ensure_utc(self.revoked_at))
