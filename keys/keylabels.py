"""The status of the gateway's own keys at a given time, as every surface shows it.

The key directory's manifest stores what a rotation or a withdrawal decided (``active``,
``retired``, ``revoked``); what an operator or a verifier needs to read is what each key *does* at
a given ``now``. During a staged rotation (``keys rotate --activate-in 1h``) the stored status of
the new key is ``active`` an hour before it signs, and the old key's ``retired`` while it still
signs: the labels here are computed from the key windows instead, and shown the same by
``keys list``, ``keys export``, ``GetGatewayKeys`` and the trust list.

- ``pending``: published, not signing yet (its window starts after ``now``);
- ``active``: the one key of its role that signs at ``now`` (:func:`signing_key`);
- ``retired``: no longer signs (a successor does, or its window ended); what it signed still
  verifies;
- ``revoked``: withdrawn; nothing it signed from its compromise time on verifies.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from keys.model import KeyStatus
from keys.timeutil import ensure_utc

if TYPE_CHECKING:
    from keys.keyset import GatewayKeyInfo, KeyRole

__all__ = ["KeyLabel", "key_labels", "labelled", "signing_key"]


class KeyLabel(StrEnum):
    """What one of the gateway's keys does at a given time (never stored: computed)."""

    PENDING = "pending"  # published, signs from its not_before on
    ACTIVE = "active"  # the key of its role that signs now
    RETIRED = "retired"  # no longer signs; what it signed still verifies
    REVOKED = "revoked"  # withdrawn


def signing_key(
    infos: Iterable[GatewayKeyInfo], role: KeyRole, now: datetime
) -> GatewayKeyInfo | None:
    """The key that signs for ``role`` at ``now``, or None if no key of the role may sign.

    Among the role's keys valid at ``now`` and not revoked, one whose stored status is ``active``
    before a ``retired`` one (a retired key signs only while its announced successor is not yet
    valid), then the newest ``not_before``, then the greatest kid: one rule, used both to sign
    (:meth:`keys.keyset.GatewayKeys.signer`) and to label.
    """
    now = ensure_utc(now)
    usable = [
        i for i in infos if i.role is role and i.status is not KeyStatus.REVOKED and i.valid_at(now)
    ]
    if not usable:
        return None
    return max(usable, key=lambda i: (i.status is KeyStatus.ACTIVE, i.not_before, i.kid))


def key_labels(infos: Iterable[GatewayKeyInfo], now: datetime) -> dict[tuple[str, str], KeyLabel]:
    """The label of every key in ``infos`` at ``now``, by ``(role, kid)``."""
    now = ensure_utc(now)
    keys = list(infos)
    signers = {
        (s.role.value, s.kid)
        for s in (signing_key(keys, role, now) for role in {i.role for i in keys})
        if s is not None
    }
    labels: dict[tuple[str, str], KeyLabel] = {}
    for info in keys:
        ident = (info.role.value, info.kid)
        if info.status is KeyStatus.REVOKED:
            labels[ident] = KeyLabel.REVOKED
        elif ident in signers:
            labels[ident] = KeyLabel.ACTIVE
        elif now < info.not_before:
            labels[ident] = KeyLabel.PENDING
        else:
            labels[ident] = KeyLabel.RETIRED
    return labels


def labelled(
    infos: Iterable[GatewayKeyInfo], now: datetime
) -> list[tuple[GatewayKeyInfo, KeyLabel]]:
    """``infos`` in their order, each with its label at ``now``."""
    keys = list(infos)
    labels = key_labels(keys, now)
    return [(i, labels[(i.role.value, i.kid)]) for i in keys]
