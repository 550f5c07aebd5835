"""Trust anchors: per region, the keys that sign the region's key sets and revocations.

Anchors never sign codes. A region's anchors are installed by an operator from a *partner file*
the partner hands over out of band (its fingerprint is compared over a second channel); from
then on they change only through a key set signed by a threshold of the old *and* of the new
anchors (TUF's root rotation).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from keys.crypto import Algorithm, PublicKey, load_public_key
from keys.errors import (
    AlgorithmUnsupportedError,
    GatewayError,
    MalformedError,
    SignatureInvalidError,
    ThresholdNotMetError,
)
from keys.jsonutil import canonical_json, loads_strict
from keys.keyid import check_kid, require_kid
from keys.model import Mode, Region
from keys.regioncode import check_region_code
from keys.signed import Signature, digest, get_int, require_keys

PARTNER_FILE_TYPE = "trustgw/partner/v1"
MAX_ANCHORS = 16
MAX_PARTNER_FILE_BYTES = 64 * 1024
ANCHOR_ALGORITHMS = frozenset({Algorithm.EDDSA, Algorithm.ES256, Algorithm.SM2})


def load_jwk(obj: object, what: str) -> PublicKey:
    """An Ed25519 (OKP), P-256 or SM2 (EC) public JWK through the key funnel.

    Raises :class:`MalformedError`, :class:`AlgorithmUnsupportedError`.
    """
    if not isinstance(obj, Mapping):
        raise MalformedError(f"{what} is not a JWK object")
    key = load_public_key(obj)
    if key.alg not in ANCHOR_ALGORITHMS:
        raise AlgorithmUnsupportedError(
            f"{what} is {key.alg}; only EdDSA, ES256 and SM2 are accepted"
        )
    return key


@dataclass(frozen=True)
class Anchor:
    """One anchor key of a region."""

    kid: str
    public_key: PublicKey

    def __post_init__(self) -> None:
        require_kid(self.kid, "anchor key id")

    def to_json(self) -> dict[str, Any]:
        """The anchor as a partner file lists it: ``{"kid", "public_key"}`` (a JWK)."""
        return {"kid": self.kid, "public_key": self.public_key.to_jwk()}


@dataclass(frozen=True)
class AnchorSet:
    """k of n anchor keys. Distinct key ids *and* distinct keys, so that no key counts twice."""

    keys: tuple[Anchor, ...]
    threshold: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(sorted(self.keys, key=lambda a: a.kid)))
        if not 1 <= len(self.keys) <= MAX_ANCHORS:
            raise ValueError(f"an anchor set has 1 to {MAX_ANCHORS} keys")
        if isinstance(self.threshold, bool) or not 1 <= self.threshold <= len(self.keys):
            raise ValueError(f"the threshold must be between 1 and {len(self.keys)}")
        if len({a.kid for a in self.keys}) != len(self.keys):
            raise ValueError("anchor key ids must be distinct")
        if len({a.public_key.spki for a in self.keys}) != len(self.keys):
            raise ValueError("the same anchor key is listed twice")
        for anchor in self.keys:
            if anchor.public_key.alg not in ANCHOR_ALGORITHMS:
                raise ValueError(f"anchor {anchor.kid} is {anchor.public_key.alg}")

    @property
    def kids(self) -> frozenset[str]:
        """The key ids of the set's anchors."""
        return frozenset(a.kid for a in self.keys)

    def key(self, kid: str) -> Anchor | None:
        """The anchor named ``kid``, or None when the set has none by that id."""
        for anchor in self.keys:
            if anchor.kid == kid:
                return anchor
        return None

    def valid_signers(self, message: bytes, signatures: Iterable[Signature]) -> frozenset[str]:
        """The anchor key ids with a valid signature over ``message``, each counted once.

        Signatures by unknown key ids are ignored; an invalid signature is ignored (another
        signature by the same key may still count).
        """
        by_kid = {a.kid: a for a in self.keys}
        valid: set[str] = set()
        for signature in signatures:
            anchor = by_kid.get(signature.keyid)
            if anchor is None or anchor.kid in valid:
                continue
            try:
                anchor.public_key.verify(message, signature.sig)
            except SignatureInvalidError:
                continue
            valid.add(anchor.kid)
        return frozenset(valid)

    def check_threshold(
        self, message: bytes, signatures: Iterable[Signature], *, region: str, which: str
    ) -> frozenset[str]:
        """Return the counted signers; raise :class:`ThresholdNotMetError` below the threshold."""
        valid = self.valid_signers(message, signatures)
        if len(valid) < self.threshold:
            raise ThresholdNotMetError(
                f"region {region}: {len(valid)} valid signature(s) of the {which} anchors, "
                f"{self.threshold} needed",
                region=region,
                anchors=which,
            )
        return valid

    def to_json(self) -> dict[str, Any]:
        """``{"keys": [...], "threshold": k}``, as partner files and key sets carry it."""
        return {"keys": [a.to_json() for a in self.keys], "threshold": self.threshold}

    def fingerprint(self) -> str:
        """SHA-256 hex over the canonical JSON of the set: read it out over a second channel."""
        return digest(canonical_json(self.to_json()))

    @classmethod
    def from_json(cls, obj: object, what: str = "anchors") -> AnchorSet:
        """Parse ``{"keys": [{"kid", "public_key": JWK}], "threshold": k}``.

        Raises :class:`MalformedError` or :class:`AlgorithmUnsupportedError`.
        """
        if not isinstance(obj, Mapping):
            raise MalformedError(f"{what} is not an object")
        require_keys(obj, ("keys", "threshold"))
        return cls.parse(obj["keys"], obj["threshold"], what)

    @classmethod
    def parse(cls, keys: object, threshold: object, what: str) -> AnchorSet:
        """Read ``keys`` and ``threshold`` as a partner file or key set holds them (``what`` names
        the document in messages).

        Raises :class:`MalformedError` (not a list of 1 to MAX_ANCHORS keys, a repeated key id or
        key, a threshold outside 1..n), :class:`AlgorithmUnsupportedError` (an anchor algorithm
        other than EdDSA or ES256).
        """
        if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_ANCHORS:
            raise MalformedError(f"{what}: a list of 1 to {MAX_ANCHORS} keys")
        anchors: list[Anchor] = []
        for item in keys:
            if not isinstance(item, Mapping):
                raise MalformedError(f"{what}: each key is an object")
            require_keys(item, ("kid", "public_key"))
            kid = check_kid(item["kid"], "anchor key id")
            anchors.append(Anchor(kid, load_jwk(item["public_key"], f"anchor {kid}")))
        if type(threshold) is not int:
            raise MalformedError(f"{what}: the threshold is an integer")
        try:
            return cls(tuple(anchors), threshold)
        except ValueError as exc:
            raise MalformedError(f"{what}: {exc}") from None


@dataclass(frozen=True)
class PartnerFile:
    """What a partner hands over out of band to be onboarded: its region and its anchors."""

    region: Region
    anchors: AnchorSet

    @classmethod
    def from_bytes(cls, data: bytes) -> PartnerFile:
        """Parse a partner file (plain JSON; see docs/trust-registry.md).

        Raises :class:`OversizedError`, :class:`MalformedError`,
        :class:`AlgorithmUnsupportedError`.
        """
        obj = loads_strict(data, max_bytes=MAX_PARTNER_FILE_BYTES, max_depth=8, what="partner file")
        if not isinstance(obj, dict):
            raise MalformedError("the partner file is not a JSON object")
        try:
            return cls.from_json(obj)
        except GatewayError:
            raise
        except (TypeError, ValueError) as exc:
            raise MalformedError(f"the partner file is not valid: {exc}") from None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PartnerFile:
        """Validate a parsed partner file (docs/trust-registry.md section 2).

        Raises :class:`MalformedError` for a missing or unknown member, a bad region code, name,
        mode, max_age or anchor set; :class:`AlgorithmUnsupportedError` for an anchor algorithm
        not accepted.
        """
        require_keys(obj, ("type", "region", "name", "mode", "max_age", "anchors", "threshold"))
        if obj["type"] != PARTNER_FILE_TYPE:
            raise MalformedError(f"the partner file's type is not {PARTNER_FILE_TYPE!r}")
        code = check_region_code(obj["region"], "the partner file's region")
        name = obj["name"]
        if (
            not isinstance(name, str)
            or not 1 <= len(name) <= 64
            or any(unicodedata.category(ch).startswith("C") for ch in name)
        ):
            raise MalformedError("the name has 1 to 64 printable characters")
        try:
            mode = Mode(obj["mode"])
        except ValueError:
            raise MalformedError("the mode is 'show' or 'convert'") from None
        max_age = get_int(obj, "max_age", minimum=1)
        try:
            region = Region(code, name, mode, timedelta(seconds=max_age))
        except (ValueError, OverflowError) as exc:
            raise MalformedError(f"the partner file is not valid: {exc}") from None
        anchors = AnchorSet.parse(obj["anchors"], obj["threshold"], "anchors")
        return cls(region, anchors)

    def to_json(self) -> dict[str, Any]:
        """The partner file's members (the inverse of :meth:`from_json`)."""
        return {
            "type": PARTNER_FILE_TYPE,
            "region": self.region.code,
            "name": self.region.name,
            "mode": self.region.mode.value,
            "max_age": int(self.region.max_age.total_seconds()),
            "anchors": [a.to_json() for a in self.anchors.keys],
            "threshold": self.anchors.threshold,
        }

    def to_bytes(self) -> bytes:
        """The file as a partner hands it over: indented UTF-8 JSON, one trailing newline."""
        return (json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n").encode("utf-8")
