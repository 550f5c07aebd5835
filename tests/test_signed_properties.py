"""Random timelines: whatever the rotations, every signed output verifies offline with the
published keys at every instant of its stated validity, and at no instant outside it.

Pins docs/verifying.md, "When a signed output is valid" (attestations, home codes, receipts)
and docs/trust-registry.md §9, "Validity" (trust lists). A timeline is a gateway key directory
created at T0, random rotations of random roles (random lead times, including none and the
default, random validities so that keys expire and are pruned), random signing instants and
random check instants plus each output's own boundaries. Every time is explicit.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from bisect import bisect_right
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from signed_support import KINDS, LIMITS, ROLES, sign, verify

from gateway import tokens
from keys.errors import ConfigurationError, GatewayError, KeyRevokedError
from keys.keystore import DEFAULT_ACTIVATION_DELAY, GatewayKeyInfo, KeyDirectory, KeyRole
from keys.registry import RegistrySnapshot
from keys.signed import Envelope
from keys.timeutil import to_unix
from keys.trustclaims import TrustListClaims
from keys.trustlist import (
    PinnedKey,
    TrustList,
    TrustListVerifier,
    content_digest,
    sign_trustlist,
)
from keys.trustpublisher import build_content

# TRUSTGW_PROPERTY_EXAMPLES=2000 for a deeper run; the default keeps the suite fast. No deadline:
# each example writes a key directory, and the machine may be loaded.
PROPS = settings(
    max_examples=int(os.environ.get("TRUSTGW_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize="TRUSTGW_PROPERTY_EXAMPLES" not in os.environ,
)

T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
SPAN = 3 * 86_400  # seconds covered by a timeline
SECOND = timedelta(seconds=1)

seconds = st.integers(min_value=0, max_value=SPAN)
validities = st.integers(min_value=3_600, max_value=3 * 86_400).map(lambda s: timedelta(seconds=s))
leads = st.one_of(
    st.just(None),  # the default lead time
    st.just(timedelta(0)),  # an emergency rotation
    st.integers(min_value=1, max_value=7_200).map(lambda s: timedelta(seconds=s)),
)


@dataclasses.dataclass(frozen=True)
class Rotation:
    at: int
    role: KeyRole
    lead: timedelta | None
    validity: timedelta


@st.composite
def timelines(draw: Any, roles: list[KeyRole]) -> tuple[timedelta, list[Rotation], list[int]]:
    """The first keys' validity, a rotation plan and signing instants. Some rotations fall right
    at the first keys' not_after (a second before, at, after), where pruning and hand-over
    happen; some signing instants fall right at a rotated key's activation and at that end."""
    validity = draw(validities)
    end = int(validity.total_seconds())
    at = st.one_of(seconds, st.sampled_from([end - 1, end, end + 1]))
    plan = sorted(
        draw(
            st.lists(st.builds(Rotation, at, st.sampled_from(roles), leads, validities), max_size=6)
        ),
        key=lambda r: r.at,
    )
    boundaries = [end - 1, end]
    for rotation in plan:
        lead = DEFAULT_ACTIVATION_DELAY if rotation.lead is None else rotation.lead
        start = rotation.at + int(lead.total_seconds())
        boundaries += [start - 1, start]
    signing = draw(
        st.lists(st.one_of(seconds, st.sampled_from(boundaries)), min_size=1, max_size=5)
    )
    return validity, plan, [t for t in signing if 0 <= t <= SPAN]


class Timeline:
    """A key directory driven through rotations in time order; what it published when."""

    def __init__(self, path: Path, validity: timedelta, plan: list[Rotation]) -> None:
        self.keys = KeyDirectory.create(path, dev=True, passphrase=None, now=T0, validity=validity)
        self._plan = plan
        self._done = 0
        self.times: list[datetime] = [T0]
        self.published: list[list[GatewayKeyInfo]] = [self.keys.public_keys()]

    def advance(self, until: datetime) -> None:
        """Apply every rotation at or before ``until``."""
        while self._done < len(self._plan) and T0 + self._at(self._done) <= until:
            rotation = self._plan[self._done]
            now = T0 + self._at(self._done)
            activate = None if rotation.lead is None else now + rotation.lead
            self.keys.rotate(rotation.role, now, activate_at=activate, validity=rotation.validity)
            self.times.append(now)
            self.published.append(self.keys.public_keys())
            self._done += 1

    def _at(self, index: int) -> timedelta:
        return timedelta(seconds=self._plan[index].at)

    def published_at(self, when: datetime) -> list[GatewayKeyInfo]:
        """The keys ``trustgw keys export`` / ``GetGatewayKeys`` would have given at ``when``
        (``when`` no later than the last :meth:`advance`)."""
        return self.published[bisect_right(self.times, when) - 1]


def trusts(infos: list[GatewayKeyInfo]) -> list[tokens.GatewayTrust]:
    """The same published keys as a trust file and as a verified trust list carries them."""
    content = build_content(RegistrySnapshot(1, {}), infos, now=T0)
    listed = TrustList(1, T0, T0 + SECOND, content_digest(content), content)
    return [
        tokens.GatewayTrust.from_key_infos(infos, now=T0),
        tokens.GatewayTrust.from_trustlist(listed),
    ]


def outcome(call: Any, *args: Any) -> str:
    try:
        call(*args)
    except GatewayError as exc:
        return exc.reason
    return "OK"


def instants(extra: list[int], iat: int, exp: int) -> list[datetime]:
    """Random check instants and the boundaries of one output's window."""
    points = {iat - 1, iat, exp, exp + 1, *extra}
    return sorted(datetime.fromtimestamp(t, UTC) for t in points if t >= to_unix(T0))


@pytest.mark.doc('verifying.md "Verifying what the gateway signs, offline"')
@pytest.mark.parametrize("kind", KINDS)
@PROPS
@given(
    timeline_plan=st.data(),
    checks=st.lists(st.integers(min_value=0, max_value=SPAN + 86_400), max_size=6),
)
def test_tokens_verify_exactly_within_their_stated_validity(
    kind: str, timeline_plan: st.DataObject, checks: list[int]
) -> None:
    # Mostly rotations of the role that signs this kind; the others must not disturb it.
    others = [r for r in KeyRole if r is not ROLES[kind]]
    roles = [ROLES[kind], ROLES[kind], ROLES[kind], *others]
    validity, plan, signing = timeline_plan.draw(timelines(roles))
    with tempfile.TemporaryDirectory() as tmp:
        timeline = Timeline(Path(tmp) / "keys", validity, plan)
        outputs: list[tuple[datetime, Any, int, int, GatewayKeyInfo]] = []
        for offset in sorted(signing):
            at = T0 + timedelta(seconds=offset)
            timeline.advance(at)
            try:
                signer, _ = timeline.keys.signer(ROLES[kind], at)
                output, iat, exp = sign(kind, timeline.keys, at)
            except ConfigurationError:
                continue  # every key of the role has expired: the gateway signs nothing
            # What it states: signed now, for its own limit, never past its key.
            assert iat == to_unix(at)
            assert exp == min(to_unix(at + LIMITS[kind]), to_unix(signer.not_after))
            outputs.append((at, output, iat, exp, signer))
        timeline.advance(T0 + timedelta(seconds=SPAN))
        event(f"{len(outputs)} outputs, {len(timeline.times) - 1} rotations")
        event(f"signed by a rotated key: {any(o[4].kid != outputs[0][4].kid for o in outputs)}")
        extra = [to_unix(T0) + c for c in checks]
        for signed_at, output, iat, exp, signer in outputs:
            for at in instants(extra, iat, exp):
                valid = iat <= to_unix(at) <= exp
                # keys exported at the check (or, before signing, at the signing) and at signing
                sources = {max(at, signed_at), signed_at}
                for when in sources:
                    for trust in trusts(timeline.published_at(when)):
                        result = outcome(verify, kind, output, trust, at)
                        assert (result == "OK") == valid, (kind, at, iat, exp, when, result)
                # The same keys, but the signer marked revoked: refused at every instant.
                (published, *_) = trusts(timeline.published_at(signed_at))
                revoked = dataclasses.replace(
                    published,
                    keys=tuple(
                        dataclasses.replace(k, status="revoked") if k.kid == signer.kid else k
                        for k in published.keys
                    ),
                )
                result = outcome(verify, kind, output, revoked, at)
                assert result == KeyRevokedError.reason, (kind, at, result)


def list_claims(infos: list[GatewayKeyInfo]) -> TrustListClaims:
    content = build_content(RegistrySnapshot(1, {}), infos, now=T0)
    return TrustListClaims(1, content_digest(content), content)


@pytest.mark.doc('verifying.md "Verifying what the gateway signs, offline"')
@PROPS
@given(
    timeline_plan=timelines([KeyRole.TRUSTLIST]),
    ttl=st.integers(min_value=600, max_value=86_400).map(lambda s: timedelta(seconds=s)),
    checks=st.lists(st.integers(min_value=0, max_value=SPAN + 86_400), max_size=6),
)
def test_trust_lists_verify_exactly_within_their_stated_validity(
    timeline_plan: tuple[timedelta, list[Rotation], list[int]],
    ttl: timedelta,
    checks: list[int],
) -> None:
    validity, plan, signing = timeline_plan
    with tempfile.TemporaryDirectory() as tmp:
        timeline = Timeline(Path(tmp) / "keys", validity, plan)
        lists = []
        for offset in sorted(signing):
            at = T0 + timedelta(seconds=offset)
            timeline.advance(at)
            valid_now = [i for i, _ in timeline.keys.signers(KeyRole.TRUSTLIST, at)]
            try:
                signed = sign_trustlist(
                    list_claims(timeline.keys.public_keys()), timeline.keys, at, ttl
                )
            except ConfigurationError:
                assert not valid_now
                continue
            # What it states: signed now, for at most its lifetime, never past its signers.
            assert signed.issued_at == at
            assert signed.expires == min(at + ttl, max(i.not_after for i in valid_now))
            signers = {s.keyid for s in Envelope.from_bytes(signed.envelope).signatures}
            assert signers == {i.kid for i in valid_now if i.not_after >= signed.expires}
            lists.append(signed)
        timeline.advance(T0 + timedelta(seconds=SPAN))
        event(f"{len(lists)} lists, {len(timeline.times) - 1} rotations")
        extra = [to_unix(T0) + c for c in checks]
        for signed in lists:
            issued, expires = to_unix(signed.issued_at), to_unix(signed.expires)
            for at in instants(extra, issued, expires - 1):
                valid = issued <= to_unix(at) < expires
                for when in {max(at, signed.issued_at), signed.issued_at}:
                    pinned = PinnedKey.of(timeline.published_at(when))
                    result = outcome(TrustListVerifier(pinned).verify, signed.envelope, at)
                    assert (result == "OK") == valid, (at, issued, expires, when, result)
