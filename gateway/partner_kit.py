"""The partner's side as plain functions: statements signed with key files, checked offline,
and test codes of any region (what ``trustgw partner-tools`` runs; docs/onboarding.md).

Nothing here talks to a gateway or touches a data directory. Statements are the registry's own
(:mod:`keys.statements`) in its envelope (:mod:`keys.signed`); the offline check applies the
gateway's rules that need no registry state: well-formed, the partner file's region, a threshold
of its anchors (and of new anchors), key algorithms the region's codes use, not expired.
Test codes are written with the region's own adapter spec and read back through the adapter
the gateway runs, so a code this module makes is one the gateway can decode.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.base import Colour
from adapters.fields import CodeIdForm, Fields, valid_id_number
from adapters.regions import ADAPTERS, REGION_ALGORITHMS, spec_for
from adapters.simulator import InMemoryKeys, PartnerIssuer
from keys.anchors import AnchorSet, PartnerFile
from keys.crypto import PrivateKey
from keys.errors import (
    KeySetExpiredError,
    MalformedError,
    RegionForbiddenError,
    RegionUnknownError,
)
from keys.jsonutil import loads_strict
from keys.keyfile import KeyFileRole, PartnerKeyFile
from keys.model import RegionKey, check_key_algorithm
from keys.pseudonym import Pseudonymiser
from keys.signed import MAX_SIGNED_BYTES, Envelope, digest
from keys.statements import (
    KEY_REVOCATION_TYPE,
    KEYSET_TYPE,
    REVOCATIONS_TYPE,
    KeyRevocation,
    KeySet,
    RevocationBatch,
    code_hash,
)
from keys.timeutil import ensure_utc, to_iso

KINDS = {
    KEYSET_TYPE: "keyset",
    KEY_REVOCATION_TYPE: "key_revocation",
    REVOCATIONS_TYPE: "revocations",
}


def anchor_signers(files: Sequence[PartnerKeyFile], region: str) -> list[tuple[str, PrivateKey]]:
    """The (kid, key) pairs to sign a statement of ``region`` with.

    Raises :class:`MalformedError` for a code-signing key, a key of another region, or the same
    key id twice (it would count once).
    """
    signers: list[tuple[str, PrivateKey]] = []
    for key_file in files:
        if key_file.role is not KeyFileRole.ANCHOR:
            raise MalformedError(
                f"key {key_file.kid} is a code-signing key: statements are signed with anchors"
            )
        if key_file.region != region:
            raise MalformedError(
                f"anchor {key_file.kid} is of region {key_file.region}, not {region}"
            )
        if any(kid == key_file.kid for kid, _ in signers):
            raise MalformedError(f"anchor {key_file.kid} is given twice (it counts once)")
        signers.append((key_file.kid, key_file.private))
    return signers


def sign(statement: KeySet | KeyRevocation | RevocationBatch, signers: Sequence[Any]) -> bytes:
    """The envelope bytes of ``statement`` signed by each (kid, private key)."""
    return Envelope.sign(statement.to_signed(), signers).to_bytes()


def statement_kind(envelope: Envelope) -> str:
    """``keyset``, ``key_revocation`` or ``revocations``; raises :class:`MalformedError`."""
    obj = loads_strict(envelope.signed, max_bytes=MAX_SIGNED_BYTES, max_depth=32, what="statement")
    kind = KINDS.get(str(obj.get("type"))) if isinstance(obj, dict) else None
    if kind is None:
        raise MalformedError(
            "the envelope holds no key set, key revocation or revocation batch statement"
        )
    return kind


def parse_statement(envelope: Envelope) -> KeySet | KeyRevocation | RevocationBatch:
    """The statement in ``envelope`` (not verified). Raises :class:`MalformedError`."""
    kind = statement_kind(envelope)
    if kind == "keyset":
        return KeySet.from_signed(envelope.signed)
    if kind == "key_revocation":
        return KeyRevocation.from_signed(envelope.signed)
    return RevocationBatch.from_signed(envelope.signed)


def describe(statement: KeySet | KeyRevocation | RevocationBatch) -> dict[str, Any]:
    """What a statement says, for people (code and holder entries only counted)."""
    if isinstance(statement, KeySet):
        return {
            "kind": "keyset",
            "region": statement.region,
            "version": statement.version,
            "expires": to_iso(statement.expires),
            "keys": [
                {
                    "kid": k.kid,
                    "alg": k.public_key.alg.value,
                    "fingerprint": k.public_key.fingerprint(),
                    "not_before": to_iso(k.not_before),
                    "not_after": to_iso(k.not_after),
                }
                for k in statement.keys
            ],
            "new_anchors": None
            if statement.anchors is None
            else {
                "threshold": statement.anchors.threshold,
                "kids": sorted(statement.anchors.kids),
                "fingerprint": statement.anchors.fingerprint(),
            },
        }
    if isinstance(statement, KeyRevocation):
        return {
            "kind": "key_revocation",
            "region": statement.region,
            "kid": statement.kid,
            "compromised_at": to_iso(statement.compromised_at),
        }
    return {
        "kind": "revocations",
        "region": statement.region,
        "batch_id": statement.batch_id,
        "effective_at": to_iso(statement.effective_at),
        "codes": len(statement.codes),
        "holders": len(statement.holders),
    }


@dataclass(frozen=True)
class Checked:
    """A statement that passed :func:`check_statement`."""

    statement: KeySet | KeyRevocation | RevocationBatch
    digest: str
    signers: frozenset[str]  # anchors whose signatures counted
    new_signers: frozenset[str]  # for an anchor rotation: the new anchors that counted


def check_statement(data: bytes, partner: PartnerFile, now: datetime) -> Checked:
    """Verify a signed statement offline against the region's anchors in ``partner``.

    Checks, in the gateway's order: the envelope and statement are well-formed; the statement
    is for ``partner``'s region (``REGION_FORBIDDEN``); a threshold of its anchors signed the
    exact bytes (``THRESHOLD_NOT_MET``), and of the new anchors for an anchor rotation; a key
    set's keys use the region's algorithm (``KEY_ALGORITHM_MISMATCH``) and it has not expired
    at ``now`` (``KEYSET_EXPIRED``). Versions are the gateway's to judge (it knows the current).
    """
    envelope = Envelope.from_bytes(data)
    statement = parse_statement(envelope)
    region = partner.region.code
    if statement.region != region:
        raise RegionForbiddenError(
            f"the statement is for region {statement.region}; the partner file is {region}'s"
        )
    signers = partner.anchors.check_threshold(
        envelope.signed, envelope.signatures, region=region, which="current"
    )
    new_signers: frozenset[str] = frozenset()
    if isinstance(statement, KeySet):
        if statement.anchors is not None:
            new_signers = statement.anchors.check_threshold(
                envelope.signed, envelope.signatures, region=region, which="new"
            )
        for key in statement.keys:
            check_key_algorithm(region, key.kid, key.public_key.alg, REGION_ALGORITHMS)
        if statement.expires <= ensure_utc(now):
            raise KeySetExpiredError(f"the key set expired at {to_iso(statement.expires)}")
    return Checked(statement, digest(envelope.signed), signers, new_signers)


def new_anchors_from(partner_file: PartnerFile, region: str) -> AnchorSet:
    """The anchors of a partner file made for an anchor rotation of ``region``."""
    if partner_file.region.code != region:
        raise MalformedError(
            f"the new anchors' partner file is for region {partner_file.region.code}"
        )
    return partner_file.anchors


# --- test codes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestCode:
    """A code made for testing recognition, and what identifies it (never the holder)."""

    code: str
    region: str
    kid: str
    colour: Colour
    issued_at: datetime
    expires_at: datetime
    code_id: str  # as the gateway reads it (derived for regions whose codes carry none)

    @property
    def code_hash(self) -> str:
        """How a revocation batch names this code."""
        return code_hash(self.region, self.code_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "kid": self.kid,
            "colour": self.colour.value,
            "issued_at": to_iso(self.issued_at),
            "expires_at": to_iso(self.expires_at),
            "code_id": self.code_id,
            "code_hash": self.code_hash,
            "code": self.code,
        }


def make_test_code(
    key_file: PartnerKeyFile,
    *,
    colour: Colour,
    issued_at: datetime,
    expires_at: datetime,
    holder_id: str,
    holder_name: str,
    code_id: str | None = None,
) -> TestCode:
    """A code of ``key_file``'s region signed with it, read back through the region's adapter.

    Raises :class:`MalformedError` for an anchor key, an ID number that is not one (18
    characters with a valid check digit), a code id the region cannot carry, or validity that
    ends before it starts; :class:`KeyAlgorithmMismatchError` for a key of another algorithm.
    """
    region = key_file.region
    if region not in ADAPTERS:
        raise RegionUnknownError(f"{region} is not a partner region with a known code format")
    if key_file.role is not KeyFileRole.SIGNING:
        raise MalformedError(
            f"key {key_file.kid} is an anchor: codes are signed with a signing key"
        )
    spec = spec_for(region)
    check_key_algorithm(region, key_file.kid, key_file.private.alg, REGION_ALGORITHMS)
    if not valid_id_number(holder_id, check_digit=True):
        raise MalformedError(
            "the holder id is not an 18-character ID number with a valid check digit"
        )
    if ensure_utc(expires_at) <= ensure_utc(issued_at):
        raise MalformedError("the code must expire after it is issued")
    if code_id is not None:
        _check_code_id(region, code_id)
    issuer = PartnerIssuer(spec, key_file.private, key_file.kid)
    code = issuer.issue(
        holder_id=holder_id,
        holder_name=holder_name,
        colour=colour,
        issued_at=issued_at,
        expires_at=expires_at,
        code_id=code_id if code_id is not None else secrets.token_hex(8),
    )
    public = RegionKey(region, key_file.kid, key_file.public_key, issued_at, expires_at)
    status = (
        ADAPTERS[region]
        .decode(code, InMemoryKeys.of([public]), Pseudonymiser(secrets.token_bytes(32)))
        .status
    )
    return TestCode(
        code,
        region,
        key_file.kid,
        status.colour,
        status.issued_at,
        status.expires_at,
        status.code_id,
    )


def _check_code_id(region: str, code_id: str) -> None:
    fields = spec_for(region).fields
    if not isinstance(fields, Fields):  # every region's convention is a Fields today
        return
    if fields.code_id is None:
        raise MalformedError(
            f"region {region}'s codes carry no code id (the gateway derives one): omit --code-id"
        )
    if fields.code_id_form is CodeIdForm.BYTES:
        if len(code_id) % 2 or not 2 <= len(code_id) <= 128:
            raise MalformedError(f"region {region}'s code ids are bytes: give 1 to 64 bytes in hex")
        try:
            bytes.fromhex(code_id)
        except ValueError:
            raise MalformedError(
                f"region {region}'s code ids are bytes: give them in hex"
            ) from None
        if code_id != code_id.lower():
            raise MalformedError("give the code id's hex in lower case (as the gateway reads it)")


__all__ = [
    "Checked",
    "TestCode",
    "anchor_signers",
    "check_statement",
    "describe",
    "make_test_code",
    "parse_statement",
    "sign",
    "statement_kind",
]
