"""What partners sign with their anchors: key sets, key revocations, revocation batches.

Each statement is the ``signed`` part of an :class:`keys.signed.Envelope`: canonical JSON with a
``type`` member naming the statement and a ``region`` member naming the partner region it is
about. ``from_signed`` validates completely (unknown members are refused); ``to_signed`` gives the
canonical bytes a partner signs. Times are integer unix seconds (UTC).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keys.anchors import AnchorSet, load_jwk
from keys.crypto import Algorithm, PublicKey
from keys.errors import MalformedError, OversizedError
from keys.jsonutil import canonical_json
from keys.keyid import check_kid, require_kid
from keys.pseudonym import code_hash as code_hash  # re-exported: partners compute it
from keys.regioncode import check_region_code
from keys.signed import get_int, get_str, parse_canonical, require_keys
from keys.timeutil import ensure_utc, from_unix, to_unix

KEYSET_TYPE = "trustgw/keyset/v1"
KEY_REVOCATION_TYPE = "trustgw/key-revocation/v1"
REVOCATIONS_TYPE = "trustgw/revocations/v1"
MAX_KEYSET_KEYS = 64
MAX_BATCH_ENTRIES = 10_000
BATCH_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
HASH_PATTERN = re.compile(r"[0-9a-f]{64}")


def _time(obj: Mapping[str, Any], name: str) -> datetime:
    seconds = get_int(obj, name)
    try:
        return from_unix(seconds)
    except ValueError:
        raise MalformedError(f"member {name!r} is not a time between 2000 and 2200") from None


def _header(data: bytes, expected_type: str, what: str) -> dict[str, Any]:
    obj = parse_canonical(data, what)
    if obj.get("type") != expected_type:
        raise MalformedError(
            f"the statement's type is {str(obj.get('type'))[:40]!r}, expected {expected_type!r}"
        )
    check_region_code(obj.get("region"), "member 'region'")
    return obj


@dataclass(frozen=True)
class KeySetKey:
    """A code-signing key as a key set lists it."""

    kid: str
    public_key: PublicKey
    not_before: datetime
    not_after: datetime

    def __post_init__(self) -> None:
        require_kid(self.kid)
        object.__setattr__(self, "not_before", ensure_utc(self.not_before))
        object.__setattr__(self, "not_after", ensure_utc(self.not_after))
        if self.not_after <= self.not_before:
            raise ValueError(f"key {self.kid}: not_after must be later than not_before")

    def to_json(self) -> dict[str, Any]:
        """The key's entry in a key set (docs/trust-registry.md section 4)."""
        return {
            "kid": self.kid,
            "alg": self.public_key.alg.value,
            "public_key": self.public_key.to_jwk(),
            "not_before": to_unix(self.not_before),
            "not_after": to_unix(self.not_after),
        }


@dataclass(frozen=True)
class KeySet:
    """Version ``version`` of a region's complete list of code-signing keys.

    ``anchors``, when present, replaces the region's anchors (the statement must then be signed
    by a threshold of the current anchors and of these).
    """

    region: str
    version: int
    expires: datetime
    keys: tuple[KeySetKey, ...]
    anchors: AnchorSet | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "expires", ensure_utc(self.expires))
        if isinstance(self.version, bool) or self.version < 1:
            raise ValueError("a key set version is at least 1")
        if len(self.keys) > MAX_KEYSET_KEYS:
            raise ValueError(f"a key set lists at most {MAX_KEYSET_KEYS} keys")
        if len({k.kid for k in self.keys}) != len(self.keys):
            raise ValueError("key ids in a key set must be distinct")
        if len({k.public_key.spki for k in self.keys}) != len(self.keys):
            raise ValueError("the same key is listed twice")

    def to_json(self) -> dict[str, Any]:
        """The key set's members, in the form that is signed."""
        obj: dict[str, Any] = {
            "type": KEYSET_TYPE,
            "region": self.region,
            "version": self.version,
            "expires": to_unix(self.expires),
            "keys": [k.to_json() for k in self.keys],
        }
        if self.anchors is not None:
            obj["anchors"] = self.anchors.to_json()
        return obj

    def to_signed(self) -> bytes:
        """The canonical bytes to sign."""
        return canonical_json(self.to_json())

    @classmethod
    def from_signed(cls, data: bytes) -> KeySet:
        """Parse and validate the signed bytes of a key set.

        Raises :class:`MalformedError`, :class:`OversizedError`,
        :class:`AlgorithmUnsupportedError`.
        """
        obj = _header(data, KEYSET_TYPE, "key set")
        require_keys(obj, ("type", "region", "version", "expires", "keys"), ("anchors",))
        items = obj["keys"]
        if not isinstance(items, list):
            raise MalformedError("member 'keys' is a list")
        if len(items) > MAX_KEYSET_KEYS:
            raise OversizedError(f"a key set lists at most {MAX_KEYSET_KEYS} keys")
        keys = [_keyset_key(item) for item in items]
        anchors = AnchorSet.from_json(obj["anchors"], "new anchors") if "anchors" in obj else None
        try:
            return cls(
                obj["region"],
                get_int(obj, "version", minimum=1),
                _time(obj, "expires"),
                tuple(keys),
                anchors,
            )
        except ValueError as exc:
            raise MalformedError(f"the key set is not valid: {exc}") from None


def _keyset_key(item: object) -> KeySetKey:
    if not isinstance(item, Mapping):
        raise MalformedError("each key of a key set is an object")
    require_keys(item, ("kid", "alg", "public_key", "not_before", "not_after"))
    kid = check_kid(item["kid"])
    key = load_jwk(item["public_key"], f"key {kid}")
    alg = Algorithm.parse(get_str(item, "alg", max_chars=16))
    if alg is not key.alg:
        raise MalformedError(f"key {kid} is declared {alg} but its JWK is a {key.alg} key")
    try:
        return KeySetKey(kid, key, _time(item, "not_before"), _time(item, "not_after"))
    except ValueError as exc:
        raise MalformedError(str(exc)) from None


@dataclass(frozen=True)
class KeyRevocation:
    """A region's code-signing key is compromised from ``compromised_at`` on."""

    region: str
    kid: str
    compromised_at: datetime

    def __post_init__(self) -> None:
        require_kid(self.kid)
        object.__setattr__(self, "compromised_at", ensure_utc(self.compromised_at))

    def to_json(self) -> dict[str, Any]:
        """The revocation's members, in the form that is signed."""
        return {
            "type": KEY_REVOCATION_TYPE,
            "region": self.region,
            "kid": self.kid,
            "compromised_at": to_unix(self.compromised_at),
        }

    def to_signed(self) -> bytes:
        """The canonical JSON bytes a partner signs."""
        return canonical_json(self.to_json())

    @classmethod
    def from_signed(cls, data: bytes) -> KeyRevocation:
        """Parse and validate; raises :class:`MalformedError`."""
        obj = _header(data, KEY_REVOCATION_TYPE, "key revocation")
        require_keys(obj, ("type", "region", "kid", "compromised_at"))
        return cls(obj["region"], check_kid(obj["kid"]), _time(obj, "compromised_at"))


@dataclass(frozen=True)
class RevocationBatch:
    """Codes and holders a region revokes from ``effective_at`` on.

    ``codes`` are :func:`code_hash` values; ``holders`` are
    :func:`keys.pseudonym.holder_hash` values (never raw ID numbers).
    """

    region: str
    batch_id: str
    effective_at: datetime
    codes: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "effective_at", ensure_utc(self.effective_at))
        if BATCH_ID_PATTERN.fullmatch(self.batch_id) is None:
            raise ValueError("a batch id is 1 to 64 of A-Z a-z 0-9 . _ : -")
        if not self.codes and not self.holders:
            raise ValueError("a revocation batch revokes at least one code or holder")
        if len(self.codes) + len(self.holders) > MAX_BATCH_ENTRIES:
            raise ValueError(f"a revocation batch holds at most {MAX_BATCH_ENTRIES} entries")
        for name in ("codes", "holders"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} of a revocation batch must be distinct")
            if not all(HASH_PATTERN.fullmatch(v) for v in values):
                raise ValueError(f"{name} are 64 lower-case hex digits (SHA-256)")

    def to_json(self) -> dict[str, Any]:
        """The batch's members, in the form that is signed."""
        return {
            "type": REVOCATIONS_TYPE,
            "region": self.region,
            "batch_id": self.batch_id,
            "effective_at": to_unix(self.effective_at),
            "codes": list(self.codes),
            "holders": list(self.holders),
        }

    def to_signed(self) -> bytes:
        """The canonical JSON bytes a partner signs."""
        return canonical_json(self.to_json())

    @classmethod
    def from_signed(cls, data: bytes) -> RevocationBatch:
        """Parse and validate; raises :class:`MalformedError`, :class:`OversizedError`."""
        obj = _header(data, REVOCATIONS_TYPE, "revocation batch")
        require_keys(obj, ("type", "region", "batch_id", "effective_at", "codes", "holders"))
        codes, holders = obj["codes"], obj["holders"]
        if not isinstance(codes, list) or not isinstance(holders, list):
            raise MalformedError("members 'codes' and 'holders' are lists")
        if len(codes) + len(holders) > MAX_BATCH_ENTRIES:
            raise OversizedError(f"a revocation batch holds at most {MAX_BATCH_ENTRIES} entries")
        if not all(isinstance(v, str) for v in [*codes, *holders]):
            raise MalformedError("revocation entries are strings")
        try:
            return cls(
                obj["region"],
                get_str(obj, "batch_id", max_chars=64),
                _time(obj, "effective_at"),
                tuple(codes),
                tuple(holders),
            )
        except ValueError as exc:
            raise MalformedError(f"the revocation batch is not valid: {exc}") from None
