"""Arrival declarations (来鲁申报): the decision, the home code and its record.

A declaration is checked (:func:`gateway.declaration.form.check`), the partner code it carries
is verified exactly as ``Recognise`` verifies one (:meth:`gateway.engine.Recogniser.verify`,
any colour) and must be the declarant's; the plan's rules (:mod:`gateway.eligibility`) give the
colour, never better than the partner code's; a green partner code, with every place of the
last 14 days in the home province or a partner region, exempts the holder from rule 4's home
observation. The answer is a home-province code signed with the issuing key, as a converted one
is. docs/api.md, "DeclarationService"; docs/rules.md.

Nothing about the holder is stored or logged before the declaration is accepted, and then only
the keyed pseudonyms, the decision and a keyed digest of what was declared.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime, time, timedelta

from adapters.base import CanonicalStatus, Colour
from adapters.fields import CHINA_STANDARD_TIME
from gateway import tokens
from gateway.claims import DeclarationSource, HomeCodeClaims
from gateway.declaration.form import DeclarationForm, Declared, check, refused
from gateway.declaration.places import HOME, PROVINCE
from gateway.eligibility import Ceiling, Facts, Outcome, evaluate
from gateway.engine import Recogniser
from keys.errors import NotFoundError
from keys.jsonutil import canonical_json
from keys.keystore import KeyRole, Signers
from keys.model import HOME_REGION
from keys.personal import DeclarationRecord, DeclareResult
from keys.pseudonym import Pseudonymiser
from keys.registry import RegistrySnapshot
from keys.store.protocols import DeclarationStore
from keys.timeutil import ensure_utc

log = logging.getLogger("trustgw.declaration")

# How long a declaration's home code is valid at most: a week, as a converted stock
# certificate's; never longer than the partner code it was made from, and a yellow code ends
# when its holder would turn green (declaring again then gives the green code).
DEFAULT_VALIDITY = timedelta(days=7)


class Declarations:
    """Decides and records arrival declarations. One instance serves a whole process."""

    def __init__(
        self,
        store: DeclarationStore,
        signers: Signers,
        pseudonymiser: Pseudonymiser,
        recogniser: Recogniser,
        snapshot: Callable[[], RegistrySnapshot],
        *,
        validity: timedelta = DEFAULT_VALIDITY,
    ) -> None:
        if validity <= timedelta(0):
            raise ValueError("the validity is positive")
        self._store = store
        self._signers = signers
        self._pseudonymise = pseudonymiser
        self._recogniser = recogniser
        self._snapshot = snapshot
        self._validity = validity

    async def declare(self, form: DeclarationForm, now: datetime) -> DeclareResult:
        """Decide on ``form`` at ``now`` and store the declaration (or find it stored).

        Raises :class:`keys.errors.DeclarationInvalidError` (a bad field, the partner code of
        another holder), the :class:`keys.errors.ForeignDataError` of a partner
        code that ``Recognise`` would refuse, and the store's errors; nothing is stored then.
        """
        now = ensure_utc(now)
        declared = check(form, now)
        holder = self._pseudonymise(HOME_REGION, declared.id_number)
        partner: CanonicalStatus | None = None
        bound = False  # the partner code names the declarant by their ID number
        if declared.partner_code.strip():
            verified, by_id = await self._recogniser.verify(declared.partner_code, now)
            partner = verified.status
            if by_id and self._pseudonymise(partner.region, declared.id_number) != partner.holder:
                raise refused(
                    "HOLDER_MISMATCH",
                    "partner_code is not the declarant's: it names another holder",
                    "partner_code",
                )
            bound = by_id
        outcome = evaluate(self._facts(declared, partner, bound), now)
        record = self._record(declared, holder, partner, bound, outcome, now)
        result = await self._store.declare(record, now)
        log.info(
            "declaration %s from %s: %s%s%s",
            result.record.id,
            result.record.origin,
            result.record.colour,
            " (repeated)" if result.duplicate else "",
            f", supersedes {result.superseded}" if result.superseded else "",
        )
        return result

    async def get(self, ident: str) -> DeclarationRecord:
        """The declaration with that id; raises :class:`NotFoundError`."""
        record = await self._store.get_declaration(ident)
        if record is None:
            raise NotFoundError(f"no declaration {ident[:40]!r}")
        return record

    def exempt(self, declared: Declared, partner: CanonicalStatus | None, bound: bool) -> bool:
        """Rule 4 is waived: a green partner code that names the declarant by their ID number
        (``bound``), and the origin and every place of the last 14 days in the home province or
        an enabled partner region. An online code, which names its holder only by the region's
        reference, may make the colour worse but exempts no one."""
        if partner is None or not bound or partner.colour is not Colour.GREEN:
            return False
        snapshot = self._snapshot()
        for place in (declared.origin, *declared.places):
            if place.kind == HOME:
                continue
            region = snapshot.region(place.code) if place.kind == PROVINCE else None
            if region is None or not region.enabled:
                return False
        return True

    def _facts(self, declared: Declared, partner: CanonicalStatus | None, bound: bool) -> Facts:
        dates = declared.dates
        return Facts(
            resident_since=None,  # an arrival: rule 4 (last_arrival) stands for residence
            temperature=declared.temperature,
            dry_cough=declared.dry_cough,
            fatigue=declared.fatigue,
            case=declared.case,
            discharged_on=dates["discharged_on"],
            isolation_start=dates["isolation_start"],
            isolation_end=dates["isolation_end"],
            observation_end=dates["observation_end"],
            last_arrival=declared.arrival_date,
            arrival_exempt=self.exempt(declared, partner, bound),
            ceiling=Colour.GREEN if partner is None else partner.colour,
            ceiling_of=Ceiling.PARTNER,
        )

    def _digest(self, declared: Declared, holder: str, partner_key: str) -> str:
        """What was declared, as a digest keyed by the holder's pseudonym (itself keyed):
        without the gateway's secret it cannot be checked against a guess."""
        dates = {k: None if v is None else v.isoformat() for k, v in declared.dates.items()}
        content = {
            "holder": holder,
            "origin": declared.origin.code,
            "arrival_date": declared.arrival_date.isoformat(),
            "places": sorted(p.code for p in declared.places),
            "temperature": None if declared.temperature is None else f"{declared.temperature:.2f}",
            "dry_cough": declared.dry_cough,
            "fatigue": declared.fatigue,
            "case": declared.case,
            "dates": dates,
            "partner": partner_key,
        }
        return hashlib.sha256(canonical_json(content)).hexdigest()

    def _record(
        self,
        declared: Declared,
        holder: str,
        partner: CanonicalStatus | None,
        bound: bool,
        outcome: Outcome,
        now: datetime,
    ) -> DeclarationRecord:
        partner_key = (
            "" if partner is None else self._pseudonymise.code_key(partner.region, partner.code_id)
        )
        digest = self._digest(declared, holder, partner_key)
        info, key = self._signers.signer(KeyRole.ISSUE, now)
        until = now + self._validity
        if partner is not None:
            until = min(until, partner.expires_at)
        if outcome.green_from is not None:
            turns_green = datetime.combine(outcome.green_from, time(), CHINA_STANDARD_TIME)
            until = min(until, turns_green)
        ident = tokens.home_code_id(
            HOME_REGION, f"declaration|{holder}|{digest}|{int(now.timestamp())}"
        )
        code, expires_at = tokens.issue_home_code(
            info,
            key,
            now,
            HomeCodeClaims(
                id=ident,
                holder=holder,
                colour=outcome.colour.value,
                src=DeclarationSource(declared.origin.code),
            ),
            until=until,
        )
        return DeclarationRecord(
            id=ident,
            holder=holder,
            digest=digest,
            origin=declared.origin.code,
            origin_kind=declared.origin.kind,
            arrival_date=declared.arrival_date,
            colour=outcome.colour.value,
            rules=outcome.failed,
            green_from=outcome.green_from,
            exempt=self.exempt(declared, partner, bound),
            code=code,
            issued_at=now,
            expires_at=expires_at,
            created_at=now,
            partner_region="" if partner is None else partner.region,
            partner_source_key=partner_key,
            partner_holder="" if partner is None else partner.holder,
            partner_issued_at=None if partner is None else partner.issued_at,
        )
