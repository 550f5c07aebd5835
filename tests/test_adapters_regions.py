"""The 14 region adapters: detection, round trips, forgery, key scoping, translation rules."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from adapters import ADAPTERS, REGION_SPECS, detect
from adapters.base import Colour, RegionAdapter
from adapters.codecs.compact import CompactCodec
from adapters.codecs.encoding import compress, encode_text
from adapters.fields import valid_id_number
from adapters.simulator import InMemoryKeys, PartnerIssuer, PartnerSimulator, fake_holder
from keys.crypto import Algorithm, PrivateKey
from keys.errors import (
    AlgorithmUnsupportedError,
    KeyNotValidError,
    KeyRevokedError,
    KeyUnknownError,
    MalformedError,
    RegionUnknownError,
    SignatureInvalidError,
)
from keys.model import Mode
from keys.pseudonym import Pseudonymiser

# Also runs with every dependency at its floor (.ci/lowest-versions).
pytestmark = pytest.mark.lowest

NOW = datetime(2020, 3, 11, 8, 0, tzinfo=UTC)
PSEUDONYMISE = Pseudonymiser(b"adapter-tests-pseudonym-secret!!")
REGIONS = [spec.code for spec in REGION_SPECS]
DERIVED_ID_REGIONS = [s.code for s in REGION_SPECS if s.fields.code_id is None]  # type: ignore[attr-defined]
FIELDS = ("holder_id", "colour", "issued_at", "expires_at", "code_id")
# (region, field) for every structured (JSON or CBOR) region and every claim it has
STRUCTURED_CLAIMS = [
    pytest.param(s.code, f, id=f"{s.code}-{f}")
    for s in REGION_SPECS
    for f in FIELDS
    if s.code not in ("230000", "500000") and getattr(s.fields, f) is not None
]
HOLDER = ("110101199003070011", "王伟")


@pytest.fixture(scope="module")
def partners() -> PartnerSimulator:
    return PartnerSimulator.generate()


@pytest.fixture(scope="module")
def keys(partners: PartnerSimulator) -> InMemoryKeys:
    return partners.key_lookup(NOW - timedelta(days=30), NOW + timedelta(days=365))


def issue(issuer: PartnerIssuer, colour: Colour = Colour.GREEN, **overrides: object) -> str:
    kwargs: dict[str, object] = {
        "holder_id": HOLDER[0],
        "holder_name": HOLDER[1],
        "colour": colour,
        "issued_at": NOW,
        "expires_at": NOW + timedelta(hours=24),
        "code_id": "5f3a9c0e12d4b678",
    }
    kwargs.update(overrides)
    return issuer.issue(**kwargs)  # type: ignore[arg-type]


# --- the table of regions ---------------------------------------------------------------------


@pytest.mark.doc("partners.md §5")
def test_all_fourteen_partner_regions_are_declared() -> None:
    assert sorted(REGIONS) == sorted(
        [
            "110000",
            "120000",
            "130000",
            "230000",
            "310000",
            "330000",
            "340000",
            "410000",
            "440000",
            "500000",
            "510000",
            "520000",
            "630000",
            "650000",
        ]
    )
    assert set(ADAPTERS) == set(REGIONS)
    assert all(ADAPTERS[s.code].spec is s for s in REGION_SPECS)


@pytest.mark.doc("partners.md §1.1")
def test_no_prefix_is_a_prefix_of_another() -> None:
    for a in REGION_SPECS:
        for b in REGION_SPECS:
            if a is not b:
                assert not b.prefix.startswith(a.prefix), (a.code, b.code)


def test_spec_prefix_is_the_codec_prefix() -> None:
    for spec in REGION_SPECS:
        assert spec.prefix == spec.codec.prefix  # type: ignore[attr-defined]


@pytest.mark.doc("partners.md §5")
def test_families_modes_and_algorithms_are_mixed() -> None:
    families: dict[str, set[Algorithm]] = {}
    for spec in REGION_SPECS:
        families.setdefault(spec.codec.family, set()).add(spec.signing_alg)  # type: ignore[attr-defined]
    assert families == {
        "compact": {Algorithm.EDDSA, Algorithm.SM2},
        "jws": {Algorithm.EDDSA, Algorithm.ES256},
        "cose": {Algorithm.EDDSA, Algorithm.ES256},
    }
    counts = {f: sum(s.codec.family == f for s in REGION_SPECS) for f in families}  # type: ignore[attr-defined]
    assert all(4 <= n <= 5 for n in counts.values()), counts
    modes = [s.mode for s in REGION_SPECS]
    assert modes.count(Mode.SHOW) == modes.count(Mode.CONVERT) == 7
    assert all(timedelta(hours=24) <= s.max_age <= timedelta(days=7) for s in REGION_SPECS)


# --- detection --------------------------------------------------------------------------------


@pytest.mark.doc("partners.md §1.1")
@pytest.mark.parametrize("region", REGIONS)
def test_detect_finds_the_region_by_prefix(partners: PartnerSimulator, region: str) -> None:
    adapter = detect(issue(partners.issuer(region)))
    assert isinstance(adapter, RegionAdapter)
    assert adapter.region == region


@pytest.mark.doc("partners.md §1.1")
@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("HC1:NCFOXN", id="eu-dcc-prefix"),
        pytest.param("shc:/5676290952432060346029243740", id="smart-health-card"),
        pytest.param("bj1:abc", id="lower-case-prefix"),
        pytest.param("BJ1", id="prefix-without-colon"),
        pytest.param("https://ssm.sh.gov.cn/", id="partial-url-prefix"),
        pytest.param(" BJ1:abc", id="leading-space-not-stripped"),
        pytest.param("\u5317\u4eac:abc", id="chinese-text"),
    ],
)
def test_detect_refuses_unknown_prefixes(text: str) -> None:
    with pytest.raises(RegionUnknownError):
        detect(text)


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("colour", list(Colour), ids=[c.value for c in Colour])
@pytest.mark.parametrize("region", REGIONS)
def test_round_trip(
    partners: PartnerSimulator, keys: InMemoryKeys, region: str, colour: Colour
) -> None:
    issuer = partners.issuer(region)
    code = issue(issuer, colour, expires_at=NOW + timedelta(hours=30))
    verified = ADAPTERS[region].decode(code, keys, PSEUDONYMISE)
    status = verified.status
    assert status.region == region
    assert status.colour is colour
    assert status.issued_at == NOW
    assert status.expires_at == NOW + timedelta(hours=30)
    assert status.holder == PSEUDONYMISE(region, HOLDER[0])
    assert status.kid == issuer.kid == verified.key.kid
    assert verified.spec is issuer.spec
    if issuer.spec.fields.code_id is not None:  # type: ignore[attr-defined]
        assert status.code_id == "5f3a9c0e12d4b678"
    else:
        assert status.code_id.startswith("d-")


@pytest.mark.doc("partners.md §1.4")
@pytest.mark.parametrize("region", REGIONS)
def test_the_raw_id_number_and_the_name_are_never_kept(
    partners: PartnerSimulator, keys: InMemoryKeys, region: str
) -> None:
    status = ADAPTERS[region].decode(issue(partners.issuer(region)), keys, PSEUDONYMISE).status
    text = repr(status)
    assert HOLDER[0] not in text and HOLDER[1] not in text
    assert status.holder.startswith("h1-")


@pytest.mark.doc("partners.md §1.4")
@pytest.mark.parametrize("region", REGIONS)
def test_a_lower_case_x_check_character_gives_the_same_pseudonym(
    partners: PartnerSimulator, keys: InMemoryKeys, region: str
) -> None:
    upper = issue(partners.issuer(region), holder_id="44030519851204123X")
    lower = issue(partners.issuer(region), holder_id="44030519851204123x")
    a = ADAPTERS[region].decode(upper, keys, PSEUDONYMISE).status
    b = ADAPTERS[region].decode(lower, keys, PSEUDONYMISE).status
    assert a.holder == b.holder


@pytest.mark.parametrize("region", DERIVED_ID_REGIONS)
def test_derived_code_ids_are_stable_and_follow_the_claims(
    partners: PartnerSimulator, keys: InMemoryKeys, region: str
) -> None:
    issuer = partners.issuer(region)
    adapter = ADAPTERS[region]
    first = adapter.decode(issue(issuer), keys, PSEUDONYMISE).status.code_id
    again = adapter.decode(issue(issuer), keys, PSEUDONYMISE).status.code_id  # re-signed
    other = adapter.decode(issue(issuer, Colour.RED), keys, PSEUDONYMISE).status.code_id
    assert first == again != other


def test_fake_holders_are_valid_and_deterministic() -> None:
    rng, again = random.Random(42), random.Random(42)
    holders = [fake_holder(rng) for _ in range(200)]
    assert holders == [fake_holder(again) for _ in range(200)]
    for id_number, name in holders:
        assert valid_id_number(id_number, check_digit=True), id_number
        assert 2 <= len(name) <= 3


# --- forgery, key scoping, algorithms ---------------------------------------------------------


@pytest.mark.doc("partners.md §1.5")
@pytest.mark.parametrize("region", REGIONS)
def test_forged_codes_fail_the_signature(
    partners: PartnerSimulator, keys: InMemoryKeys, region: str
) -> None:
    issuer = partners.issuer(region)
    forged = issuer.forge(
        holder_id=HOLDER[0],
        holder_name=HOLDER[1],
        colour=Colour.GREEN,
        issued_at=NOW,
        expires_at=NOW + timedelta(hours=1),
    )
    with pytest.raises(SignatureInvalidError) as info:
        ADAPTERS[region].decode(forged, keys, PSEUDONYMISE)
    assert info.value.metadata["region"] == region


@pytest.mark.doc("partners.md §1.3", "partners.md §1.5")
@pytest.mark.parametrize("region", REGIONS)
def test_a_key_id_is_looked_up_only_within_the_codes_region(
    partners: PartnerSimulator, region: str
) -> None:
    """A code whose kid is registered, but for another region, is signed by an unknown key."""
    issuer = partners.issuer(region)
    others = [i for i in partners.issuers() if i.spec.code != region]
    # Every other region registers a key under this issuer's kid (and its true public key).
    window = (NOW - timedelta(days=1), NOW + timedelta(days=1))
    lookup = InMemoryKeys.of(
        [
            *(replace(o.region_key(*window), kid=issuer.kid) for o in others),
            # ... and another region registers this very key under this very kid
            replace(issuer.region_key(*window), region=others[0].spec.code),
        ]
    )
    with pytest.raises(KeyUnknownError):
        ADAPTERS[region].decode(issue(issuer), lookup, PSEUDONYMISE)


@pytest.mark.parametrize("region", REGIONS)
def test_a_code_signed_by_another_regions_key_does_not_verify(
    partners: PartnerSimulator, keys: InMemoryKeys, region: str
) -> None:
    issuer = partners.issuer(region)
    donor_key = next(
        (
            i.key
            for i in partners.issuers()
            if i.spec.code != region and i.spec.signing_alg is issuer.spec.signing_alg
        ),
        # The only region of its algorithm (SM2): a key of that algorithm registered nowhere.
        PrivateKey.generate(issuer.spec.signing_alg),
    )
    code = issuer.spec.codec.seal(
        issuer.claims(
            holder_id=HOLDER[0],
            holder_name=HOLDER[1],
            colour=Colour.GREEN,
            issued_at=NOW,
            expires_at=NOW + timedelta(hours=1),
        ),
        donor_key,
        issuer.kid,
    )
    with pytest.raises(SignatureInvalidError):
        ADAPTERS[region].decode(code, keys, PSEUDONYMISE)


@pytest.mark.parametrize("region", REGIONS)
def test_a_key_of_another_algorithm_is_refused(partners: PartnerSimulator, region: str) -> None:
    """The region registered a key whose algorithm differs from what the code declares."""
    issuer = partners.issuer(region)
    other_alg = Algorithm.ES256 if issuer.spec.signing_alg is Algorithm.EDDSA else Algorithm.EDDSA
    wrong = replace(
        issuer.region_key(NOW - timedelta(days=1), NOW + timedelta(days=1)),
        public_key=PrivateKey.generate(other_alg).public_key(),
    )
    with pytest.raises(AlgorithmUnsupportedError):
        ADAPTERS[region].decode(issue(issuer), InMemoryKeys.of([wrong]), PSEUDONYMISE)


@pytest.mark.doc("partners.md §1.3", "partners.md §1.5")
@pytest.mark.parametrize(
    ("window", "revoked_at", "error"),
    [
        pytest.param(
            (timedelta(hours=1), timedelta(days=2)), None, KeyNotValidError, id="key-not-yet-valid"
        ),
        pytest.param(
            (-timedelta(days=2), -timedelta(hours=1)), None, KeyNotValidError, id="key-expired"
        ),
        pytest.param(
            (-timedelta(days=2), timedelta(days=2)),
            -timedelta(seconds=1),
            KeyRevokedError,
            id="revoked-before-issue",
        ),
        pytest.param(
            (-timedelta(days=2), timedelta(days=2)),
            timedelta(0),
            KeyRevokedError,
            id="revoked-at-issue",
        ),
    ],
)
@pytest.mark.parametrize("region", ["110000", "120000", "330000"])
def test_the_key_must_be_valid_when_the_code_was_issued(
    partners: PartnerSimulator,
    region: str,
    window: tuple[timedelta, timedelta],
    revoked_at: timedelta | None,
    error: type[Exception],
) -> None:
    issuer = partners.issuer(region)
    key = issuer.region_key(NOW + window[0], NOW + window[1])
    if revoked_at is not None:
        key = replace(key, revoked_at=NOW + revoked_at)
    with pytest.raises(error):
        ADAPTERS[region].decode(issue(issuer), InMemoryKeys.of([key]), PSEUDONYMISE)


def test_a_key_revoked_after_issue_still_verifies(partners: PartnerSimulator) -> None:
    issuer = partners.issuer("510000")
    key = replace(
        issuer.region_key(NOW - timedelta(days=2), NOW + timedelta(days=2)),
        revoked_at=NOW + timedelta(seconds=1),
    )
    assert ADAPTERS["510000"].decode(issue(issuer), InMemoryKeys.of([key]), PSEUDONYMISE)


# --- translation rules ------------------------------------------------------------------------


def _claims(issuer: PartnerIssuer) -> dict[object, object]:
    return issuer.claims(
        holder_id=HOLDER[0],
        holder_name=HOLDER[1],
        colour=Colour.GREEN,
        issued_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        code_id="abcd",
    )


def _without(claims: dict[object, object], path: tuple[object, ...]) -> dict[object, object]:
    node = claims
    for step in path[:-1]:
        node = node[step]  # type: ignore[assignment]
    del node[path[-1]]
    return claims


@pytest.mark.doc("partners.md §1.5")
@pytest.mark.parametrize(("region", "field"), STRUCTURED_CLAIMS)
def test_a_missing_claim_is_malformed_and_named(
    partners: PartnerSimulator, keys: InMemoryKeys, region: str, field: str
) -> None:
    issuer = partners.issuer(region)
    path = getattr(issuer.spec.fields, field)
    code = issuer.seal(_without(_claims(issuer), path))
    with pytest.raises(MalformedError) as info:
        ADAPTERS[region].decode(code, keys, PSEUDONYMISE)
    assert ".".join(map(str, path)) in str(info.value)


def _set(
    claims: dict[object, object], path: tuple[object, ...], value: object
) -> dict[object, object]:
    node = claims
    for step in path[:-1]:
        node = node[step]  # type: ignore[assignment]
    node[path[-1]] = value
    return claims


BAD_VALUES = [
    pytest.param("colour", "Green", id="colour-capitalised"),
    pytest.param("colour", "绿码", id="colour-chinese-with-suffix"),
    pytest.param("colour", True, id="colour-bool"),
    pytest.param("colour", 1.0, id="colour-float"),
    pytest.param("colour", 9, id="colour-out-of-range"),
    pytest.param("colour", None, id="colour-null"),
    pytest.param("holder_id", "11010119900307001", id="id-17-chars"),
    pytest.param("holder_id", "11010119900307001Y", id="id-bad-check-char"),
    pytest.param("holder_id", 110101199003070011, id="id-integer"),
    pytest.param(
        "holder_id",
        "".join(chr(0xFF10 + int(d)) for d in "110101199003070011"),
        id="id-fullwidth-digits",
    ),
    pytest.param("issued_at", "yesterday", id="time-text"),
    pytest.param("issued_at", -1, id="time-negative"),
    pytest.param("issued_at", 10**30, id="time-huge"),
    pytest.param("issued_at", [1], id="time-list"),
    pytest.param("expires_at", 0, id="time-zero"),
    pytest.param("code_id", "", id="code-id-empty"),
    pytest.param("code_id", ["x"], id="code-id-list"),
]


@pytest.mark.doc("partners.md §1.4")
@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
@pytest.mark.parametrize("region", [r for r in REGIONS if r not in ("230000", "500000")])
def test_well_signed_but_wrongly_typed_claims_are_malformed(
    partners: PartnerSimulator, keys: InMemoryKeys, region: str, field: str, value: object
) -> None:
    issuer = partners.issuer(region)
    path = getattr(issuer.spec.fields, field)
    if path is None:  # a derived code id: nothing to spell wrongly
        return
    code = issuer.seal(_set(_claims(issuer), path, value))
    with pytest.raises(MalformedError):
        ADAPTERS[region].decode(code, keys, PSEUDONYMISE)


@pytest.mark.doc("partners.md §1.4")
@pytest.mark.parametrize("region", REGIONS)
def test_a_code_that_expires_before_it_is_issued_is_malformed(
    partners: PartnerSimulator, keys: InMemoryKeys, region: str
) -> None:
    code = issue(partners.issuer(region), expires_at=NOW)
    with pytest.raises(MalformedError, match="expires before"):
        ADAPTERS[region].decode(code, keys, PSEUDONYMISE)


@pytest.mark.doc("partners.md §1.4")
@pytest.mark.parametrize("region", [s.code for s in REGION_SPECS if s.fields.constants])  # type: ignore[attr-defined]
def test_a_wrong_constant_claim_is_malformed(
    partners: PartnerSimulator, keys: InMemoryKeys, region: str
) -> None:
    issuer = partners.issuer(region)
    (path, value), *_ = issuer.spec.fields.constants  # type: ignore[attr-defined]
    wrong = "2" if isinstance(value, str) else value + 1
    claims = _set(_claims(issuer), path, wrong)
    with pytest.raises(MalformedError):
        ADAPTERS[region].decode(issuer.seal(claims), keys, PSEUDONYMISE)


def compact_code(issuer: PartnerIssuer, payload: bytes) -> str:
    """A well-signed compact code around any payload bytes (compressed as the region does)."""
    codec = issuer.spec.codec
    assert isinstance(codec, CompactCodec)
    signed = (
        bytes((1, len(issuer.kid))) + issuer.kid.encode() + compress(codec.compression, payload)
    )
    return codec.prefix + encode_text(codec.text, signed + issuer.key.sign(signed))


@pytest.mark.doc("partners.md §2")
@pytest.mark.parametrize(
    ("region", "field", "text"),
    [
        pytest.param("230000", "ys", "green", id="hlj-colour-word"),
        pytest.param("230000", "kssj", "2020031116000", id="hlj-time-13-digits"),
        pytest.param("230000", "kssj", "20200231160000", id="hlj-time-feb-31"),
        pytest.param("230000", "sfzh", "", id="hlj-empty-id"),
        pytest.param("500000", "zt", "3", id="cq-colour-3"),
        pytest.param("500000", "qs", "01583913600", id="cq-time-leading-zero"),
        pytest.param("500000", "qs", "+1583913600", id="cq-time-signed"),
        pytest.param("500000", "zz", "1584000000.5", id="cq-time-fraction"),
    ],
)
def test_delimited_payloads_are_strict(
    partners: PartnerSimulator, keys: InMemoryKeys, region: str, field: str, text: str
) -> None:
    issuer = partners.issuer(region)
    form = issuer.spec.codec.payload  # type: ignore[attr-defined]
    claims = {k: str(v) for k, v in _claims(issuer).items()}
    claims[field] = text
    code = compact_code(issuer, form.separator.join(claims[f] for f in form.fields).encode())
    with pytest.raises(MalformedError):
        ADAPTERS[region].decode(code, keys, PSEUDONYMISE)


@pytest.mark.doc("partners.md §2")
@pytest.mark.parametrize(
    ("region", "lines"),
    [
        pytest.param(
            "230000", "1|abcd|110101199003070011|王伟|绿|20200311160000", id="hlj-six-fields"
        ),
        pytest.param(
            "230000",
            "1|abcd|110101199003070011|王伟|绿|20200311160000|20200312160000|x",
            id="hlj-eight-fields",
        ),
        pytest.param(
            "500000",
            "abcd;110101199003070011;王伟;0;1583913600;1584000000;",
            id="cq-trailing-separator",
        ),
    ],
)
def test_delimited_payloads_need_the_exact_number_of_fields(
    partners: PartnerSimulator, keys: InMemoryKeys, region: str, lines: str
) -> None:
    code = compact_code(partners.issuer(region), lines.encode())
    with pytest.raises(MalformedError, match="fields"):
        ADAPTERS[region].decode(code, keys, PSEUDONYMISE)
