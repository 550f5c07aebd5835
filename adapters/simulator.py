"""Simulated partner issuers, for the demo, the tests and the benchmark.

Each :class:`PartnerIssuer` holds one region's signing key and writes that region's codes with
the same codecs and field conventions the gateway reads them with. Keys are generated fresh in
memory; nothing here is meant for production.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from adapters.base import Colour, RegionSpec
from adapters.fields import id_check_digit
from adapters.regions import REGION_SPECS, spec_for
from keys.crypto import PrivateKey
from keys.model import RegionKey


@dataclass(frozen=True)
class PartnerIssuer:
    """One partner region's issuer, with its own signing key and key id."""

    spec: RegionSpec
    key: PrivateKey
    kid: str

    def __post_init__(self) -> None:
        if self.key.alg is not self.spec.signing_alg:
            raise ValueError(f"region {self.spec.code} signs with {self.spec.signing_alg}")

    @classmethod
    def generate(cls, region: str, *, kid: str | None = None) -> PartnerIssuer:
        """A fresh key of the region's algorithm; the kid defaults to the key's fingerprint."""
        spec = spec_for(region)
        key = PrivateKey.generate(spec.signing_alg)
        return cls(spec, key, kid or key.public_key().fingerprint())

    def claims(
        self,
        *,
        holder_id: str,
        holder_name: str,
        colour: Colour,
        issued_at: datetime,
        expires_at: datetime,
        code_id: str | None = None,
    ) -> dict[Any, Any]:
        """The claims this region's issuer writes (a random hex code id unless one is given)."""
        return self.spec.fields.build(
            holder_id=holder_id,
            holder_name=holder_name,
            colour=colour,
            issued_at=issued_at,
            expires_at=expires_at,
            code_id=code_id if code_id is not None else secrets.token_hex(8),
        )

    def issue(
        self,
        *,
        holder_id: str,
        holder_name: str,
        colour: Colour,
        issued_at: datetime,
        expires_at: datetime,
        code_id: str | None = None,
    ) -> str:
        """A genuine code of this region, as its partner system would issue it."""
        claims = self.claims(
            holder_id=holder_id,
            holder_name=holder_name,
            colour=colour,
            issued_at=issued_at,
            expires_at=expires_at,
            code_id=code_id,
        )
        return self.seal(claims)

    def seal(self, claims: Mapping[Any, Any]) -> str:
        """Sign arbitrary claims with this issuer's key (tests use it for well-signed nonsense)."""
        return self.spec.codec.seal(claims, self.key, self.kid)

    def forge(
        self,
        *,
        holder_id: str,
        holder_name: str,
        colour: Colour,
        issued_at: datetime,
        expires_at: datetime,
        code_id: str | None = None,
    ) -> str:
        """The same claims signed by another key under this issuer's kid (SIGNATURE_INVALID)."""
        claims = self.claims(
            holder_id=holder_id,
            holder_name=holder_name,
            colour=colour,
            issued_at=issued_at,
            expires_at=expires_at,
            code_id=code_id,
        )
        return self.spec.codec.seal(claims, PrivateKey.generate(self.spec.signing_alg), self.kid)

    def region_key(self, not_before: datetime, not_after: datetime) -> RegionKey:
        """This issuer's public key, to register in the gateway's registry."""
        return RegionKey(self.spec.code, self.kid, self.key.public_key(), not_before, not_after)


@dataclass(frozen=True)
class PartnerSimulator:
    """An issuer for each of the 14 partner regions."""

    by_region: Mapping[str, PartnerIssuer]

    @classmethod
    def generate(cls) -> PartnerSimulator:
        """A simulator with a fresh key for every partner region."""
        return cls(
            MappingProxyType(
                {spec.code: PartnerIssuer.generate(spec.code) for spec in REGION_SPECS}
            )
        )

    def issuer(self, region: str) -> PartnerIssuer:
        """The issuer of ``region``; raises :class:`ValueError` for a non-partner region."""
        try:
            return self.by_region[region]
        except KeyError:
            raise ValueError(f"{region!r} is not a partner region") from None

    def issuers(self) -> list[PartnerIssuer]:
        """Every region's issuer."""
        return list(self.by_region.values())

    def key_lookup(self, not_before: datetime, not_after: datetime) -> InMemoryKeys:
        """Every issuer's key, valid from ``not_before`` to ``not_after``, as a key lookup."""
        return InMemoryKeys.of(i.region_key(not_before, not_after) for i in self.issuers())


@dataclass(frozen=True)
class InMemoryKeys:
    """A tiny :class:`keys.model.KeyLookup` over fixed keys, for tests, the demo and benchmarks."""

    keys: tuple[RegionKey, ...]

    @classmethod
    def of(cls, keys: Iterable[RegionKey]) -> InMemoryKeys:
        """A key lookup holding ``keys``."""
        return cls(tuple(keys))

    def keys_for(self, region: str, kid_hint: str | None) -> tuple[RegionKey, ...]:
        """The region's keys with id ``kid_hint`` (all of them when it is None)."""
        return tuple(
            k for k in self.keys if k.region == region and (kid_hint is None or k.kid == kid_hint)
        )


# --- fake holders -----------------------------------------------------------------------------

# Area codes (GB/T 2260 county level) of some partner regions, for plausible ID numbers.
_AREAS = (
    "110101", "110105", "120101", "130102", "230102", "310101", "310115", "330102", "340102",
    "410102", "440103", "440305", "500103", "510104", "520102", "630102", "650102", "370102",
)  # fmt: skip
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜"
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚华建国志红玉海燕晓东文博宇欣怡子涵浩然思雨"


def fake_holder(rng: random.Random) -> tuple[str, str]:
    """A made-up holder: a valid 18-character ID number (GB 11643, with its check digit) and a
    Chinese name. Deterministic for a seeded ``rng``."""
    area = rng.choice(_AREAS)
    birth = f"{rng.randint(1940, 2015):04d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    first17 = f"{area}{birth}{rng.randint(0, 999):03d}"
    name = rng.choice(_SURNAMES) + "".join(rng.choice(_GIVEN) for _ in range(rng.randint(1, 2)))
    return first17 + id_check_digit(first17), name


__all__ = ["InMemoryKeys", "PartnerIssuer", "PartnerSimulator", "fake_holder"]
