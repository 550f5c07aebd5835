"""Trust anchors: the partner file, installing it, and replacing anchors out of band."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from trust_support import DAY, T0, Harness, key, scenario

from keys.anchors import AnchorSet, PartnerFile
from keys.crypto import Algorithm, PrivateKey, b64url_encode
from keys.errors import GatewayError
from keys.model import Mode
from keys.partner import AnchorKeys, PartnerSigner

X = PartnerSigner.generate("110000", mode=Mode.CONVERT)


def partner_json() -> dict[str, Any]:
    return json.loads(X.partner_file())


@pytest.mark.doc("trust-registry.md §2")
def test_a_partner_file_round_trips() -> None:
    parsed = PartnerFile.from_bytes(X.partner_file())
    assert parsed.region == X.region
    assert parsed.anchors == X.anchors.anchor_set()
    assert partner_json()["type"] == "trustgw/partner/v1"
    assert len(parsed.anchors.fingerprint()) == 64


def _rsa_jwk() -> dict[str, str]:
    return {"kty": "RSA", "n": b64url_encode(b"\x01" * 256), "e": "AQAB"}


@pytest.mark.doc("trust-registry.md §2")
@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        pytest.param(lambda o: o.pop("threshold"), "MALFORMED", id="no-threshold"),
        pytest.param(lambda o: o.update(threshold=0), "MALFORMED", id="threshold-zero"),
        pytest.param(lambda o: o.update(threshold=4), "MALFORMED", id="threshold-above-n"),
        pytest.param(lambda o: o.update(threshold=True), "MALFORMED", id="threshold-bool"),
        pytest.param(lambda o: o.update(anchors=[]), "MALFORMED", id="no-anchors"),
        pytest.param(
            lambda o: o["anchors"][1].update(kid=o["anchors"][0]["kid"]),
            "MALFORMED",
            id="duplicate-kid",
        ),
        pytest.param(
            lambda o: o["anchors"][1].update(public_key=o["anchors"][0]["public_key"]),
            "MALFORMED",
            id="same-key-twice",
        ),
        pytest.param(
            lambda o: o["anchors"][0]["public_key"].update(d="AAAA"),
            "MALFORMED",
            id="private-key-material",
        ),
        pytest.param(
            lambda o: o["anchors"][0].update(public_key=_rsa_jwk()),
            "ALGORITHM_UNSUPPORTED",
            id="rsa-anchor",
        ),
        pytest.param(lambda o: o.update(mode="both"), "MALFORMED", id="bad-mode"),
        pytest.param(lambda o: o.update(region="1100000"), "MALFORMED", id="bad-region"),
        pytest.param(lambda o: o.update(name="a\nb"), "MALFORMED", id="control-char-in-name"),
        pytest.param(lambda o: o.update(max_age=0), "MALFORMED", id="max-age-zero"),
        pytest.param(lambda o: o.update(type="x"), "MALFORMED", id="wrong-type"),
        pytest.param(lambda o: o.update(extra=1), "MALFORMED", id="unknown-member"),
    ],
)
def test_bad_partner_files_are_refused(mutate, reason: str) -> None:
    obj = partner_json()
    mutate(obj)
    with pytest.raises(GatewayError) as caught:
        PartnerFile.from_bytes(json.dumps(obj).encode())
    assert caught.value.reason == reason


@pytest.mark.parametrize("data", [b"", b"[]", b"{", b"x" * 70_000])
def test_partner_files_that_are_not_json_objects_are_refused(data: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        PartnerFile.from_bytes(data)
    assert caught.value.reason in {"MALFORMED", "OVERSIZED"}


@pytest.mark.doc("trust-registry.md §2")
def test_installing_the_same_file_again_changes_nothing(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        first = await h.trust.install_partner(X.partner_file(), actor="operator:cli", now=T0)
        again = await h.trust.install_partner(X.partner_file(), actor="operator:cli", now=T0)
        assert first.created and not first.duplicate
        assert again.duplicate and again.anchors_generation == 1
        assert h.registry.snapshot.region("110000") == X.region
        _, entries = await h.store.read_audit(0, 10)
        assert [e.action for e in entries] == ["partner.install"]

    scenario(tmp_path / "r.db", body)


@pytest.mark.doc("trust-registry.md §2")
def test_other_anchors_replace_the_installed_ones_only_explicitly(tmp_path: Path) -> None:
    other = PartnerSigner(X.region, AnchorKeys.generate(2, 1, prefix="b"))

    async def body(h: Harness) -> None:
        await h.trust.install_partner(X.partner_file(), actor="operator:cli", now=T0)
        with pytest.raises(GatewayError) as caught:
            await h.trust.install_partner(other.partner_file(), actor="operator:cli", now=T0)
        assert caught.value.reason == "ALREADY_EXISTS"
        result = await h.trust.install_partner(
            other.partner_file(), actor="operator:cli", now=T0, replace_anchors=True
        )
        assert result.anchors_changed and result.anchors_generation == 2
        trust = await h.store.region_trust("110000")
        assert trust.anchors == other.anchors.anchor_set()
        # the replaced anchors sign nothing any more; the new ones do
        with pytest.raises(GatewayError):
            await h.publish(X, X.keyset(1, (key("k1"),), expires=T0 + DAY))
        await h.publish(other, other.keyset(1, (key("k1"),), expires=T0 + DAY))

    scenario(tmp_path / "r.db", body)


@pytest.mark.doc("trust-registry.md §2")
def test_updating_a_partner_keeps_it_disabled(tmp_path: Path) -> None:
    renamed = partner_json()
    renamed["name"] = "北京"

    async def body(h: Harness) -> None:
        await h.trust.install_partner(X.partner_file(), actor="operator:cli", now=T0)
        await h.registry.set_region_enabled("110000", False, actor="operator:cli", now=T0)
        result = await h.trust.install_partner(
            json.dumps(renamed, ensure_ascii=False).encode(), actor="operator:cli", now=T0
        )
        assert result.region_changed and not result.anchors_changed
        region = h.registry.snapshot.region("110000")
        assert region is not None and region.name == "北京" and not region.enabled

    scenario(tmp_path / "r.db", body)


def test_p256_anchors_sign_key_sets(tmp_path: Path) -> None:
    p256 = PartnerSigner.generate("440000", alg=Algorithm.ES256)

    async def body(h: Harness) -> int | None:
        await h.onboard(p256)
        return (await h.publish(p256, p256.keyset(1, (key("k1"),), expires=T0 + DAY))).version

    assert scenario(tmp_path / "r.db", body) == 1


def test_installing_requires_an_actor(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        with pytest.raises(ValueError):
            await h.trust.install_partner(X.partner_file(), actor="cli", now=T0)

    scenario(tmp_path / "r.db", body)


def test_anchor_sets_validate_in_their_constructor() -> None:
    keys = AnchorKeys.generate(2, 2).anchor_set().keys
    with pytest.raises(ValueError):
        AnchorSet(keys, 3)
    with pytest.raises(ValueError):
        AnchorSet((), 1)
    rsa = PrivateKey.generate(Algorithm.PS256).public_key()
    from keys.anchors import Anchor

    with pytest.raises(ValueError):
        AnchorSet((Anchor("r", rsa),), 1)
