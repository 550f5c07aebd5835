"""The claims of a signed trust list: a full list or a delta (docs/trust-registry.md, "Trust list").

One typed class for each, built by :class:`keys.trustlist.TrustListPublisher`, written with
``to_json`` into the canonical bytes the trustlist keys sign, and read back with
:func:`trustlist_claims_from_json` by :class:`keys.trustlist.TrustListVerifier` once a trusted
signature has verified. Exactly the members listed there: a missing or unknown member, or one of
the wrong type, is ``MALFORMED``. ``issued_at`` and ``expires`` stay 0 until the signing plan
states them (``with_validity``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from keys.errors import MalformedError
from keys.signed import get_int, require_keys

TRUSTLIST_TYPE = "trustgw/trustlist/v1"
TRUSTLIST_DELTA_TYPE = "trustgw/trustlist-delta/v1"

__all__ = [
    "TRUSTLIST_DELTA_TYPE",
    "TRUSTLIST_TYPE",
    "TrustListClaims",
    "TrustListDeltaClaims",
    "trustlist_claims_from_json",
]


def _digest(obj: Mapping[str, Any]) -> str:
    value = obj["content_digest"]
    if not isinstance(value, str):
        raise MalformedError("the trust list's content_digest is not text")
    return value


@dataclass(frozen=True)
class TrustListClaims:
    """A full trust list: every region and key at ``version`` (``content``)."""

    version: int
    content_digest: str
    content: Mapping[str, Any]
    issued_at: int = 0
    expires: int = 0

    def with_validity(self, issued_at: int, expires: int) -> TrustListClaims:
        """These claims with the window the signing plan states (unix seconds)."""
        return replace(self, issued_at=issued_at, expires=expires)

    def to_json(self) -> dict[str, Any]:
        """The signed members; raises ``ValueError`` before the window is stated."""
        if self.issued_at <= 0:
            raise ValueError("sign a trust list only with the window its signing plan states")
        return {
            "type": TRUSTLIST_TYPE,
            "version": self.version,
            "content_digest": self.content_digest,
            "content": self.content,
            "issued_at": self.issued_at,
            "expires": self.expires,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TrustListClaims:
        """Read the signed members; raises :class:`MalformedError`."""
        require_keys(obj, ("type", "version", "issued_at", "expires", "content_digest", "content"))
        if obj["type"] != TRUSTLIST_TYPE:
            raise MalformedError("not a full trust list")
        content = obj["content"]
        if not isinstance(content, dict):
            raise MalformedError("the trust list's content is not an object")
        return cls(
            version=get_int(obj, "version", minimum=1),
            content_digest=_digest(obj),
            content=content,
            issued_at=get_int(obj, "issued_at"),
            expires=get_int(obj, "expires"),
        )


@dataclass(frozen=True)
class TrustListDeltaClaims:
    """The changes from version ``since`` to ``version``: the regions now, the keys added or
    changed (``upserted``) and those removed (``removed``, as ``{owner, kid}``)."""

    version: int
    since: int
    content_digest: str
    regions: list[Any]
    upserted: list[Any]
    removed: list[Any]
    issued_at: int = 0
    expires: int = 0

    def with_validity(self, issued_at: int, expires: int) -> TrustListDeltaClaims:
        """These claims with the window the signing plan states (unix seconds)."""
        return replace(self, issued_at=issued_at, expires=expires)

    def to_json(self) -> dict[str, Any]:
        """The signed members; raises ``ValueError`` before the window is stated."""
        if self.issued_at <= 0:
            raise ValueError("sign a trust list only with the window its signing plan states")
        return {
            "type": TRUSTLIST_DELTA_TYPE,
            "version": self.version,
            "since": self.since,
            "content_digest": self.content_digest,
            "regions": self.regions,
            "upserted": self.upserted,
            "removed": self.removed,
            "issued_at": self.issued_at,
            "expires": self.expires,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TrustListDeltaClaims:
        """Read the signed members; raises :class:`MalformedError`."""
        require_keys(
            obj,
            ("type", "version", "since", "issued_at", "expires", "content_digest",
             "regions", "upserted", "removed"),
        )  # fmt: skip
        if obj["type"] != TRUSTLIST_DELTA_TYPE:
            raise MalformedError("not a trust list delta")
        regions, upserted, removed = obj["regions"], obj["upserted"], obj["removed"]
        if not all(isinstance(v, list) for v in (regions, upserted, removed)):
            raise MalformedError("a delta's regions, upserted and removed are lists")
        return cls(
            version=get_int(obj, "version", minimum=1),
            since=get_int(obj, "since", minimum=1),
            content_digest=_digest(obj),
            regions=regions,
            upserted=upserted,
            removed=removed,
            issued_at=get_int(obj, "issued_at"),
            expires=get_int(obj, "expires"),
        )


def trustlist_claims_from_json(obj: Mapping[str, Any]) -> TrustListClaims | TrustListDeltaClaims:
    """The claims of a verified trust list payload, full or delta by its ``type``.

    Raises :class:`MalformedError` for any other type or members that are not the format.
    """
    kind = obj.get("type")
    if kind == TRUSTLIST_TYPE:
        return TrustListClaims.from_json(obj)
    if kind == TRUSTLIST_DELTA_TYPE:
        return TrustListDeltaClaims.from_json(obj)
    raise MalformedError(f"not a trust list: type {str(kind)[:40]!r}")
