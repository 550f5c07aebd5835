"""Hostile input to every region's adapter: only ForeignDataError subclasses ever come out.

The adapter's entry point would turn a stray exception into MalformedError anyway; these tests
also call the codecs and field conventions directly, so that a codec relying on that safety net
(a ``KeyError`` or ``IndexError`` escaping) is caught here rather than hidden.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import ADAPTERS, REGION_SPECS, detect
from adapters.base import MAX_CODE_CHARS, Colour
from adapters.codecs.encoding import b45encode, deflate
from adapters.simulator import InMemoryKeys, PartnerSimulator, fake_holder
from keys.crypto import b64url_encode
from keys.errors import ForeignDataError, MalformedError, OversizedError, RegionUnknownError
from keys.pseudonym import Pseudonymiser

# Also runs with every dependency at its floor (.ci/lowest-versions).
pytestmark = pytest.mark.lowest

NOW = datetime(2020, 3, 11, 8, tzinfo=UTC)
PSEUDONYMISE = Pseudonymiser(b"malformed-tests-pseudonym-secret")
REGIONS = [spec.code for spec in REGION_SPECS]
SIMULATOR = PartnerSimulator.generate()
KEYS = SIMULATOR.key_lookup(NOW - timedelta(days=30), NOW + timedelta(days=30))


def valid_code(region: str, colour: Colour = Colour.GREEN, seed: int = 0) -> str:
    holder_id, name = fake_holder(random.Random(seed))
    return SIMULATOR.issuer(region).issue(
        holder_id=holder_id,
        holder_name=name,
        colour=colour,
        issued_at=NOW,
        expires_at=NOW + timedelta(hours=12),
        code_id="c0ffee",
    )


VALID = {region: valid_code(region) for region in REGIONS}


def only_foreign_data_errors(region: str, text: str) -> ForeignDataError | None:
    """Run the adapter and its codec directly; return the error, fail on anything else."""
    spec = ADAPTERS[region].spec
    try:
        spec.codec.open(text)
    except ForeignDataError:
        pass
    try:
        ADAPTERS[region].decode(text, KEYS, PSEUDONYMISE)
    except ForeignDataError as exc:
        return exc
    return None


# --- named hostile inputs, every region -------------------------------------------------------


def _flip(text: str, index: int) -> str:
    ch = text[index]
    return text[:index] + ("A" if ch != "A" else "B") + text[index + 1 :]


MUTATIONS = [
    pytest.param(lambda p, c: p, MalformedError, id="prefix-only"),
    pytest.param(lambda p, c: c[: len(c) // 2], ForeignDataError, id="truncated-half"),
    pytest.param(lambda p, c: c[:-1], ForeignDataError, id="truncated-one-char"),
    pytest.param(lambda p, c: c + "A", ForeignDataError, id="one-char-appended"),
    pytest.param(lambda p, c: c + c[len(p) :], ForeignDataError, id="body-doubled"),
    pytest.param(
        lambda p, c: p + "!!!!" + c[len(p) + 4 :], MalformedError, id="invalid-characters"
    ),
    pytest.param(
        lambda p, c: p + "\u7eff" + c[len(p) + 1 :], MalformedError, id="chinese-character"
    ),
    pytest.param(lambda p, c: p + "\x00" * 10, MalformedError, id="nul-bytes"),
    pytest.param(lambda p, c: p + "garbage garbage", MalformedError, id="garbage"),
    pytest.param(
        lambda p, c: c + "A" * (MAX_CODE_CHARS + 1 - len(c)), OversizedError, id="oversized-by-one"
    ),
    pytest.param(lambda p, c: p + "A" * 1_000_000, OversizedError, id="oversized-1mb"),
    pytest.param(lambda p, c: _flip(c, len(p) + 5), ForeignDataError, id="early-byte-flipped"),
    pytest.param(lambda p, c: _flip(c, len(c) // 2), ForeignDataError, id="middle-byte-flipped"),
    pytest.param(lambda p, c: _flip(c, len(c) - 2), ForeignDataError, id="late-byte-flipped"),
    # 1 MB of zeros in about 1 KB: a bomb that still fits the 4096-character limit
    pytest.param(
        lambda p, c: p + b45encode(deflate(bytes(1_000_000), raw=False)),
        MalformedError,
        id="zlib-bomb-base45",
    ),
    pytest.param(
        lambda p, c: p + b64url_encode(deflate(bytes(1_000_000), raw=False)),
        MalformedError,
        id="zlib-bomb-base64url",
    ),
    pytest.param(lambda p, c: p + b45encode(b"[" * 2000), MalformedError, id="deep-json-base45"),
    pytest.param(
        lambda p, c: p + b45encode(b"\x81" * 2000 + b"\x01"), MalformedError, id="deep-cbor-base45"
    ),
    pytest.param(
        lambda p, c: p + b64url_encode(b'{"alg":"none"}') + ".e30.",
        MalformedError,
        id="unsigned-jws-alg-none",
    ),
    pytest.param(lambda p, c: c.lower(), ForeignDataError, id="lower-cased"),
    pytest.param(lambda p, c: c.swapcase(), ForeignDataError, id="swap-cased"),
]


@pytest.mark.doc("partners.md §1.5")
@pytest.mark.parametrize(("mutate", "error"), MUTATIONS)
@pytest.mark.parametrize("region", REGIONS)
def test_hostile_inputs_raise_foreign_data_errors(
    region: str, mutate: Any, error: type[Exception]
) -> None:
    prefix = ADAPTERS[region].spec.prefix
    text = mutate(prefix, VALID[region])
    if text == VALID[region]:
        pytest.skip("the mutation left the code unchanged")
    exc = only_foreign_data_errors(region, text)
    if exc is None:
        pytest.fail(f"a mutated code was accepted: {text[:80]}")
    # An oversized-in-disguise input may be caught as malformed first; the family is what counts.
    assert isinstance(exc, error) or (
        error is MalformedError and isinstance(exc, ForeignDataError)
    ), exc
    if len(text) <= MAX_CODE_CHARS:  # longer codes are refused before any region code runs
        assert exc.metadata.get("region") == region


@pytest.mark.doc("partners.md §3")
@pytest.mark.parametrize("region", REGIONS)
def test_unsigned_alg_none_jws_is_refused_as_an_algorithm(region: str) -> None:
    spec = ADAPTERS[region].spec
    if spec.codec.family != "jws":  # type: ignore[attr-defined]
        return
    body = b64url_encode(b'{"alg":"none","kid":"x"}') + "." + b64url_encode(b"{}") + "."
    from keys.errors import AlgorithmUnsupportedError

    with pytest.raises(AlgorithmUnsupportedError):
        ADAPTERS[region].decode(spec.prefix + body, KEYS, PSEUDONYMISE)


# --- property tests ---------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(region=st.sampled_from(REGIONS), body=st.text(max_size=400))
def test_arbitrary_text_after_a_prefix(region: str, body: str) -> None:
    assert only_foreign_data_errors(region, ADAPTERS[region].spec.prefix + body) is not None


@PROPERTY_SETTINGS
@given(text=st.text(max_size=200))
def test_arbitrary_text_is_detected_or_refused(text: str) -> None:
    try:
        adapter = detect(text)
    except RegionUnknownError:
        return
    assert adapter.decode is not None
    assert only_foreign_data_errors(adapter.region, text) is not None


@st.composite
def mutated_codes(draw: st.DrawFn) -> tuple[str, str]:
    """A valid code of some region with a few characters replaced, inserted or deleted."""
    region = draw(st.sampled_from(REGIONS))
    code = list(VALID[region])
    prefix_len = len(ADAPTERS[region].spec.prefix)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        at = draw(st.integers(prefix_len, max(prefix_len, len(code) - 1)))
        if op == "delete" and len(code) > prefix_len:
            del code[at]
        else:
            ch = draw(st.characters(codec="utf-8"))
            if op == "insert":
                code.insert(at, ch)
            elif at < len(code):
                code[at] = ch
    return region, "".join(code)


@PROPERTY_SETTINGS
@given(mutated_codes())
def test_random_mutations_of_valid_codes(case: tuple[str, str]) -> None:
    region, text = case
    if text == VALID[region]:
        return
    assert only_foreign_data_errors(region, text) is not None


@pytest.mark.doc("partners.md §1.5")
@PROPERTY_SETTINGS
@given(region=st.sampled_from(REGIONS), data=st.binary(max_size=600))
def test_arbitrary_signed_payloads_reach_the_claims_parser_safely(region: str, data: bytes) -> None:
    """Bytes past the signature check: the claims parser and the field convention must cope."""
    spec = ADAPTERS[region].spec
    try:
        claims = spec.codec.claims(data)
        spec.fields.translate(claims, region, "k", PSEUDONYMISE)
    except ForeignDataError:
        pass


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers(-70600, 10), children, max_size=5)
    ),
    max_leaves=20,
)


@PROPERTY_SETTINGS
@given(
    region=st.sampled_from(REGIONS),
    claims=st.dictionaries(st.text(max_size=8) | st.integers(-70600, 10), _json_values, max_size=8),
)
def test_arbitrary_claims_are_translated_or_refused(region: str, claims: dict[Any, Any]) -> None:
    try:
        ADAPTERS[region].spec.fields.translate(claims, region, "k", PSEUDONYMISE)
    except ForeignDataError:
        pass


@pytest.mark.doc("partners.md §1.4")
@PROPERTY_SETTINGS
@given(
    region=st.sampled_from(REGIONS),
    colour=st.sampled_from(list(Colour)),
    issued=st.integers(946_684_800, 7_000_000_000),
    ttl=st.integers(1, 10**8),
    seed=st.integers(0, 2**32),
)
def test_any_valid_status_round_trips(
    region: str, colour: Colour, issued: int, ttl: int, seed: int
) -> None:
    holder_id, name = fake_holder(random.Random(seed))
    issued_at = datetime.fromtimestamp(issued, UTC)
    issuer = SIMULATOR.issuer(region)
    code = issuer.issue(
        holder_id=holder_id,
        holder_name=name,
        colour=colour,
        issued_at=issued_at,
        expires_at=issued_at + timedelta(seconds=ttl),
    )
    keys = InMemoryKeys.of(
        [issuer.region_key(issued_at - timedelta(days=1), issued_at + timedelta(days=1))]
    )
    status = ADAPTERS[region].decode(code, keys, PSEUDONYMISE).status
    assert (status.colour, status.issued_at, status.expires_at) == (
        colour,
        issued_at,
        issued_at + timedelta(seconds=ttl),
    )
    assert status.holder == PSEUDONYMISE(region, holder_id)
