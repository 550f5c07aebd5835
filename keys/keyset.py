"""The gateway's keys as the signing code sees them, wherever they are kept: which key signs for
a role at a time (:meth:`GatewayKeys.signer`) and which keys are published.

:class:`keys.keystore.KeyDirectory` (files) and :class:`keys.keyring.GatewayKeyring` (the
database) are the two kinds; both names are re-exported by :mod:`keys.keystore`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from keys.crypto import Algorithm, PrivateKey, PublicKey
from keys.errors import ConfigurationError
from keys.keylabels import signing_key
from keys.model import KeyStatus
from keys.timeutil import ensure_utc, to_iso


class KeyRole(StrEnum):
    """What a gateway key signs."""

    ATTEST = "attest"  # the gateway's signed recognition decisions
    ISSUE = "issue"  # home-province codes issued by conversion
    TRUSTLIST = "trustlist"  # the signed trust list of all regions' keys and the gateway's


@dataclass(frozen=True)
class GatewayKeyInfo:
    """The public half and validity of one of the gateway's own keys."""

    role: KeyRole
    kid: str
    public_key: PublicKey
    not_before: datetime
    not_after: datetime
    status: KeyStatus
    # When a withdrawn (REVOKED) key was compromised: what it signed at or after is refused.
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "not_before", ensure_utc(self.not_before))
        object.__setattr__(self, "not_after", ensure_utc(self.not_after))
        if self.revoked_at is not None:
            object.__setattr__(self, "revoked_at", ensure_utc(self.revoked_at))
        if self.not_after <= self.not_before:
            raise ValueError("not_after must be later than not_before")

    def valid_at(self, when: datetime) -> bool:
        """True if ``when`` lies in [not_before, not_after)."""
        return self.not_before <= ensure_utc(when) < self.not_after


@dataclass(frozen=True)
class KeyEntry:
    """One gateway key: its public description, where it is kept (a file name; empty in the
    database keyring) and the private key."""

    info: GatewayKeyInfo
    file: str
    private: PrivateKey


_Entry = KeyEntry


class Signers(Protocol):
    """What signs the gateway's outputs (the engine's, the stock converter's): the key of
    ``role`` that signs at ``now`` and its public description. :class:`KeyDirectory` is one."""

    def signer(self, role: KeyRole, now: datetime) -> tuple[GatewayKeyInfo, PrivateKey]:
        """The private key of ``role`` that signs at ``now``; raises
        :class:`ConfigurationError` when there is none."""
        ...


class GatewayKeys:
    """The gateway's signing keys and pseudonym secret, decrypted: which key signs for a role
    at a time and which keys are published. :class:`KeyDirectory` (files) and
    :class:`keys.keyring.GatewayKeyring` (the database) are the two kinds."""

    def __init__(self, *, dev: bool, entries: list[KeyEntry], pseudonym_secret: bytes) -> None:
        self._dev = dev
        self._entries = entries
        self._pseudonym_secret = pseudonym_secret
        # role -> (the entries it was chosen from, from, until, info, key): the signer stays
        # the same between two validity bounds of the role's keys (see :meth:`signer`).
        self._signer_cache: dict[
            KeyRole, tuple[list[KeyEntry], datetime, datetime, GatewayKeyInfo, PrivateKey]
        ] = {}

    @property
    def where(self) -> str:
        """Where the keys are kept, for messages."""
        return "the key store"

    def entries(self) -> list[KeyEntry]:
        """Every key with its private half (to import into the database keyring)."""
        return list(self._entries)

    # -- queries -----------------------------------------------------------------------------

    @property
    def dev(self) -> bool:
        """True if the keys are stored unencrypted (development only)."""
        return self._dev

    def signer(self, role: KeyRole, now: datetime) -> tuple[GatewayKeyInfo, PrivateKey]:
        """The key that signs for ``role`` at ``now``, and its info.

        Among the role's keys valid at ``now`` and not revoked, the newest ACTIVE one; a RETIRED
        key signs only while its announced successor is not yet valid (see :meth:`rotate`).
        Raises :class:`ConfigurationError` if there is none (all expired: rotate the keys).
        """
        now = ensure_utc(now)
        entries = self._entries
        cached = self._signer_cache.get(role)
        # Once per decision: the choice changes only when ``now`` crosses a bound of one of
        # the role's keys, or the entries are replaced (a rotation or reload assigns a new list).
        if cached is not None and cached[0] is entries and cached[1] <= now < cached[2]:
            return cached[3], cached[4]
        best = signing_key((e.info for e in entries), role, now)  # the labels' rule too
        if best is None:
            raise ConfigurationError(
                f"no {role} key of the gateway is valid at {to_iso(now)}: "
                f"rotate the keys in {self.where}"
            )
        entry = next(e for e in entries if e.info is best)
        bounds = [
            t for e in entries if e.info.role is role for t in (e.info.not_before, e.info.not_after)
        ]
        start = max((t for t in bounds if t <= now), default=now)
        end = min((t for t in bounds if t > now), default=now)
        self._signer_cache[role] = (entries, start, end, entry.info, entry.private)
        return entry.info, entry.private

    def signers(self, role: KeyRole, now: datetime) -> list[tuple[GatewayKeyInfo, PrivateKey]]:
        """Every key of ``role`` valid at ``now`` and not revoked, newest first.

        The trust list is signed by all of them, so that verifiers that know only the previous
        key keep accepting it across a rotation.
        """
        now = ensure_utc(now)
        usable = [
            e
            for e in self._entries
            if e.info.role is role
            and e.info.status is not KeyStatus.REVOKED
            and e.info.valid_at(now)
        ]
        usable.sort(key=lambda e: (e.info.not_before, e.info.kid), reverse=True)
        return [(e.info, e.private) for e in usable]

    def public_keys(self) -> list[GatewayKeyInfo]:
        """Every published key (active, announced and retired), by role then not_before."""
        return sorted(
            (e.info for e in self._entries), key=lambda i: (i.role.value, i.not_before, i.kid)
        )

    def algorithm(self, role: KeyRole) -> Algorithm:
        """The algorithm of the role's newest key (what its next rotation keeps by default)."""
        keys = [e.info for e in self._entries if e.info.role is role]
        if not keys:
            return Algorithm.EDDSA
        return max(keys, key=lambda i: (i.not_before, i.kid)).public_key.alg

    def pseudonym_secret(self) -> bytes:
        """The secret under which holder identifiers are pseudonymised (32 bytes)."""
        return self._pseudonym_secret
