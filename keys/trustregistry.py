"""The partner-facing registry operations: onboard, publish key sets, revoke.

Every operation takes the exact bytes of the submission, the region the caller authenticated as
(from its mTLS certificate, in the gRPC layer) and ``now``, and returns a
:class:`keys.records.SubmissionResult` or raises a :class:`keys.errors.GatewayError` with a stable
reason. The gRPC layer is a thin adapter over :class:`TrustRegistry`; nothing here knows grpc.

Order of checks for a signed submission (python-tuf's order: signatures before content):

1. envelope and statement well-formed (``MALFORMED``/``OVERSIZED``);
2. the statement's region is the caller's (``REGION_FORBIDDEN``);
3. a retry of an accepted statement (same signed bytes) returns the first result, flagged as a
   duplicate, and changes nothing;
4. a threshold of the region's current anchors signed the exact bytes (``THRESHOLD_NOT_MET``;
   ``REGION_FORBIDDEN`` when another region's anchors signed them); for an anchor rotation also
   a threshold of the new anchors;
5. the statement's own rules (version, expiry, batch id ...);
6. one transaction applies the change, records the submission and appends the audit entry.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from keys.anchors import PartnerFile
from keys.errors import (
    AnchorsMissingError,
    ConcurrentChangeError,
    KeySetExpiredError,
    RegionForbiddenError,
    RegionUnknownError,
    ReplayError,
    RollbackError,
    SignatureInvalidError,
    ThresholdNotMetError,
    VersionGapError,
)
from keys.model import RegionAlgorithms, RegionKey, check_key_algorithm
from keys.pseudonym import Pseudonymiser
from keys.records import (
    InstallResult,
    KeySetChange,
    RegionTrust,
    RevocationBatchChange,
    SubmissionResult,
)
from keys.registry import KeyRegistry
from keys.signed import Envelope
from keys.statements import KeyRevocation, KeySet, RevocationBatch
from keys.store import TrustStore
from keys.timeutil import ensure_utc, to_iso

log = logging.getLogger("trustgw.keys")

# Revocation batches larger than this are keyed on a worker thread, not on the event loop.
OFF_LOOP_ENTRIES = 1000
OFF_LOOP_BYTES = 64 * 1024  # ... and parsed there when larger than this
_ATTEMPTS = 3  # a concurrent change to the same region is re-checked at most this often


def partner_actor(region: str) -> str:
    """The audit actor of a partner's own submission."""
    return f"partner:{region}"


class TrustRegistry:
    """Onboarding and signed submissions against a :class:`keys.store.TrustStore`.

    ``registry``, when given, is refreshed after each accepted change so that this process
    recognises with the new state at once (other replicas pick it up on their next refresh).
    ``algorithms``, when given, says what each region's codes are signed with: a key set listing
    a key of another algorithm is refused (``KEY_ALGORITHM_MISMATCH``).
    """

    def __init__(
        self,
        store: TrustStore,
        pseudonymiser: Pseudonymiser,
        registry: KeyRegistry | None = None,
        algorithms: RegionAlgorithms | None = None,
    ) -> None:
        self._store = store
        self._pseudonymise = pseudonymiser
        self._registry = registry
        self._algorithms = algorithms

    async def _refresh(self) -> None:
        if self._registry is not None:
            await self._registry.refresh_if_changed()

    # -- onboarding (operators) ---------------------------------------------------------------

    async def install_partner(
        self,
        partner_file: bytes,
        *,
        actor: str,
        now: datetime,
        replace_anchors: bool = False,
    ) -> InstallResult:
        """Onboard a partner region from its partner file, or update it.

        Installing the same file again changes nothing (``result.duplicate``). A region that
        already has other anchors keeps them unless ``replace_anchors`` (break-glass: the normal
        way is a key set signed by the old and the new anchors).

        Raises :class:`keys.errors.MalformedError`, :class:`keys.errors.OversizedError`,
        :class:`keys.errors.AlgorithmUnsupportedError` (bad file),
        :class:`keys.errors.AlreadyExistsError` (other anchors installed),
        :class:`keys.errors.StoreUnavailableError`; ``ValueError`` for a bad ``actor``.
        """
        parsed = PartnerFile.from_bytes(partner_file)
        result = await self._store.install_partner(
            parsed.region,
            parsed.anchors,
            replace=replace_anchors,
            actor=actor,
            now=ensure_utc(now),
        )
        await self._refresh()
        return result

    # -- signed submissions (partners) ---------------------------------------------------------

    async def publish_keyset(
        self, submission: bytes, *, caller_region: str, now: datetime, actor: str | None = None
    ) -> SubmissionResult:
        """Apply version n+1 of the caller's key set.

        The key set replaces the region's code-signing keys atomically: listed keys are added
        or get their new validity window (revocations are kept); keys not listed are removed,
        and codes they signed stop verifying. ``anchors`` in the key set rotate the region's
        anchors (signed by a threshold of the current *and* of the new anchors).

        Raises :class:`keys.errors.MalformedError` / ``OversizedError`` /
        ``AlgorithmUnsupportedError`` (bad submission), :class:`RegionForbiddenError`,
        :class:`RegionUnknownError`, :class:`AnchorsMissingError`, :class:`ThresholdNotMetError`,
        :class:`RollbackError` (``VERSION_ROLLBACK``), :class:`ReplayError`
        (``VERSION_REPLAY``), :class:`VersionGapError`, :class:`KeySetExpiredError`,
        :class:`keys.errors.KeyAlgorithmMismatchError`,
        :class:`keys.errors.KeyIdReusedError`, :class:`ConcurrentChangeError` (still racing
        after retries), :class:`keys.errors.StoreUnavailableError`.
        """
        now = ensure_utc(now)
        envelope = Envelope.from_bytes(submission)
        keyset = KeySet.from_signed(envelope.signed)
        _check_own_region(keyset.region, caller_region)
        for _ in range(_ATTEMPTS):
            earlier = await self._store.find_submission(envelope.digest)
            if earlier is not None:
                return earlier
            trust = await self._trust(keyset.region)
            await self._check_signed(envelope, trust)
            if keyset.anchors is not None:
                keyset.anchors.check_threshold(
                    envelope.signed, envelope.signatures, region=keyset.region, which="new"
                )
            _check_version(keyset, trust.keyset_version)
            if keyset.expires <= now:
                raise KeySetExpiredError(
                    f"key set version {keyset.version} of region {keyset.region} expired at "
                    f"{to_iso(keyset.expires)}",
                    region=keyset.region,
                )
            for k in keyset.keys:
                check_key_algorithm(keyset.region, k.kid, k.public_key.alg, self._algorithms)
            change = KeySetChange(
                region=keyset.region,
                version=keyset.version,
                expires=keyset.expires,
                digest=envelope.digest,
                envelope=submission,
                keys=tuple(
                    RegionKey(keyset.region, k.kid, k.public_key, k.not_before, k.not_after)
                    for k in keyset.keys
                ),
                anchors=keyset.anchors,
                expected_version=trust.keyset_version,
                expected_generation=trust.anchors_generation,
                actor=actor or partner_actor(caller_region),
                at=now,
            )
            try:
                result = await self._store.apply_keyset(change)
            except ConcurrentChangeError:
                continue
            await self._refresh()
            log.info(
                "region %s key set version %s applied%s: +%s -%s",
                result.region,
                result.version,
                " (duplicate)" if result.duplicate else "",
                list(result.keys_added),
                list(result.keys_removed),
            )
            return result
        raise ConcurrentChangeError(
            f"region {keyset.region} kept changing while its key set was applied",
            region=keyset.region,
        )

    async def revoke_key(
        self, submission: bytes, *, caller_region: str, now: datetime, actor: str | None = None
    ) -> SubmissionResult:
        """Revoke one of the caller's code-signing keys from a compromise time on.

        Codes issued at or after ``compromised_at`` are refused as soon as the registry
        refreshes; a revocation only ever moves earlier (a later time than the current one
        changes nothing but is acknowledged).

        Raises :class:`keys.errors.MalformedError`, :class:`RegionForbiddenError`,
        :class:`RegionUnknownError`, :class:`AnchorsMissingError`,
        :class:`ThresholdNotMetError`, :class:`keys.errors.NotFoundError` (no such key),
        :class:`keys.errors.StoreUnavailableError`.
        """
        now = ensure_utc(now)
        envelope = Envelope.from_bytes(submission)
        statement = KeyRevocation.from_signed(envelope.signed)
        _check_own_region(statement.region, caller_region)
        earlier = await self._store.find_submission(envelope.digest)
        if earlier is not None:
            return earlier
        await self._check_signed(envelope, await self._trust(statement.region))
        result = await self._store.apply_key_revocation(
            statement.region,
            statement.kid,
            statement.compromised_at,
            digest=envelope.digest,
            actor=actor or partner_actor(caller_region),
            now=now,
        )
        await self._refresh()
        return result

    async def publish_revocations(
        self, submission: bytes, *, caller_region: str, now: datetime, actor: str | None = None
    ) -> SubmissionResult:
        """Revoke codes and holders of the caller's region from the batch's effective time on.

        Code and holder hashes are keyed under the gateway's secret before anything is stored
        (the partner's unkeyed hashes are never kept). Converted
        home-province codes whose source code or holder is revoked are revoked with it.

        Raises :class:`keys.errors.MalformedError` / ``OversizedError``,
        :class:`RegionForbiddenError`, :class:`RegionUnknownError`,
        :class:`AnchorsMissingError`, :class:`ThresholdNotMetError`,
        :class:`keys.errors.BatchConflictError` (batch id reused for other content),
        :class:`keys.errors.StoreUnavailableError`.
        """
        now = ensure_utc(now)
        if len(submission) > OFF_LOOP_BYTES:  # up to 2 MiB of JSON and base64: on a thread
            envelope, batch = await asyncio.to_thread(_parse_batch, submission)
        else:
            envelope, batch = _parse_batch(submission)
        _check_own_region(batch.region, caller_region)
        earlier = await self._store.find_submission(envelope.digest)
        if earlier is not None:
            return earlier
        await self._check_signed(envelope, await self._trust(batch.region))
        if len(batch.codes) + len(batch.holders) > OFF_LOOP_ENTRIES:
            # ~10 µs an entry: a batch of 10,000 would hold the event loop (and every
            # recognition waiting on it) for a tenth of a second; a thread shares it instead.
            codes, holders = await asyncio.to_thread(self._keyed, batch)
        else:
            codes, holders = self._keyed(batch)
        change = RevocationBatchChange(
            region=batch.region,
            batch_id=batch.batch_id,
            effective_at=batch.effective_at,
            digest=envelope.digest,
            codes=codes,
            holders=holders,
            actor=actor or partner_actor(caller_region),
            at=now,
        )
        result = await self._store.apply_revocation_batch(change)
        await self._refresh()
        return result

    # -- helpers ------------------------------------------------------------------------------

    def _keyed(self, batch: RevocationBatch) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The batch's code hashes and holder hashes keyed under the gateway's secret."""
        return (
            tuple(self._pseudonymise.from_code_hash(h) for h in batch.codes),
            tuple(self._pseudonymise.from_holder_hash(h) for h in batch.holders),
        )

    async def _trust(self, region: str) -> RegionTrust:
        trust = await self._store.region_trust(region)
        if trust.region is None:
            raise RegionUnknownError(f"region {region} is not onboarded", region=region)
        if trust.anchors is None:
            raise AnchorsMissingError(
                f"region {region} has no trust anchors: install its partner file first",
                region=region,
            )
        return trust

    async def _check_signed(self, envelope: Envelope, trust: RegionTrust) -> None:
        """Check the threshold of the region's current anchors; name a foreign signer."""
        assert trust.region is not None and trust.anchors is not None
        region = trust.region.code
        try:
            trust.anchors.check_threshold(
                envelope.signed, envelope.signatures, region=region, which="current"
            )
        except ThresholdNotMetError:
            foreign = await self._foreign_signer(envelope, region)
            if foreign is not None:
                raise RegionForbiddenError(
                    f"the submission for region {region} is signed by the anchors of region "
                    f"{foreign}",
                    region=region,
                    signer=foreign,
                ) from None
            raise

    async def _foreign_signer(self, envelope: Envelope, region: str) -> str | None:
        """Another region whose anchor made one of the signatures (diagnosis only)."""
        others = await self._store.all_anchors()
        for code, anchors in others.items():
            if code == region:
                continue
            for signature in envelope.signatures:
                anchor = anchors.key(signature.keyid)
                if anchor is None:
                    continue
                try:
                    anchor.public_key.verify(envelope.signed, signature.sig)
                except SignatureInvalidError:
                    continue
                return code
        return None


def _parse_batch(submission: bytes) -> tuple[Envelope, RevocationBatch]:
    envelope = Envelope.from_bytes(submission)
    return envelope, RevocationBatch.from_signed(envelope.signed)


def _check_own_region(statement_region: str, caller_region: str) -> None:
    if statement_region != caller_region:
        raise RegionForbiddenError(
            f"a submission for region {statement_region} came from region {caller_region[:8]}",
            region=statement_region,
            caller=caller_region[:8],
        )


def _check_version(keyset: KeySet, current: int) -> None:
    region = keyset.region
    if keyset.version < current:
        raise RollbackError(
            f"key set version {keyset.version} of region {region} is older than the current "
            f"version {current}",
            region=region,
            version=str(keyset.version),
            current=str(current),
        )
    if keyset.version == current:
        raise ReplayError(
            f"a different key set with version {current} of region {region} was already applied",
            region=region,
            version=str(keyset.version),
            current=str(current),
        )
    if keyset.version != current + 1:
        raise VersionGapError(
            f"key set version {keyset.version} of region {region} does not follow the current "
            f"version {current}",
            region=region,
            version=str(keyset.version),
            current=str(current),
        )
