"""Correcting a partner key's validity window (``trustgw keys update``): the rules, no storage.

An operator who registered a key with the wrong window (say ``--not-before`` the moment of
``keys add``, which refuses the partner's codes issued minutes earlier) corrects it here. The
rules, checked against the state read from the store:

* the key exists in the region (:class:`NotFoundError`);
* it is not revoked: a compromise is final, and a window moved around a revocation time would
  change what the revocation means (:class:`KeyWindowRefusedError`);
* the region publishes its own key sets: then its keys are what the partner signed, and the
  next key set would overwrite the correction (:class:`KeyWindowRefusedError`; the partner
  publishes a corrected key set);
* the new start is not earlier than both the current start and ``now`` minus the region's
  maximum code age: no code older than that is accepted anyway, so such a start adds nothing
  but trust in a past nobody checked (a typo such as 2016 for 2026 would do just that);
* ``not_after`` stays later than ``not_before``.

Narrowing a window is always allowed. :func:`default_not_before` is the start ``keys add``
gives a key when the operator names none.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from keys.errors import KeyWindowRefusedError, NotFoundError
from keys.model import KeyStatus, Region, RegionKey
from keys.records import RegionTrust
from keys.timeutil import ensure_utc, to_iso


def default_not_before(region: Region, now: datetime) -> datetime:
    """``now`` minus the region's maximum code age: every code still young enough to be accepted
    was issued after it, so a key added now refuses none of them for its start."""
    return ensure_utc(now) - region.max_age


def plan_key_window(
    code: str,
    trust: RegionTrust,
    kid: str,
    not_before: datetime,
    not_after: datetime | None,
    now: datetime,
) -> tuple[RegionKey, RegionKey]:
    """The key ``kid`` of region ``code`` as stored in ``trust`` and as it will be with the new
    window, or why not.

    ``not_after`` None keeps the current end. Raises :class:`NotFoundError` (no such region or
    key), :class:`KeyWindowRefusedError` (the rules above), ``ValueError`` for times the store
    cannot hold.
    """
    region = trust.region
    if region is None:
        raise NotFoundError(f"region {code} is not registered", region=code)
    current = next((k for k in trust.keys if k.kid == kid), None)
    if current is None:
        raise NotFoundError(f"region {region.code} has no key {kid}", region=region.code, kid=kid)
    not_before = ensure_utc(not_before)
    not_after = current.not_after if not_after is None else ensure_utc(not_after)
    if current.status is KeyStatus.REVOKED or current.revoked_at is not None:
        raise KeyWindowRefusedError(
            f"key {kid} of region {region.code} is revoked: a revoked key's window is not "
            "changed (add the partner's new key instead)",
            region=region.code,
            kid=kid,
        )
    if trust.keyset_version > 0:
        raise KeyWindowRefusedError(
            f"region {region.code} publishes its keys in signed key sets (version "
            f"{trust.keyset_version}): ask the partner for a corrected key set",
            region=region.code,
            kid=kid,
        )
    if not_after <= not_before:
        raise KeyWindowRefusedError(
            f"not_after {to_iso(not_after)} is not after not_before {to_iso(not_before)}",
            region=region.code,
            kid=kid,
        )
    floor = min(current.not_before, default_not_before(region, now))
    if not_before < floor:
        raise KeyWindowRefusedError(
            f"not_before {to_iso(not_before)} is earlier than {to_iso(floor)}: region "
            f"{region.code} accepts no code older than {region.max_age}, so an earlier start "
            "only widens trust nobody needs",
            region=region.code,
            kid=kid,
        )
    return current, replace(current, not_before=not_before, not_after=not_after)
