"""A code-signing key that could never verify a code of its region is refused when registered.

Pins docs/partners.md §1.3 ("Each region signs with one algorithm ... a key of another algorithm
is refused when it is registered") and docs/trust-registry.md §4 / §11
(``KEY_ALGORITHM_MISMATCH``), for ``trustgw keys add``, key sets over ``PartnerService`` and
the trust registry itself. Partner files carry anchors, which never sign codes: either algorithm
is accepted for any region (trust-registry.md §2).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from cli_support import one_line_error, trustgw
from registry_grpc_support import NOW, SHOW, client, error_reason, make_pki, partner_for
from support.aio import run, serving
from trust_support import T0, Harness, scenario

from adapters.regions import REGION_ALGORITHMS, REGION_SPECS
from gateway.api.v1 import registry_pb2 as rpb
from keys.crypto import Algorithm, PrivateKey
from keys.errors import KeyAlgorithmMismatchError
from keys.model import check_key_algorithm
from keys.partner import PartnerSigner, signing_key
from keys.trustregistry import TrustRegistry

OTHER_ALG = {
    Algorithm.EDDSA: Algorithm.ES256,
    Algorithm.ES256: Algorithm.EDDSA,
    Algorithm.SM2: Algorithm.ES256,
}
REGIONS = [pytest.param(spec, id=f"{spec.code}-{spec.signing_alg}") for spec in REGION_SPECS]
DAY = timedelta(days=1)


def test_every_region_says_what_its_codes_are_signed_with() -> None:
    assert set(REGION_ALGORITHMS) == {spec.code for spec in REGION_SPECS}
    for spec in REGION_SPECS:
        assert REGION_ALGORITHMS[spec.code] == frozenset({spec.signing_alg})


@pytest.mark.parametrize("spec", REGIONS)
def test_a_key_of_the_other_algorithm_is_refused_for_every_region(spec) -> None:
    check_key_algorithm(spec.code, "k", spec.signing_alg, REGION_ALGORITHMS)
    wrong = OTHER_ALG[spec.signing_alg]
    with pytest.raises(KeyAlgorithmMismatchError) as caught:
        check_key_algorithm(spec.code, "k", wrong, REGION_ALGORITHMS)
    assert caught.value.reason == "KEY_ALGORITHM_MISMATCH"
    assert caught.value.grpc_status == "INVALID_ARGUMENT"
    assert str(spec.signing_alg) in caught.value.message and str(wrong) in caught.value.message


def test_a_region_without_a_code_format_is_not_checked() -> None:
    check_key_algorithm("999999", "k", Algorithm.ES256, REGION_ALGORITHMS)
    check_key_algorithm("110000", "k", Algorithm.ES256, None)


def _key_file(tmp_path: Path, alg: Algorithm) -> str:
    path = tmp_path / f"{alg}.jwk"
    path.write_text(json.dumps(PrivateKey.generate(alg).public_key().to_jwk()))
    return str(path)


@pytest.mark.parametrize(
    ("region", "alg", "expected"),
    [
        pytest.param("120000", Algorithm.EDDSA, "KEY_ALGORITHM_MISMATCH", id="ed25519-for-tianjin"),
        pytest.param("110000", Algorithm.ES256, "KEY_ALGORITHM_MISMATCH", id="p256-for-beijing"),
        pytest.param("120000", Algorithm.ES256, None, id="p256-for-tianjin"),
        pytest.param("110000", Algorithm.EDDSA, None, id="ed25519-for-beijing"),
    ],
)
def test_keys_add_refuses_a_key_its_region_never_signs_with(
    region: str,
    alg: Algorithm,
    expected: str | None,
    own_data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = str(own_data_dir)
    ran = trustgw(capsys, "keys", "add", "--data-dir", data, "--region", region,
                  "--public-key", _key_file(tmp_path, alg), "--kid", "k1")  # fmt: skip
    listed = trustgw(capsys, "keys", "list", "--data-dir", data, "--json").json()
    stored = [row for row in listed if row["owner"] == region]
    if expected is None:
        assert ran.status == 0, ran.err
        assert [row["alg"] for row in stored] == [str(alg)]
        return
    assert one_line_error(ran) == expected and ran.status == 1
    assert "could never verify" in ran.err
    assert stored == []


def _mismatched_keyset(partner: PartnerSigner, version: int = 1) -> bytes:
    wrong = OTHER_ALG[next(s.signing_alg for s in REGION_SPECS if s.code == partner.region.code)]
    key, _ = signing_key("k-wrong", T0 - 30 * DAY, T0 + 300 * DAY, alg=wrong)
    return partner.keyset(version, (key,), expires=T0 + 30 * DAY)


def test_the_trust_registry_refuses_a_key_set_with_a_mismatched_key(tmp_path: Path) -> None:
    partner = PartnerSigner.generate("110000")

    async def body(h: Harness) -> str:
        trust = TrustRegistry(h.store, h.pseudonymiser, h.registry, REGION_ALGORITHMS)
        await trust.install_partner(partner.partner_file(), actor="operator:test", now=T0)
        before = await h.store.read_registry()
        with pytest.raises(KeyAlgorithmMismatchError) as caught:
            await trust.publish_keyset(_mismatched_keyset(partner), caller_region="110000", now=T0)
        assert await h.store.read_registry() == before
        return caught.value.reason

    assert scenario(tmp_path / "r.db", body) == "KEY_ALGORITHM_MISMATCH"


def test_partner_files_take_anchors_of_either_algorithm(tmp_path: Path) -> None:
    """Anchors sign key sets, never codes: P-256 anchors for an Ed25519 region are fine."""
    partner = PartnerSigner.generate("110000", alg=Algorithm.ES256)

    async def body(h: Harness) -> bool:
        trust = TrustRegistry(h.store, h.pseudonymiser, h.registry, REGION_ALGORITHMS)
        result = await trust.install_partner(partner.partner_file(), actor="operator:t", now=T0)
        return result.created

    assert scenario(tmp_path / "r.db", body) is True


@pytest.mark.integration
def test_partner_service_refuses_a_mismatched_key_as_invalid_argument(
    prepared_dir, tmp_path: Path
) -> None:
    """The running gateway passes the adapters' algorithms to its trust registry."""
    pki = make_pki(tmp_path / "pki")
    data_dir = prepared_dir(NOW)
    partner = partner_for(SHOW)

    async def go() -> tuple[grpc.StatusCode, str]:
        async with serving(data_dir, pki["server"]) as (gateway, port):
            await gateway.trust.install_partner(
                partner.partner_file(), actor="operator:test", now=NOW
            )
            wrong = OTHER_ALG[SHOW.signing_alg]
            key, _ = signing_key("k-wrong", NOW - DAY, NOW + 300 * DAY, alg=wrong)
            envelope = partner.keyset(1, (key,), expires=NOW + 30 * DAY)
            stub = client(port, pki["partner"])
            try:
                await stub.partner.PublishKeySet(
                    rpb.SubmissionRequest(submission=envelope), timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                return error_reason(exc)
            finally:
                await stub.close()
            raise AssertionError("accepted")

    assert run(go()) == (grpc.StatusCode.INVALID_ARGUMENT, "KEY_ALGORITHM_MISMATCH")
