"""The partner side of the trust registry: anchor keys, partner files and signed statements.

What a partner region's system does before it calls the gateway; used by tests, the demo and
as a reference for partners' own implementations (see docs/trust-registry.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from keys.anchors import Anchor, AnchorSet, PartnerFile
from keys.crypto import Algorithm, PrivateKey
from keys.model import Mode, Region
from keys.pseudonym import holder_hash
from keys.signed import Envelope
from keys.statements import KeyRevocation, KeySet, KeySetKey, RevocationBatch, code_hash


@dataclass(frozen=True)
class AnchorKeys:
    """A region's anchor private keys and threshold."""

    keys: tuple[tuple[str, PrivateKey], ...]
    threshold: int

    @classmethod
    def generate(
        cls, n: int = 3, threshold: int = 2, *, alg: Algorithm = Algorithm.EDDSA, prefix: str = "a"
    ) -> AnchorKeys:
        """``n`` fresh anchor keys of ``alg`` named ``<prefix>0`` .. ``<prefix>n-1``, of which
        ``threshold`` must sign.
        """
        return cls(tuple((f"{prefix}{i}", PrivateKey.generate(alg)) for i in range(n)), threshold)

    def anchor_set(self) -> AnchorSet:
        """The public anchor set, as a partner file or key set states it."""
        return AnchorSet(tuple(Anchor(kid, k.public_key()) for kid, k in self.keys), self.threshold)

    def signers(self, kids: Iterable[str] | None = None) -> list[tuple[str, PrivateKey]]:
        """The (kid, key) pairs named, or the first ``threshold`` ones."""
        if kids is None:
            return list(self.keys[: self.threshold])
        by_kid = dict(self.keys)
        return [(kid, by_kid[kid]) for kid in kids]


@dataclass
class PartnerSigner:
    """One partner region: its anchors, and statements signed with them."""

    region: Region
    anchors: AnchorKeys

    @classmethod
    def generate(
        cls,
        code: str,
        *,
        n: int = 3,
        threshold: int = 2,
        mode: Mode = Mode.SHOW,
        max_age: timedelta = timedelta(days=2),
        alg: Algorithm = Algorithm.EDDSA,
    ) -> PartnerSigner:
        """A partner region ``code`` with fresh anchors (``n`` keys, ``threshold`` to sign); raises
        ``ValueError`` for a code that is not a region code.
        """
        return cls(
            Region(code, f"region {code}", mode, max_age),
            AnchorKeys.generate(n, threshold, alg=alg, prefix=f"{code}-a"),
        )

    def partner_file(self) -> bytes:
        """The partner file to hand over out of band (docs/trust-registry.md section 2)."""
        return PartnerFile(self.region, self.anchors.anchor_set()).to_bytes()

    def envelope(
        self,
        signed: bytes,
        signers: Sequence[tuple[str, PrivateKey]] | None = None,
    ) -> bytes:
        """Envelope bytes over ``signed``, by ``signers`` (default: a threshold of anchors)."""
        chosen = self.anchors.signers() if signers is None else list(signers)
        return Envelope.sign(signed, chosen).to_bytes()

    def keyset(
        self,
        version: int,
        keys: Sequence[KeySetKey],
        *,
        expires: datetime,
        new_anchors: AnchorSet | None = None,
        signers: Sequence[tuple[str, PrivateKey]] | None = None,
    ) -> bytes:
        """The envelope of a key set of ``version`` holding ``keys``, valid until ``expires``,
        optionally rotating the anchors to ``new_anchors``; signed by ``signers`` (default: a
        threshold of the current anchors).
        """
        statement = KeySet(self.region.code, version, expires, tuple(keys), new_anchors)
        return self.envelope(statement.to_signed(), signers)

    def key_revocation(
        self,
        kid: str,
        compromised_at: datetime,
        *,
        signers: Sequence[tuple[str, PrivateKey]] | None = None,
    ) -> bytes:
        """The envelope of a revocation of key ``kid``, compromised from ``compromised_at``; signed
        by ``signers`` (default: a threshold of anchors).
        """
        return self.envelope(
            KeyRevocation(self.region.code, kid, compromised_at).to_signed(), signers
        )

    def revocations(
        self,
        batch_id: str,
        effective_at: datetime,
        *,
        code_ids: Sequence[str] = (),
        holder_ids: Sequence[str] = (),
        signers: Sequence[tuple[str, PrivateKey]] | None = None,
    ) -> bytes:
        """A batch naming codes by id and holders by ID number (hashed here, as partners must)."""
        batch = RevocationBatch(
            self.region.code,
            batch_id,
            effective_at,
            tuple(code_hash(self.region.code, c) for c in code_ids),
            tuple(holder_hash(self.region.code, h) for h in holder_ids),
        )
        return self.envelope(batch.to_signed(), signers)


def signing_key(
    kid: str,
    not_before: datetime,
    not_after: datetime,
    *,
    alg: Algorithm = Algorithm.EDDSA,
) -> tuple[KeySetKey, PrivateKey]:
    """A new code-signing key as a key set lists it, and its private half."""
    private = PrivateKey.generate(alg)
    return KeySetKey(kid, private.public_key(), not_before, not_after), private
